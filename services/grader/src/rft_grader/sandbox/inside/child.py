"""The forked process that runs user code: confine itself first, then grade (or, for
Python tools, describe the source's tools or call one of them).

Runs inside the jail (standard library only). Order matters: rlimits, then (weaker mode)
the uid drop, then the seccomp filter, and only then the grader's module. Results go out
as binary frames on a private pipe: per-batch nonce, sample index, outcome code, score
(a double) and a capped message. Frames are buffered briefly (at most FLUSH_SECONDS) to
save system calls on fast batches; if the process dies, unflushed samples are simply
re-run by the zygote.
"""

from __future__ import annotations

import ctypes
import errno
import json
import marshal
import math
import numbers
import os
import resource
import signal
import struct
import sys
import time
import traceback

from tool_schema import TOOL_FILENAME, describe_tools, result_text, tool_functions

OK, EXCEPTION, TIMEOUT, INVALID_SCORE, RESOURCE_LIMIT, CRASHED = range(6)
MAX_ABS_SCORE = 1e300
FRAME = struct.Struct("!16sIBdI")  # nonce, index, kind, score, message length
JOB = struct.Struct("!16sIIIB")  # nonce, sample count, code length, pairs length, mode
MODE_GRADE, MODE_CALL, MODE_DESCRIBE = 0, 1, 2
MODES = {"grade": MODE_GRADE, "call": MODE_CALL, "describe": MODE_DESCRIBE}
END_INDEX = 0xFFFFFFFF
CONFINED_INDEX = 0xFFFFFFFE  # first frame: the child has confined itself (sent before any user code runs)
FLUSH_SECONDS = 0.02
FLUSH_BYTES = 1 << 16
PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 4, 22, 2
PR_SET_PDEATHSIG = 1
M_ARENA_MAX = -8
RESOURCE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EDQUOT}
CLONE_THREAD = 0x00010000
PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
F_SETOWN, F_SETOWN_EX, FIOSETOWN, SIOCSPGRP = 8, 15, 0x8901, 0x8902
# Calls that name a process: allowed on the caller only (pid 0). Another pid would be the
# zygote or the fork server (same uid, so the kernel lets it): prlimit64 on them made
# every later child of the worker crash, setpriority / sched_* / ioprio slow them down.
SELF_ONLY_ARG0 = ("prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr")
CLONE_NAMESPACES = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080]
# Denied with EPERM: no new programs or processes, no network, no looking into or
# changing other processes, no kernel attack surface a grader has no use for. Signals:
# a grader may only signal its own process group (it is alone in it).
DENIED_SYSCALLS = """execve execveat fork vfork ptrace process_vm_readv process_vm_writev process_madvise
    mount umount2 pivot_root chroot unshare setns fsopen fsmount fsconfig fspick move_mount open_tree mount_setattr
    bpf io_uring_setup io_uring_enter io_uring_register keyctl add_key request_key perf_event_open userfaultfd
    kexec_load kexec_file_load init_module finit_module delete_module socket socketpair acct swapon swapoff reboot
    sethostname setdomainname settimeofday clock_settime clock_adjtime adjtimex open_by_handle_at name_to_handle_at
    quotactl syslog uselib lookup_dcookie move_pages migrate_pages kcmp pidfd_open pidfd_getfd pidfd_send_signal
    tkill tgkill rt_sigqueueinfo rt_tgsigqueueinfo fanotify_init iopl ioperm memfd_secret mknod mknodat
    setpgid setsid process_mrelease get_robust_list""".split()
# Memory that no rlimit counts: memfd pages are not mapped (RLIMIT_AS / DATA miss them) and
# not on the size-capped /tmp; System V and POSIX IPC objects belong to the jail's IPC
# namespace, so they also outlive the grading process until the whole jail stops.
DENIED_SYSCALLS += """memfd_create shmget shmat shmdt shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop
    semctl mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr""".split()


