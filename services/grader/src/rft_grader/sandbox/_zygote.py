"""The sandbox worker ("zygote"): runs inside the jail, never runs user code itself.

Started as `python -I -S -B _zygote.py CONFIG_JSON` by the server, inside a bubblewrap
jail (or, in the explicit weaker mode, directly). It imports the allowed packages once,
then serves requests on fd `request_fd` and answers on fd `response_fd`, both framed as
a 4-byte big-endian length + JSON. For each batch it forks a child that applies rlimits,
drops privileges (weaker mode), loads a seccomp filter, and only then executes the
grader's module and calls `grade(sample, item)` per pair.

The child reports one binary frame per sample on a private pipe: a per-batch random
nonce, the sample index, an outcome code, the score as a double and a capped message.
Its stdout / stderr are /dev/null at the fd level; Python-level prints go to a capped
per-sample buffer. The zygote accepts frames only in order and with the right nonce,
enforces the per-sample wall-clock deadline from outside (SIGKILL), and re-runs the
sample a child died on alone, so one bad sample cannot take the batch's scores with it.

Only the standard library (and pyseccomp, bound next to this file) is available here:
this file must not import anything of the grader service.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import hashlib
import json
import math
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

OK, EXCEPTION, TIMEOUT, INVALID_SCORE, RESOURCE_LIMIT, CRASHED = range(6)
KIND_NAMES = {EXCEPTION: "exception", TIMEOUT: "timeout", INVALID_SCORE: "invalid_score"}
KIND_NAMES.update({RESOURCE_LIMIT: "resource_limit", CRASHED: "crashed"})
MAX_ABS_SCORE = 1e300
FRAME = struct.Struct("!16sIBdI")  # nonce, index, kind, score, message length
END_INDEX = 0xFFFFFFFF
PR_SET_DUMPABLE = 4
RESOURCE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT}
CLONE_THREAD = 0x00010000
CLONE_NAMESPACES = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080]
# Denied with EPERM: no new programs or processes, no network, no looking into or
# changing other processes, no kernel attack surface a grader has no use for.
DENIED_SYSCALLS = """execve execveat fork vfork ptrace process_vm_readv process_vm_writev process_madvise
    mount umount2 pivot_root chroot unshare setns fsopen fsmount fsconfig fspick move_mount open_tree mount_setattr
    bpf io_uring_setup io_uring_enter io_uring_register keyctl add_key request_key perf_event_open userfaultfd
    kexec_load kexec_file_load init_module finit_module delete_module socket socketpair acct swapon swapoff reboot
    sethostname setdomainname settimeofday clock_settime clock_adjtime adjtimex open_by_handle_at name_to_handle_at
    quotactl syslog uselib lookup_dcookie move_pages migrate_pages kcmp pidfd_open pidfd_getfd pidfd_send_signal
    tkill fanotify_init iopl ioperm memfd_secret mknod mknodat""".split()


def read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def send(fd: int, message: dict) -> None:
    body = json.dumps(message, allow_nan=False).encode()
    write_all(fd, struct.pack("!I", len(body)) + body)


def cap_text(text: str, limit: int) -> str:
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text
    return data[: max(0, limit - 20)].decode("utf-8", "ignore") + " …[truncated]"


class CappedOutput:
    """sys.stdout / sys.stderr of a sample: keeps the first `limit` characters."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size = limit, [], 0

    def write(self, text: object) -> int:
        text = text if isinstance(text, str) else str(text)
        if self.size < self.limit:
            self.parts.append(text[: self.limit - self.size])
            self.size += len(self.parts[-1])
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def text(self) -> str:
        return "".join(self.parts)


