"""The sandbox worker ("zygote"): runs inside the jail, never runs user code itself.

Started as `python -I -S -B zygote.py CONFIG_JSON` by the server, inside a bubblewrap
jail (or, in the explicit weaker mode, directly). It imports the allowed packages once
and builds the seccomp filter once, then serves requests on fd `request_fd` and answers
on fd `response_fd`, both framed as a 4-byte big-endian length + JSON. For each batch it
runs a child (child.py) that confines itself and runs the grader. Children are forked
by the fork server (forker.py), a copy of this process made before the first request:
the zygote holds every batch it served, so a child forked from it could read them.

The zygote accepts the child's result frames only in order and with the batch's nonce,
enforces the per-sample wall-clock deadline from outside (SIGKILL), and re-runs the
sample a child died on alone, so one bad sample cannot take the batch's scores with it.
After answering it empties the worker's /tmp. Standard library (and pyseccomp) only:
nothing of the grader service is importable here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import marshal
import math
import os
import resource
import select
import signal
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # -I leaves the script's dir out

from child import (  # noqa: E402
    CONFINED_INDEX,
    END_INDEX,
    FRAME,
    JOB,
    MAX_ABS_SCORE,
    MODE_GRADE,
    MODES,
    OK,
    PR_SET_DUMPABLE,
    build_seccomp_filter,
    cap_text,
    export_bpf,
    read_exact,
)
from forker import Forker  # noqa: E402
from tool_schema import TOOL_FILENAME  # noqa: E402

KIND_NAMES = {1: "exception", 2: "timeout", 3: "invalid_score", 4: "resource_limit", 5: "crashed"}


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def send(fd: int, message: dict) -> None:
    body = json.dumps(message, allow_nan=False).encode()
    write_all(fd, struct.pack("!I", len(body)) + body)


class Zygote:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.limits = config["limits"]
        self.code_cache: dict[str, object] = {}
        self.libc = ctypes.CDLL(config["libs"].get("c") or None, use_errno=True)
        self.kills: dict[str, int] = {}
        self.damaged = ""
        self.seccomp_bpf = b""
        self.forker: Forker | None = None
        self.to_reap: list[int] = []
        self.base_data = 0
        self.base_as = 0
        self.last_heartbeat = 0.0
        self.mode, self.what = MODE_GRADE, "grader"
        """The batch's mode, and what its messages call the user's code."""
        self.timeout = float(self.limits["timeout_seconds"])
        """The batch's wall-clock limit per sample, in seconds."""

    # -- start-up --------------------------------------------------------------------

    def start(self) -> dict:
        self.libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem, no ptrace by peers
        # Python's only handler: as the jail's init with no handler left, the kernel drops every
        # signal sent from inside the jail (a second line behind seccomp's kill rules).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"  # one thread: a grading child may not create many
        sys.path[:0] = self.config["site"]
        libs = self.config["libs"]
        real_find = ctypes.util.find_library
        # pyseccomp looks its library up with ldconfig, which the jail does not have.
        ctypes.util.find_library = lambda name: libs.get(name) or real_find(name)
        try:
            import pyseccomp
        finally:
            ctypes.util.find_library = real_find
        self.seccomp_bpf = export_bpf(build_seccomp_filter(pyseccomp))
        preloaded, failed = [], {}
        for module in self.config["preload"]:
            try:
                __import__(module)
                preloaded.append(module)
            except Exception as exc:  # a missing optional package must not stop the sandbox
                failed[module] = f"{type(exc).__name__}: {exc}"
        self.base_data = self.probe_usage(resource.RLIMIT_DATA)
        self.base_as = self.probe_usage(resource.RLIMIT_AS)
        return {
            "ready": True,
            "python": sys.version.split()[0],
            "preloaded": preloaded,
            "failed": failed,
            "uid": os.getuid(),
            "base_data_bytes": self.base_data,
            "base_as_bytes": self.base_as,
        }

    def wipe_workdir(self) -> bool:
        """Empty the grader's writable directory after a batch; False if something stayed."""
        import shutil
        import stat

        def unlock(function, path, _exc_info) -> None:
            os.chmod(os.path.dirname(path), stat.S_IRWXU)  # the grader may have chmod-ed a dir to 000
            function(path)

        root = self.config["workdir"]
        try:
            for entry in os.scandir(root):
                if entry.is_dir(follow_symlinks=False):
                    os.chmod(entry.path, stat.S_IRWXU)
                    shutil.rmtree(entry.path, onerror=unlock)
                else:
                    os.unlink(entry.path)
            return not os.listdir(root)
        except (OSError, RecursionError):
            return False

    def probe_usage(self, which: int) -> int:
        """Bytes this process already counts against rlimit `which` (no /proc in the jail).

        A forked probe lowers the soft limit step by step (binary search, 1 MiB steps)
        and tries to map one private page: the smallest limit that still allows it is
        the current usage. Measured once; a child's limit is this plus the grader's share.
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                import mmap

                prot = mmap.PROT_READ | mmap.PROT_WRITE
                low, high = 0, 1 << 45
                while high - low > 1 << 20:
                    mid = (low + high) // 2
                    ok = False
                    try:
                        resource.setrlimit(which, (mid, resource.RLIM_INFINITY))
                        page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=prot)
                        page.close()
                        ok = True
                    except (OSError, MemoryError, ValueError):
                        pass
                    resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
                    low, high = (low, mid) if ok else (mid, high)
                os.write(w, struct.pack("!Q", high))
            finally:
                os._exit(0)
        os.close(w)
        data = read_exact(r, 8)
        os.close(r)
        os.waitpid(pid, 0)
        return struct.unpack("!Q", data)[0]

    # -- request loop ----------------------------------------------------------------

    def serve(self) -> None:
        """Request: a JSON header {"id", "source", "count"} frame, then the pairs (a JSON list) as raw bytes.

        The answer (results, then "clean" once /tmp is empty) echoes the request's "id": the
        server checks it, so an answer can never be taken for another request's.

        Python tools add "mode" ("call" or "describe"; absent: "grade") and may lower the
        wall-clock limit with "timeout_seconds"; their one entry is [name, arguments].

        The zygote never parses the pairs (model output): the grading child does, under its
        limits. A spare child is forked ahead of each batch, so a request does not wait for
        fork (tens of milliseconds for a process holding numpy, scipy and sympy). The fork
        server is started before the first request, so it never holds one.
        """
        rfd, wfd = self.config["request_fd"], self.config["response_fd"]
        self.response_fd = wfd
        send(wfd, self.start())
        self.forker = Forker(self, (rfd, wfd))
        self.spawn_spare()
        while True:
            try:
                header = json.loads(read_exact(rfd, struct.unpack("!I", read_exact(rfd, 4))[0]))
                body = read_exact(rfd, struct.unpack("!I", read_exact(rfd, 4))[0])
            except EOFError:
                self.shutdown()
                return
            self.kills = {}
            request_id = header.get("id") if type(header.get("id")) is int else None
            mode = MODES.get(header.get("mode", "grade"), MODE_GRADE)
            timeout = float(self.limits["timeout_seconds"])
            if isinstance(header.get("timeout_seconds"), (int, float)) and header["timeout_seconds"] > 0:
                timeout = min(timeout, float(header["timeout_seconds"]))
            results = self.grade(header["source"], body, int(header["count"]), mode, timeout)
            answer = {"id": request_id, "results": results, "kills": self.kills}
            if self.damaged:
                answer["damaged"] = self.damaged  # the server replaces this worker and retries elsewhere
            send(wfd, answer)
            # The answer first; reaping, the next spare and the clean-up only delay the next batch.
            self.reap()
            self.spawn_spare()
            send(wfd, {"id": request_id, "clean": self.wipe_workdir()})

    def spawn_spare(self) -> None:
        """Have the child of the next batch forked now; it waits for its job on a pipe."""
        self.forker.request()

    def shutdown(self) -> None:
        """The server closed the pipe: reap every child, then stop the fork server (which
        kills and reaps the spare), so the jail collapses in order and nothing is left to
        the host's init."""
        self.reap()
        self.forker.close()

    def reap(self) -> None:
        """Reap the children killed in the last batch (the fork server is their parent)."""
        for pid in self.to_reap:
            self.forker.wait(pid)
        self.to_reap.clear()

    def heartbeat(self) -> None:
        """Tell the server this batch makes progress (its own watchdog kills a stuck jail)."""
        now = time.monotonic()
        if now - self.last_heartbeat >= 1.0:
            self.last_heartbeat = now
            send(self.response_fd, {"heartbeat": True})

    def compile(self, source: str, filename: str = "<grader>") -> bytes:
        """The grader's (or tools') code object, marshalled for the child; compiled once per source."""
        key = filename + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        code = self.code_cache.get(key)
        if code is None:
            code = marshal.dumps(compile(source, filename, "exec", dont_inherit=True))
            if len(self.code_cache) >= 32:
                self.code_cache.pop(next(iter(self.code_cache)))
            self.code_cache[key] = code
        return code

    def grade(self, source: str, body: bytes, count: int, mode: int = MODE_GRADE, timeout: float = 0.0) -> list:
        what = "grader" if mode == MODE_GRADE else "tool"
        try:
            code = self.compile(source, "<grader>" if mode == MODE_GRADE else TOOL_FILENAME)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            message = cap_text(f"{what} source does not compile: {type(exc).__name__}: {exc}", 4096)
            return [["exception", None, message]] * count
        self.mode, self.what = mode, what
        self.timeout = timeout or float(self.limits["timeout_seconds"])
        results: list = [None] * count
        pending = list(range(count))
        while pending:
            got, death = self.run_child(code, body, pending)
            for index, outcome in got.items():
                results[index] = outcome
            if death is None:
                break
            if self.damaged:  # no child of this worker can be trusted to run: stop here
                for index in pending:
                    results[index] = results[index] or ["crashed", None, self.damaged]
                break
            remaining = [i for i in pending if i not in got]
            culprit = remaining[0]
            if len(pending) > 1:
                # The first sample without a result is the suspect, but it shared the process
                # (and results still buffered in the child were lost): run it alone to be sure.
                got_alone, death_alone = self.run_child(code, body, [culprit])
                death = got_alone.get(culprit) or death_alone
            results[culprit] = death
            pending = remaining[1:]
        return results

    # -- one child per batch -----------------------------------------------------------

    def run_child(self, code: bytes, body: bytes, indices: list) -> tuple[dict, list | None]:
        """Run `indices` in one child; return (outcomes got, outcome of its death or None)."""
        nonce = os.urandom(16)
        self.reap()  # a re-run: the killed child must not count against the new one's limits
        pid, job_w, r, pidfd = self.forker.child()
        self.heartbeat()
        job = JOB.pack(nonce, len(indices), len(code), len(body), self.mode)
        job += struct.pack(f"!{len(indices)}I", *indices)
        try:
            write_all(job_w, job + code)
            write_all(job_w, body)
        except OSError:
            pass  # the child is gone; its death is read below
        os.close(job_w)
        got: dict = {}
        death = None
        buf = bytearray()
        position = 0
        timeout = self.timeout
        deadline = time.monotonic() + timeout
        max_frame = FRAME.size + self.limits["max_message_bytes"]
        finished = False
        confined = False
        poller = select.poll()
        poller.register(r, select.POLLIN | select.POLLHUP)
        while not finished:
            left = deadline - time.monotonic()
            if left <= 0:
                death = ["timeout", None, f"{self.what} ran longer than the {round(timeout, 2):g} s wall-clock limit"]
                self.count_kill("timeout")
                break
            if not poller.poll(left * 1000):
                continue
            data = os.read(r, 1 << 16)
            if not data:
                break  # the child exited (or died) before reporting everything
            buf += data
            while len(buf) >= FRAME.size:
                frame_nonce, index, kind, score, length = FRAME.unpack_from(buf)
                if frame_nonce != nonce or length > self.limits["max_message_bytes"]:
                    death = ["crashed", None, "the grader wrote into the sandbox's result channel"]
                    self.count_kill("tampered")
                    finished = True
                    break
                if len(buf) < FRAME.size + length:
                    break
                message = bytes(buf[FRAME.size : FRAME.size + length]).decode("utf-8", "replace")
                del buf[: FRAME.size + length]
                if not confined:  # the child's own first frame, written before any user code ran
                    if index != CONFINED_INDEX or kind != OK or length:
                        death = ["crashed", None, "the grader wrote into the sandbox's result channel"]
                        self.count_kill("tampered")
                        finished = True
                        break
                    confined = True
                    continue
                if index == END_INDEX and position == len(indices):
                    finished = True
                    break
                outcome = self.check_frame(index, kind, score, message, indices, position)
                if outcome is None:
                    death = ["crashed", None, "the grader wrote into the sandbox's result channel"]
                    self.count_kill("tampered")
                    finished = True
                    break
                got[index] = outcome
                position += 1
                deadline = time.monotonic() + timeout
                self.heartbeat()
            if len(buf) > max_frame:
                death = ["crashed", None, "the grader wrote into the sandbox's result channel"]
                self.count_kill("tampered")
                break
        os.close(r)
        if death is None and not finished:
            # Its result pipe closed: it exited (its status says why), or it closed the pipe
            # and runs on, which the deadline ends.
            if self.exited(pidfd, deadline):
                os.close(pidfd)
                status, cpu = self.forker.wait(pid)
                death = self.classify_death(status, cpu, len(indices) - position)
                if not confined:
                    # It ended before running any user code: this worker's state is broken
                    # (e.g. its limits were lowered from outside), not the grader at fault.
                    self.damaged = f"a grading process ended before confining itself: {death[2]}"
                return got, death
            death = ["timeout", None, f"{self.what} ran longer than the {round(timeout, 2):g} s wall-clock limit"]
            self.count_kill("timeout")
        # Done, or killed by us: by pidfd, which names this process whatever its group is
        # (graded code cannot leave its group, but a kill must not depend on that). The
        # fork server reaps it after the answer is sent, so the pid is not reused before.
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except OSError:
            pass
        os.close(pidfd)
        self.to_reap.append(pid)
        if death is None and position < len(indices):
            death = ["crashed", None, "grader stopped without a result"]
        return got, death

    def exited(self, pidfd: int, deadline: float) -> bool:
        """Whether the process of `pidfd` exits before `deadline` (a pidfd polls readable then)."""
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        while (left := deadline - time.monotonic()) > 0:
            if poller.poll(left * 1000):
                return True
        return False

    def check_frame(self, index: int, kind: int, score: float, message: str, indices: list, position: int):
        if position >= len(indices) or index != indices[position]:
            return None
        if kind == OK:
            if not math.isfinite(score) or abs(score) > MAX_ABS_SCORE:
                return None
            return [None, score, message]  # a tool's result; empty for a grade
        if kind not in KIND_NAMES:
            return None
        return [KIND_NAMES[kind], None, message]

    def classify_death(self, status: int, cpu: float, left: int) -> list:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= self.limits["cpu_seconds"]):
                self.count_kill("cpu")
                return ["timeout", None, f"{self.what} used more than {self.limits['cpu_seconds']:g} s of CPU"]
            if sig == signal.SIGXFSZ:
                self.count_kill("file_size")
                return ["resource_limit", None, f"{self.what} wrote a file larger than the sandbox's file size limit"]
            self.count_kill("signal")
            return ["crashed", None, f"{self.what} process killed by {name}"]
        code = os.WEXITSTATUS(status)
        return ["crashed", None, f"{self.what} process exited with status {code} before returning a result"]

    def count_kill(self, reason: str) -> None:
        self.kills[reason] = self.kills.get(reason, 0) + 1


def main() -> None:
    config = json.loads(sys.argv[1])
    Zygote(config).serve()


if __name__ == "__main__":
    main()