def build_seccomp_filter(sc) -> object:
    """The filter of every grading child; built once per worker (pyseccomp over libseccomp)."""
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
    # Processes: signals to its own group only, which it cannot leave (setpgid / setsid are
    # denied above) and which holds nothing else, so a kill reaches the grader and its threads.
    f.add_rule(deny, "kill", sc.Arg(0, sc.NE, 0))
    for name in SELF_ONLY_ARG0:
        f.add_rule(deny, name, sc.Arg(0, sc.NE, 0))
    f.add_rule(deny, "setpriority", sc.Arg(0, sc.NE, PRIO_PROCESS))  # no PRIO_PGRP / PRIO_USER
    f.add_rule(deny, "setpriority", sc.Arg(1, sc.NE, 0))
    f.add_rule(deny, "ioprio_set", sc.Arg(0, sc.NE, IOPRIO_WHO_PROCESS))
    f.add_rule(deny, "ioprio_set", sc.Arg(1, sc.NE, 0))
    # F_SETOWN / FIOSETOWN make I/O on an fd signal another process (SIGIO, or any signal
    # chosen with F_SETSIG): a way around the kill rule.
    # The kernel reads these commands as 32-bit ints while seccomp compares all 64 bits:
    # compare the low 32 only, or `F_SETOWN | 1 << 32` would pass as another command.
    for command in (F_SETOWN, F_SETOWN_EX):
        f.add_rule(deny, "fcntl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, command))
    for request in (FIOSETOWN, SIOCSPGRP):
        f.add_rule(deny, "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, request))
    return f


def export_bpf(seccomp_filter) -> bytes:
    """The filter as raw BPF, so a child loads it with one prctl instead of compiling it."""
    r, w = os.pipe()

    class _Sink:
        def fileno(self) -> int:
            return w

    try:
        seccomp_filter.export_bpf(_Sink())
        os.close(w)
        w = -1
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def read_exact(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


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


class Child:
    """One batch in one process; never returns to the zygote's code (the caller _exits).

    Forked before its batch is known, it first reads its job from the zygote (nonce,
    sample indices, marshalled code, the pairs as JSON bytes), then confines itself, and
    only then parses the pairs (model output) and runs the grader.
    """

    def __init__(self, zygote, job_fd: int, result_fd: int) -> None:
        self.zygote, self.job_fd, self.result_fd = zygote, job_fd, result_fd
        self.limits = zygote.limits
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.last_flush = time.monotonic()

    def main(self) -> int:
        try:
            header = read_exact(self.job_fd, JOB.size)
        except EOFError:
            return 0  # the zygote stopped before giving this spare a batch
        self.nonce, count, code_len, body_len, mode = JOB.unpack(header)
        self.indices = list(struct.unpack(f"!{count}I", read_exact(self.job_fd, 4 * count)))
        code = marshal.loads(read_exact(self.job_fd, code_len))
        body = read_exact(self.job_fd, body_len)
        try:
            self.confine()
        except BaseException:
            return 71  # the zygote sees no CONFINED frame: the worker is damaged, not the grader at fault
        try:
            os.write(self.result_fd, FRAME.pack(self.nonce, CONFINED_INDEX, OK, 0.0, 0))
        except OSError:
            return 0  # the zygote is gone
        if mode == MODE_GRADE:
            self.run(code, body)
        else:
            self.run_tool(code, body, mode)
        return 0

    def confine(self) -> None:
        os.setpgid(0, 0)
        devnull = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)  # raw writes to stdout / stderr go nowhere
        if self.result_fd < 3 or devnull == self.result_fd:
            raise OSError("unexpected result fd")
        os.closerange(3, self.result_fd)  # the job pipe, the zygote's pipes to the server, ...
        os.closerange(self.result_fd + 1, 1 << 16)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
            signal.signal(sig, signal.SIG_DFL)
        limits, config = self.limits, self.zygote.config
        cpu = float(limits["cpu_seconds"])
        used = cpu_used()
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(used + cpu), math.ceil(used + cpu * len(self.indices)) + 1))
        memory = limits["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_DATA, (self.zygote.base_data + memory,) * 2)
        resource.setrlimit(resource.RLIMIT_AS, (self.zygote.base_as + memory,) * 2)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"],) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))  # POSIX message queues (mq_open is denied too)
        # RLIMIT_NPROC counts every task of this uid in the jail's user namespace (the
        # zygote and the fork server are two of them). It is ignored for root, hence the
        # uid drop (done by the jail, or below in the weaker mode) before anything runs.
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"] + limits["nproc_base"],) * 2)
        os.chdir(config["workdir"])
        libc = self.zygote.libc
        # One malloc arena: glibc reserves 64 MiB of address space per thread arena, which
        # RLIMIT_AS counts as if used. Without this a few threads eat the memory limit, and
        # a thread whose first allocation then fails dies before Python sees it started,
        # hanging Thread.start() until the deadline instead of raising.
        if hasattr(libc, "mallopt"):
            libc.mallopt(M_ARENA_MAX, 1)
        if config["mode"] == "unjailed" and os.geteuid() == 0:
            os.setgroups([])
            os.setresgid(config["gid"], config["gid"], config["gid"])
            os.setresuid(config["uid"], config["uid"], config["uid"])
            libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # a uid change resets it
        if os.getuid() == 0 or os.geteuid() == 0:
            raise PermissionError("refusing to run a grader as root")
        # Dies with the fork server (after the uid change, which clears it); unjailed there is
        # no pid namespace to end it.
        parent = os.getppid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            raise OSError("the fork server is gone")
        bpf = self.zygote.seccomp_bpf
        prog = ctypes.create_string_buffer(bpf, len(bpf))
        fprog = _SockFprog(len(bpf) // 8, ctypes.cast(prog, ctypes.c_void_p))
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")

    def report(self, index: int, kind: int, score: float, message: str) -> None:
        data = message.encode("utf-8", "replace")[: self.limits["max_message_bytes"]]
        self.pending.append(FRAME.pack(self.nonce, index, kind, score, len(data)) + data)
        self.pending_bytes += len(self.pending[-1])
        now = time.monotonic()
        if index == END_INDEX or self.pending_bytes >= FLUSH_BYTES or now - self.last_flush >= FLUSH_SECONDS:
            view = memoryview(b"".join(self.pending))
            while view:
                view = view[os.write(self.result_fd, view) :]
            self.pending, self.pending_bytes, self.last_flush = [], 0, now

    def run(self, code: object, body: bytes) -> None:
        import builtins

        namespace = {"__name__": "grader", "__builtins__": builtins}
        output = CappedOutput(self.limits["max_output_bytes"])
        sys.stdout = sys.stderr = output
        setup_error = None
        try:
            pairs = json.loads(body)
        except (ValueError, RecursionError, MemoryError) as exc:
            pairs = None
            setup_error = (CRASHED, 0.0, cap_text(f"the samples could not be read: {type(exc).__name__}: {exc}", 4096))
        try:
            if setup_error is not None:
                raise RuntimeError("no samples")
            exec(code, namespace)
            grade = namespace.get("grade")
            if not callable(grade):
                raise NameError("the grader source defines no grade(sample, item) function")
        except BaseException as exc:  # the module itself failed: every sample shares the reason
            setup_error = setup_error or self.describe(exc, output)
        cpu = float(self.limits["cpu_seconds"])
        for index in self.indices:
            if setup_error is not None:
                self.report(index, *setup_error)
                continue
            output = CappedOutput(self.limits["max_output_bytes"])
            sys.stdout = sys.stderr = output
            hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
            resource.setrlimit(resource.RLIMIT_CPU, (min(math.ceil(cpu_used() + cpu), hard), hard))
            sample, item = pairs[index]
            try:
                kind, score, message = to_score(grade(sample, item))
            except BaseException as exc:
                kind, score, message = self.describe(exc, output)
            self.report(index, kind, score, message)
        self.report(END_INDEX, OK, 0.0, "")

    def run_tool(self, code: object, body: bytes, mode: int) -> None:
        """Python tools: one entry, [name, arguments] to call or [null, null] to describe.

        The module runs afresh in each call (nothing persists between calls). A call
        reports OK with the result as text; a describe reports OK with the tools as a JSON
        list. Whatever fails is an error with a message for the model."""
        import builtins

        namespace = {"__name__": "tools", "__builtins__": builtins}
        output = CappedOutput(self.limits["max_output_bytes"])
        sys.stdout = sys.stderr = output
        index, cap = self.indices[0], self.limits["max_message_bytes"]
        try:
            ((name, arguments),) = json.loads(body)
            exec(code, namespace)
            if mode == MODE_DESCRIBE:
                text = json.dumps(describe_tools(namespace), ensure_ascii=False)
                if len(text.encode("utf-8", "replace")) > cap:
                    raise ValueError(f"the tools' descriptions take more than {cap} bytes")
                report = (OK, 0.0, text)
            else:
                tools = tool_functions(namespace)
                if name not in tools:
                    raise LookupError(f"no tool {name!r:.100}; the tools are {sorted(tools)}")
                if not isinstance(arguments, dict):
                    raise TypeError("the arguments must be a JSON object")
                report = (OK, 0.0, cap_text(result_text(tools[name](**arguments)), cap))
        except BaseException as exc:
            report = self.describe(exc, output, TOOL_FILENAME, "line")
        self.report(index, *report)
        self.report(END_INDEX, OK, 0.0, "")

    def describe(
        self, exc: BaseException, output: CappedOutput, filename: str = "<grader>", where: str = "grader line"
    ) -> tuple[int, float, str]:
        kind = EXCEPTION
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS):
            kind = RESOURCE_LIMIT
        label = "grader" if filename == "<grader>" else "printed"
        try:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == filename]
            at = f" ({where} {frames[-1].lineno})" if frames else ""
            text = f"{type(exc).__name__}: {exc}{at}"
        except BaseException:  # an exception whose __str__ fails still needs a message
            text = f"{type(exc).__name__} (message could not be rendered)"
        printed = output.text()
        if printed:
            text += f"\n--- {label} output ---\n" + printed
        return kind, 0.0, cap_text(text, self.limits["max_message_bytes"])


def cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def to_score(value: object) -> tuple[int, float, str]:
    """Convert in the child, under its limits: a hostile __float__ only hurts itself."""
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