class Zygote:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.limits = config["limits"]
        self.code_cache: dict[str, object] = {}
        self.libc = ctypes.CDLL(config["libs"].get("c") or None, use_errno=True)
        self.kills: dict[str, int] = {}
        self.base_data = 0
        self.base_as = 0
        self.last_heartbeat = 0.0

    # -- start-up --------------------------------------------------------------------

    def start(self) -> dict:
        self.libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # no /proc/<pid>/mem, no ptrace by peers
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
        self.seccomp = pyseccomp
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
        rfd, wfd = self.config["request_fd"], self.config["response_fd"]
        self.response_fd = wfd
        send(wfd, self.start())
        while True:
            try:
                (length,) = struct.unpack("!I", read_exact(rfd, 4))
                request = json.loads(read_exact(rfd, length))
            except EOFError:
                return
            self.kills = {}
            results = self.grade(request["source"], request["pairs"])
            send(wfd, {"results": results, "kills": self.kills})
            # Results first: the server need not wait for the clean-up, only the next batch does.
            send(wfd, {"clean": self.wipe_workdir()})

    def heartbeat(self) -> None:
        """Tell the server this batch makes progress (its own watchdog kills a stuck jail)."""
        now = time.monotonic()
        if now - self.last_heartbeat >= 1.0:
            self.last_heartbeat = now
            send(self.response_fd, {"heartbeat": True})

    def compile(self, source: str) -> object:
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        code = self.code_cache.get(key)
        if code is None:
            code = compile(source, "<grader>", "exec", dont_inherit=True)
            if len(self.code_cache) >= 32:
                self.code_cache.pop(next(iter(self.code_cache)))
            self.code_cache[key] = code
        return code

    def grade(self, source: str, pairs: list) -> list:
        try:
            code = self.compile(source)
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError) as exc:
            message = cap_text(f"grader source does not compile: {type(exc).__name__}: {exc}", 4096)
            return [["exception", None, message]] * len(pairs)
        results: list = [None] * len(pairs)
        pending = list(range(len(pairs)))
        while pending:
            got, death = self.run_child(code, pairs, pending)
            for index, outcome in got.items():
                results[index] = outcome
            if death is None:
                break
            remaining = [i for i in pending if i not in got]
            culprit = remaining[0]
            if culprit != pending[0]:
                # Earlier samples shared this child: give the culprit a clean process.
                got_alone, death_alone = self.run_child(code, pairs, [culprit])
                death = got_alone.get(culprit) or death_alone
            results[culprit] = death
            pending = remaining[1:]
        return results

    # -- one child per batch -----------------------------------------------------------

    def run_child(self, code: object, pairs: list, indices: list) -> tuple[dict, list | None]:
        """Run `indices` in one forked child; return (outcomes got, outcome of its death or None)."""
        nonce = os.urandom(16)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            status = 70
            try:
                status = Child(self, code, pairs, indices, w, nonce).main()
            finally:
                os._exit(status)
        os.close(w)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass  # the child did it first, or is already gone
        got: dict = {}
        death = None
        buf = bytearray()
        position = 0
        timeout = float(self.limits["timeout_seconds"])
        deadline = time.monotonic() + timeout
        max_frame = FRAME.size + self.limits["max_message_bytes"]
        finished = False
        poller = select.poll()
        poller.register(r, select.POLLIN | select.POLLHUP)
        while not finished:
            left = deadline - time.monotonic()
            if left <= 0:
                death = ["timeout", None, f"grader ran longer than the {timeout:g} s wall-clock limit"]
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
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        _, status, usage = os.wait4(pid, 0)
        if death is None and not finished:
            death = self.classify_death(status, usage, len(indices) - position)
        elif death is None and position < len(indices):
            death = ["crashed", None, "grader stopped without a result"]
        return got, death

    def check_frame(self, index: int, kind: int, score: float, message: str, indices: list, position: int):
        if position >= len(indices) or index != indices[position]:
            return None
        if kind == OK:
            if not math.isfinite(score) or abs(score) > MAX_ABS_SCORE:
                return None
            return [None, score, ""]
        if kind not in KIND_NAMES:
            return None
        return [KIND_NAMES[kind], None, message]

    def classify_death(self, status: int, usage: resource.struct_rusage, left: int) -> list:
        cpu = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= self.limits["cpu_seconds"]):
                self.count_kill("cpu")
                return ["timeout", None, f"grader used more than {self.limits['cpu_seconds']:g} s of CPU"]
            if sig == signal.SIGXFSZ:
                self.count_kill("file_size")
                return ["resource_limit", None, "grader wrote a file larger than the sandbox's file size limit"]
            self.count_kill("signal")
            return ["crashed", None, f"grader process killed by {name}"]
        code = os.WEXITSTATUS(status)
        return ["crashed", None, f"grader process exited with status {code} before returning a result"]

    def count_kill(self, reason: str) -> None:
        self.kills[reason] = self.kills.get(reason, 0) + 1


class Child:
    """The forked process that runs user code: limits first, then the grader."""

    def __init__(self, zygote: Zygote, code: object, pairs: list, indices: list, result_fd: int, nonce: bytes):
        self.zygote, self.code, self.pairs, self.indices = zygote, code, pairs, indices
        self.result_fd, self.nonce = result_fd, nonce
        self.limits = zygote.limits

    def main(self) -> int:
        try:
            self.confine()
        except BaseException:
            return 71
        self.run()
        return 0

    def confine(self) -> None:
        os.setpgid(0, 0)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if self.result_fd < 3 or devnull == self.result_fd:
            raise OSError("unexpected result fd")
        os.closerange(3, self.result_fd)
        os.closerange(self.result_fd + 1, 1 << 16)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        limits = self.limits
        n = len(self.indices)
        cpu = float(limits["cpu_seconds"])
        used = self.cpu_used()
        hard_cpu = math.ceil(used + cpu * n) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used + cpu), hard_cpu))
        memory = limits["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_DATA, (self.zygote.base_data + memory,) * 2)
        resource.setrlimit(resource.RLIMIT_AS, (self.zygote.base_as + memory,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # RLIMIT_NPROC counts every task of this uid in the jail's user namespace: the
        # jail's init and the zygote are two of them. It is ignored for root, hence the
        # uid drop (done by the jail, or by the zygote in the weaker mode) comes first.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"] + limits["nproc_base"],) * 2)
        os.chdir(self.zygote.config["workdir"])
        if self.zygote.config["mode"] == "unjailed" and os.geteuid() == 0:
            uid, gid = self.zygote.config["uid"], self.zygote.config["gid"]
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            self.zygote.libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a uid change resets it
        if os.getuid() == 0 or os.geteuid() == 0:
            raise PermissionError("refusing to run a grader as root")
        self.load_seccomp()
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))

    def load_seccomp(self) -> None:
        sc = self.zygote.seccomp
        deny = sc.ERRNO(errno.EPERM)
        f = sc.SyscallFilter(sc.ALLOW)
        for name in DENIED_SYSCALLS:
            try:
                f.add_rule(deny, name)
            except (OSError, ValueError, RuntimeError):
                pass  # not a syscall on this architecture / libseccomp version
        # clone3 hides its flags from seccomp: make it unavailable so libc falls back to
        # clone, whose flags we can check (threads yes, processes and namespaces no).
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_THREAD, 0))
        for flag in CLONE_NAMESPACES:
            f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        me = os.getpid()
        for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
            f.add_rule(deny, name, sc.Arg(0, sc.NE, me))  # signals to itself only
        f.load()

    @staticmethod
    def cpu_used() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def report(self, index: int, kind: int, score: float, message: str) -> None:
        data = message.encode("utf-8", "replace")[: self.limits["max_message_bytes"]]
        write_all(self.result_fd, FRAME.pack(self.nonce, index, kind, score, len(data)) + data)

    def run(self) -> None:
        import builtins

        namespace = {"__name__": "grader", "__builtins__": builtins}
        output = CappedOutput(self.limits["max_output_bytes"])
        sys.stdout = sys.stderr = output
        setup_error = None
        try:
            exec(self.code, namespace)
            grade = namespace.get("grade")
            if not callable(grade):
                raise NameError("the grader source defines no grade(sample, item) function")
        except BaseException as exc:  # the module itself failed: every sample shares the reason
            setup_error = self.describe(exc, output)
        cpu = float(self.limits["cpu_seconds"])
        for index in self.indices:
            if setup_error is not None:
                self.report(index, *setup_error)
                continue
            output = CappedOutput(self.limits["max_output_bytes"])
            sys.stdout = sys.stderr = output
            used = self.cpu_used()
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (min(math.ceil(used + cpu), hard), hard))
            sample, item = self.pairs[index]
            try:
                kind, score, message = self.to_score(grade(sample, item))
            except BaseException as exc:
                kind, score, message = self.describe(exc, output)
            self.report(index, kind, score, message)
        self.report(END_INDEX, OK, 0.0, "")

    @staticmethod
    def to_score(value: object) -> tuple[int, float, str]:
        """Convert in the child, under its limits: a hostile __float__ only hurts itself."""
        import numbers

        if isinstance(value, bool) or type(value).__name__ in ("bool_", "bool"):
            return INVALID_SCORE, 0.0, "grade() returned a bool, expected a number"
        if not isinstance(value, numbers.Real):
            return INVALID_SCORE, 0.0, f"grade() returned {type(value).__name__!s:.60}, expected a number"
        try:
            score = float(value)
        except (OverflowError, ValueError, TypeError) as exc:
            return INVALID_SCORE, 0.0, f"grade() returned a number that is not a float: {exc!s:.200}"
        if type(score) is not float or not math.isfinite(score) or abs(score) > MAX_ABS_SCORE:
            return INVALID_SCORE, 0.0, f"grade() returned {score!r:.60}, expected a finite number"
        return OK, score, ""

    def describe(self, exc: BaseException, output: CappedOutput) -> tuple[int, float, str]:
        kind = EXCEPTION
        if isinstance(exc, MemoryError):
            kind = RESOURCE_LIMIT
        elif isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            kind = RESOURCE_LIMIT
        try:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<grader>"]
            where = f" (grader line {frames[-1].lineno})" if frames else ""
            text = f"{type(exc).__name__}: {exc}{where}"
        except BaseException:  # an exception whose __str__ fails still needs a message
            text = f"{type(exc).__name__} (message could not be rendered)"
        printed = output.text()
        if printed:
            text += "\n--- grader output ---\n" + printed
        return kind, 0.0, cap_text(text, self.limits["max_message_bytes"])


def main() -> None:
    config = json.loads(sys.argv[1])
    Zygote(config).serve()


if __name__ == "__main__":
    main()
