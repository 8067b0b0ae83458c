"""Hostile python graders and hostile model outputs for the sandbox attack suite.

Each Attack is a grader source (and optionally a sample) plus what containment looks
like: the error kinds allowed, or the exact score a grader returns when its attack
failed. Attacks that probe for a leak return 1.0 when they succeed, so a broken
sandbox shows up as a wrong score, never as a silent pass.
"""

from __future__ import annotations

import dataclasses
import textwrap

import psutil

SECRET_ENV = "RFT_SANDBOX_TEST_SECRET"
HONEST = "def grade(sample, item):\n    return len(sample['output_text']) / 100\n"


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    source: str
    kinds: frozenset[str] = frozenset()
    """Acceptable error kinds (lower-case proto names); empty when a score is expected."""
    score: float | None = None
    """The score the grader returns when the attack was contained."""
    output_text: str = "hello"
    output_json: dict | None = None
    item: dict = dataclasses.field(default_factory=dict)


def _src(body: str) -> str:
    return textwrap.dedent(body).strip() + "\n"


def _kinds(*names: str) -> frozenset[str]:
    return frozenset(names)


def nested(depth: int) -> dict:
    node: dict = {"leaf": 1}
    for _ in range(depth):
        node = {"a": node}
    return node


ATTACKS = [
    Attack("busy_loop", _src("def grade(s, i):\n    while True: pass"), _kinds("timeout")),
    Attack("sleep_forever", _src("import time\ndef grade(s, i):\n    time.sleep(10**6)"), _kinds("timeout")),
    Attack(
        "ignore_sigxcpu_sigalrm",
        _src("""
            import signal
            for sig in (signal.SIGXCPU, signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)
            def grade(s, i):
                while True: pass
        """),
        _kinds("timeout"),
    ),
    Attack(
        "memory_bomb_bytearray",
        _src("def grade(s, i):\n    hoard = []\n    while True: hoard.append(bytearray(10**7))"),
        _kinds("resource_limit"),
    ),
    Attack(
        "memory_bomb_numpy",
        _src("import numpy as np\ndef grade(s, i):\n    return float(np.ones((40000, 40000)).sum())"),
        _kinds("resource_limit"),
    ),
    Attack(
        "fork_bomb_os_fork",
        _src("import os\ndef grade(s, i):\n    while True:\n        if os.fork() == 0:\n            while True: pass"),
        _kinds("exception"),
    ),
    Attack(
        "fork_multiprocessing",
        _src("""
            import multiprocessing, time
            def grade(s, i):
                p = multiprocessing.Process(target=time.sleep, args=(1000,))
                p.start()
                return 1.0
        """),
        _kinds("exception"),
    ),
    Attack(
        "fork_subprocess",
        _src("import subprocess\ndef grade(s, i):\n    subprocess.Popen(['/usr/bin/sleep', '1000'])\n    return 1.0"),
        _kinds("exception"),
    ),
    Attack(
        "fork_posix_spawn",
        _src(
            "import os\ndef grade(s, i):\n    os.posix_spawn('/usr/bin/sleep', ['sleep', '1000'], {})\n    return 1.0"
        ),
        _kinds("exception"),
    ),
    Attack(
        "thread_bomb",
        _src("""
            import threading, time
            def grade(s, i):
                threads = []
                while True:
                    t = threading.Thread(target=time.sleep, args=(1000,))
                    t.start()
                    threads.append(t)
        """),
        _kinds("exception", "resource_limit"),
    ),
    Attack(
        "deep_recursion",
        _src(
            "import sys\nsys.setrecursionlimit(10**9)\ndef f(n):\n    return f(n + 1) + 1\ndef grade(s, i):\n    return f(0)"
        ),
        _kinds("crashed", "exception", "timeout", "resource_limit"),
    ),
    Attack(
        "segfault_ctypes",
        _src("import ctypes\ndef grade(s, i):\n    return float(ctypes.c_int.from_address(8).value)"),
        _kinds("crashed"),
    ),
    Attack(
        "raw_syscalls_ctypes",
        _src("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def grade(s, i):
                # fork(57), clone(56, SIGCHLD), socket(41, AF_INET, SOCK_STREAM), unshare(272, CLONE_NEWUSER),
                # ptrace(101, PTRACE_ATTACH, 1), mount(165), execve(59, "/usr/bin/true")
                calls = [(57,), (56, 17, 0, 0, 0, 0), (41, 2, 1, 0), (272, 0x10000000), (101, 16, 1, 0, 0),
                         (165, b"none", b"/tmp", b"tmpfs", 0, None), (59, b"/usr/bin/true", None, None)]
                worked = [c[0] for c in calls if libc.syscall(*c) >= 0]
                if worked:
                    libc._exit(0) if 57 in worked or 56 in worked else None
                return 1.0 if worked else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "network_socket_ip",
        _src(
            "import socket\ndef grade(s, i):\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n    return 1.0"
        ),
        _kinds("exception"),
    ),
    Attack(
        "network_dns",
        _src("import socket\ndef grade(s, i):\n    socket.getaddrinfo('pypi.org', 443)\n    return 1.0"),
        _kinds("exception"),
    ),
    Attack(
        "network_unix_socket",
        _src("""
            import socket
            def grade(s, i):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect('/run/systemd/private')
                return 1.0
        """),
        _kinds("exception"),
    ),
    Attack(
        "read_etc_passwd",
        _src("def grade(s, i):\n    return 1.0 if 'root:' in open('/etc/passwd').read() else 0.0"),
        _kinds("exception"),
    ),
    Attack(
        "read_proc_1_environ",
        _src("def grade(s, i):\n    return 1.0 if open('/proc/1/environ', 'rb').read() else 0.0"),
        _kinds("exception"),
    ),
    Attack(
        "read_parent_mem",
        _src("""
            import os
            def grade(s, i):
                with open(f'/proc/{os.getppid()}/mem', 'rb') as mem:
                    return 1.0 if mem.read(1) is not None else 0.0
        """),
        _kinds("exception"),
    ),
    Attack(
        "read_server_environment",
        _src(f"""
            import os, glob
            def grade(s, i):
                secret = i['secret']
                seen = repr(dict(os.environ))
                for path in ['/proc/self/environ', '/proc/1/environ', f'/proc/{{os.getppid()}}/environ',
                             *glob.glob('/proc/*/environ')]:
                    try:
                        seen += open(path, 'rb').read().decode('latin-1')
                    except OSError:
                        pass
                return 1.0 if secret in seen or {SECRET_ENV!r} in seen else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "write_outside_tmp",
        _src("""
            import os
            def grade(s, i):
                wrote = []
                for path in ['/x', '/usr/x', '/sandbox/x', '/dev/x', '/dev/shm/x', '/etc/x', '/root/x', '/home/x']:
                    try:
                        with open(path, 'w') as f:
                            f.write('x')
                        wrote.append(path)
                    except OSError:
                        pass
                return 1.0 if wrote else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "fill_tmp",
        _src("""
            def grade(s, i):
                n = 0
                while True:
                    with open(f'/tmp/fill{n}', 'wb') as f:
                        f.write(b'x' * (1 << 20) * 8)
                    n += 1
        """),
        _kinds("resource_limit"),
    ),
    Attack(
        "huge_stdout",
        _src("""
            import os, sys
            def grade(s, i):
                for _ in range(20000):
                    print('{"results": [[null, 1.0, ""]]}' * 30)
                os.write(1, b'\\x00' * 10**7)
                sys.stdout.flush()
                return 0.25
        """),
        score=0.25,
    ),
    Attack(
        "huge_stderr",
        _src("""
            import os, sys
            def grade(s, i):
                for _ in range(20000):
                    sys.stderr.write('E' * 1000)
                os.write(2, b'\\xff' * 10**7)
                return 0.75
        """),
        score=0.75,
    ),
    Attack(
        "forge_result_on_every_fd",
        _src("""
            import os, struct
            def grade(s, i):
                fake = b'\\x00' * 16 + struct.pack('!IBdI', 0, 0, 1.0, 0)
                for fd in range(3, 1024):
                    try:
                        os.write(fd, fake * 64)
                    except OSError:
                        pass
                return 0.0
        """),
        _kinds("crashed"),
    ),
    Attack(
        "forge_result_on_stdout",
        _src(
            'import os\ndef grade(s, i):\n    os.write(1, b\'\\x00\\x00\\x00\\x10{"results": [[null, 1.0, ""]]}\')\n'
            '    print(\'{"results": [[null, 1.0, ""]]}\')\n    return 0.125'
        ),
        score=0.125,
    ),
    Attack(
        "signal_the_zygote",
        _src("""
            import os, signal
            def grade(s, i):
                for pid in (os.getppid(), 1, -1, 0 - os.getpgid(0) - 1):
                    try:
                        os.kill(pid, signal.SIGKILL)
                        return 1.0
                    except OSError:
                        pass
                return 0.0
        """),
        score=0.0,
    ),
    # -- memory outside the rlimits (issue #13, item 2): each returns 1.0 when it got the
    # memory (or an object that outlives the grading process), 0.0 when it was refused.
    Attack(
        "memfd_beyond_memory_limit",
        _src("""
            import os
            def grade(s, i):
                try:
                    fds = [os.memfd_create(f'hoard{n}') for n in range(6)]
                except OSError:
                    return 0.0
                for fd in fds:  # 6 x 48 MiB = 288 MiB of pages, beyond the 256 MiB memory limit
                    for _ in range(48):
                        os.write(fd, b'x' * (1 << 20))
                return 1.0
        """),
        score=0.0,
    ),
    Attack(
        "sysv_shm_beyond_memory_limit",
        _src("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.shmat.restype = ctypes.c_void_p
            def grade(s, i):
                for n in range(3):  # 3 x 100 MiB segments, filled and detached: they stay after exit
                    sid = libc.shmget(0x5EC0 + n, 100 << 20, 0o1000 | 0o600)
                    if sid < 0:
                        return 0.0
                    addr = libc.shmat(sid, None, 0)
                    if addr in (None, ctypes.c_void_p(-1).value):
                        return 0.0
                    ctypes.memset(addr, 1, 100 << 20)
                    libc.shmdt(ctypes.c_void_p(addr))
                return 1.0
        """),
        score=0.0,
    ),
    Attack(
        "sysv_message_queue",
        _src("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def grade(s, i):
                qid = libc.msgget(0x5EC1, 0o1000 | 0o600)
                if qid < 0:
                    return 0.0
                message = ctypes.create_string_buffer(8 + 8192)
                ctypes.c_long.from_buffer(message).value = 1  # mtype
                return 1.0 if libc.msgsnd(qid, message, 8192, 0o4000) == 0 else 0.5
        """),
        score=0.0,
    ),
    Attack(
        "sysv_semaphores",
        _src("""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            def grade(s, i):
                return 1.0 if libc.semget(0x5EC2, 16, 0o1000 | 0o600) >= 0 else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "posix_message_queue",
        _src("""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            def grade(s, i):
                qd = libc.mq_open(b'/hoard', os.O_CREAT | os.O_RDWR, 0o600, None)
                if qd < 0:
                    return 0.0
                return 1.0 if libc.mq_send(qd, b'x' * 1024, 1024, 0) == 0 else 0.5
        """),
        score=0.0,
    ),
    Attack(
        "posix_shared_memory_dev_shm",
        _src("""
            from multiprocessing import shared_memory
            def grade(s, i):
                try:
                    block = shared_memory.SharedMemory(name='hoard', create=True, size=100 << 20)
                except OSError:
                    return 0.0
                block.buf[:] = b'x' * (100 << 20)
                return 1.0
        """),
        score=0.0,
    ),
    # -- reaching the zygote and other processes (issue #13, item 3): 1.0 when a call that
    # touches another process worked, 0.0 when every one was refused.
    Attack(
        "setpgid_into_zygote_group_then_kill",
        _src("""
            import os, signal
            def grade(s, i):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                for group in (1, os.getppid()):
                    try:
                        os.setpgid(0, group)
                    except OSError:
                        continue
                    os.kill(0, signal.SIGINT)  # the zygote turns SIGINT into KeyboardInterrupt
                    return 1.0
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "linger_in_zygote_group",
        _src("""
            import os, signal, time
            def grade(s, i):
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):
                    signal.signal(sig, signal.SIG_IGN)
                for group in (1, os.getppid()):
                    try:
                        os.setpgid(0, group)  # out of our own group: a kill of our group misses us
                    except OSError:
                        continue
                    time.sleep(600)
                    return 1.0
                try:
                    os.setsid()
                except OSError:
                    return 0.0
                time.sleep(600)
                return 1.0
        """),
        score=0.0,
    ),
    Attack(
        "close_result_pipe_and_linger",
        _src("""
            import os, signal, time
            def grade(s, i):
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_IGN)
                os.closerange(3, 1024)  # the zygote reads end-of-file as "it exited"
                time.sleep(600)
                return 1.0
        """),
        _kinds("timeout"),
    ),
    Attack(
        "prlimit_the_parent",
        _src("""
            import os, resource
            def grade(s, i):
                worked = 0
                for pid in {os.getppid(), 1}:
                    for which, value in ((resource.RLIMIT_NOFILE, (20, 20)), (resource.RLIMIT_CPU, (1, 1)),
                                         (resource.RLIMIT_AS, (1 << 26, 1 << 26))):
                        try:
                            resource.prlimit(pid, which, value)
                            worked += 1
                        except (OSError, ValueError):
                            pass
                return 1.0 if worked else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "touch_other_processes",
        _src("""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            def grade(s, i):
                worked = []
                for pid in {os.getppid(), 1}:
                    calls = {
                        'setpriority': lambda: os.setpriority(os.PRIO_PROCESS, pid, 19),
                        'setpriority_user': lambda: os.setpriority(os.PRIO_USER, 0, 19),
                        'setpriority_pgrp': lambda: os.setpriority(os.PRIO_PGRP, pid, 19),
                        'sched_setaffinity': lambda: os.sched_setaffinity(pid, {0}),
                        'sched_setscheduler': lambda: os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0)),
                        'ioprio_set': lambda: libc.syscall(251, 1, pid, 7 << 13) == 0 or 1 / 0,
                    }
                    for name, call in calls.items():
                        try:
                            call()
                            worked.append(name)
                        except (OSError, ZeroDivisionError):
                            pass
                if worked:
                    raise RuntimeError('worked: ' + ' '.join(worked))
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "sigio_to_the_zygote",
        _src("""
            import fcntl, os, signal
            FIOSETOWN = 0x8901
            def grade(s, i):
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                owned = []
                for how in ('fcntl', 'ioctl'):
                    r, w = os.pipe()
                    try:  # I/O on r now signals the zygote (pid 1)...
                        if how == 'fcntl':
                            fcntl.fcntl(r, fcntl.F_SETOWN, 1)
                        else:
                            fcntl.ioctl(r, FIOSETOWN, (1).to_bytes(4, 'little'))
                    except OSError:
                        continue
                    fcntl.fcntl(r, fcntl.F_SETSIG, signal.SIGINT)  # ... with SIGINT instead of SIGIO
                    fcntl.fcntl(r, fcntl.F_SETFL, fcntl.fcntl(r, fcntl.F_GETFL) | os.O_ASYNC)
                    os.write(w, b'x')
                    owned.append(how)
                return 1.0 if owned else 0.0
        """),
        score=0.0,
    ),
    Attack("nan_score", _src("def grade(s, i):\n    return float('nan')"), _kinds("invalid_score")),
    Attack("inf_score", _src("def grade(s, i):\n    return float('inf')"), _kinds("invalid_score")),
    Attack("huge_score", _src("def grade(s, i):\n    return 1e308"), _kinds("invalid_score")),
    Attack("bool_score", _src("def grade(s, i):\n    return True"), _kinds("invalid_score")),
    Attack("string_score", _src("def grade(s, i):\n    return '1.0'"), _kinds("invalid_score")),
    Attack("os_exit_without_result", _src("import os\ndef grade(s, i):\n    os._exit(0)"), _kinds("crashed")),
    Attack(
        "looping_float",
        _src("""
            import numbers
            class Sly:
                def __float__(self):
                    while True: pass
            numbers.Real.register(Sly)
            def grade(s, i):
                return Sly()
        """),
        _kinds("timeout"),
    ),
    Attack(
        "ten_mb_model_output",
        HONEST.replace("/ 100", "/ 10_000_000"),
        score=1.0,
        output_text="A" * 10_000_000,
    ),
    Attack(
        "hostile_unicode_output",
        _src("def grade(s, i):\n    raise ValueError(s['output_text'] + '\\udc80\\ud800')"),
        _kinds("exception"),
        output_text="\x00\u202e\uffff\U0010ffff" * 1000,
    ),
    Attack(
        "deeply_nested_json",
        _src("""
            def grade(s, i):
                node, depth = s['output_json'], 0
                while isinstance(node, dict) and 'a' in node:
                    node, depth = node['a'], depth + 1
                return depth / 100
        """),
        score=0.3,
        output_json=nested(30),  # the deepest the wire format takes (see the test of deeper input)
    ),
    # Privilege and kernel-surface probes: each returns 1.0 if the call took effect.
    Attack(
        "unshare_namespaces",
        _src("""
            import ctypes
            def grade(s, i):
                libc = ctypes.CDLL(None, use_errno=True)
                for flags in (0x10000000, 0x00020000, 0x40000000, 0x20000000):  # user, mount, net, pid
                    if libc.unshare(flags) == 0:
                        return 1.0
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "mount_a_filesystem",
        _src("""
            import ctypes, os
            def grade(s, i):
                libc = ctypes.CDLL(None, use_errno=True)
                os.makedirs('/tmp/m', exist_ok=True)
                return 1.0 if libc.mount(b'none', b'/tmp/m', b'tmpfs', 0, None) == 0 else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "ptrace_the_parent",
        _src("""
            import ctypes, os
            def grade(s, i):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
                return 1.0 if libc.ptrace(16, os.getppid(), None, None) == 0 else 0.0  # PTRACE_ATTACH
        """),
        score=0.0,
    ),
    Attack(
        "kernel_surface_syscalls",
        _src("""
            import ctypes
            def grade(s, i):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.syscall.restype = ctypes.c_long
                entries = ctypes.create_string_buffer(512)
                calls = [
                    (425, 8, ctypes.byref(entries)),  # io_uring_setup: a working ring is an fd >= 0
                    (323, 0),  # userfaultfd
                    (321, 0, None, 0),  # bpf BPF_MAP_CREATE with no attributes
                    (298, None, 0, -1, -1, 0),  # perf_event_open
                    (248, b'user', b'k', b'v', 1, -4),  # add_key into the session keyring
                ]
                return 1.0 if any(libc.syscall(*call) >= 0 for call in calls) else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "packet_and_raw_sockets",
        _src("""
            import socket
            def grade(s, i):
                for family, kind, proto in ((17, socket.SOCK_RAW, 768), (2, socket.SOCK_RAW, 1), (2, socket.SOCK_RAW, 255)):
                    try:
                        socket.socket(family, kind, proto).close()
                        return 1.0
                    except OSError:
                        pass
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "read_kernel_devices_and_sysfs",
        _src("""
            def grade(s, i):
                for path in ('/dev/mem', '/dev/kmem', '/dev/kmsg', '/dev/port', '/sys/kernel/notes', '/sys/class/net/lo/address'):
                    try:
                        with open(path, 'rb') as handle:
                            handle.read(1)
                        return 1.0
                    except OSError:
                        pass
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "raise_hard_limits",
        _src("""
            import resource
            def grade(s, i):
                for limit in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_NOFILE, resource.RLIMIT_CPU):
                    soft, hard = resource.getrlimit(limit)
                    if hard == resource.RLIM_INFINITY:
                        continue
                    try:
                        resource.setrlimit(limit, (hard + 1, hard + 1))
                        return 1.0
                    except (ValueError, OSError):
                        pass
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "become_root",
        _src("""
            import os
            def grade(s, i):
                for attempt in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.setresuid(0, 0, 0), lambda: os.setgroups([0])):
                    try:
                        attempt()
                        return 1.0
                    except OSError:
                        pass
                return 1.0 if os.geteuid() == 0 else 0.0
        """),
        score=0.0,
    ),
    Attack(
        "chroot_and_pivot",
        _src("""
            import ctypes, os
            def grade(s, i):
                try:
                    os.chroot('/tmp')
                    return 1.0
                except OSError:
                    pass
                libc = ctypes.CDLL(None, use_errno=True)
                return 1.0 if libc.syscall(155, b'/tmp', b'/tmp') == 0 else 0.0  # pivot_root
        """),
        score=0.0,
    ),
    Attack(
        "raise_priority_or_set_the_clock",
        _src("""
            import os, time
            def grade(s, i):
                try:
                    os.nice(-5)
                    return 1.0
                except OSError:
                    pass
                try:
                    time.clock_settime(time.CLOCK_REALTIME, time.time() + 3600)
                    return 1.0
                except OSError:
                    pass
                return 0.0
        """),
        score=0.0,
    ),
    Attack(
        "exhaust_file_descriptors",
        _src("""
            import os
            def grade(s, i):
                fds = []
                try:
                    for _ in range(100_000):
                        fds.append(os.open('/dev/null', os.O_RDONLY))
                except OSError:
                    return 0.0  # EMFILE: the descriptor limit held
                return 1.0
        """),
        score=0.0,
    ),
    Attack(
        "load_a_kernel_module",
        _src("""
            import ctypes
            def grade(s, i):
                libc = ctypes.CDLL(None, use_errno=True)
                image = ctypes.create_string_buffer(b'\\x7fELF' + b'\\0' * 60)
                return 1.0 if libc.syscall(175, image, 64, b'') == 0 else 0.0  # init_module
        """),
        score=0.0,
    ),
    Attack(
        "fsetown_with_high_bits",
        _src("""
            import ctypes, os
            def grade(s, i):
                # fcntl's command is a 32-bit int to the kernel: F_SETOWN with a bit above 32 set
                # is still F_SETOWN there, and makes I/O on the pipe signal the parent.
                libc = ctypes.CDLL(None, use_errno=True)
                libc.syscall.restype = ctypes.c_long
                libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_ulong, ctypes.c_long]
                r, w = os.pipe()
                for command in (8, 15):  # F_SETOWN, F_SETOWN_EX
                    if libc.syscall(72, r, command | (1 << 32), os.getppid()) == 0:
                        return 1.0
                return 0.0
        """),
        score=0.0,
    ),
]


# Looks for data of earlier batches (tokens VICTIM-<16 hex digits>) everywhere a grader can:
# the frames above grade(), and its own memory (the malloc heap, and the mappings around its
# objects), read through a file so that unmapped pages fail with EFAULT instead of crashing.
# Its own code holds the prefix and the pattern only apart, so it never finds itself. The
# first sample of a process scans; the others repeat its answer.
PREVIOUS_BATCH_PROBE = _src(r"""
    import ctypes, os, re, sys, time
    PATTERN = re.compile(b'VICTIM' + b'-[0-9a-f]{16}')
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sbrk.restype = ctypes.c_void_p
    CHUNK = 1 << 20
    found = None

    def scan_frames():
        hits = set()
        frame = sys._getframe()
        while frame is not None:
            for value in list(frame.f_locals.values()):
                hits.update(PATTERN.findall(repr(value)[: 1 << 24].encode('utf-8', 'replace')))
            for value in list(getattr(frame.f_locals.get('self'), '__dict__', {}).values()):
                hits.update(PATTERN.findall(repr(value)[: 1 << 24].encode('utf-8', 'replace')))
            frame = frame.f_back
        return hits

    def scan_memory(fd, start, step, seconds):
        hits, addr, deadline = set(), start, time.monotonic() + seconds
        while time.monotonic() < deadline and addr > 0:
            if libc.pwrite(fd, ctypes.c_void_p(addr), CHUNK, 0) != CHUNK:
                break  # the end of this run of mapped memory
            hits.update(PATTERN.findall(os.pread(fd, CHUNK, 0)))
            addr += step
        return hits

    def scan():
        hits = scan_frames()
        fd = os.open('/tmp', os.O_TMPFILE | os.O_RDWR, 0o600)
        try:
            heap_top = libc.sbrk(0)
            hits |= scan_memory(fd, heap_top - CHUNK, -(CHUNK - 64), 0.5)
            near = id(PATTERN) & ~(CHUNK - 1)
            hits |= scan_memory(fd, near, -(CHUNK - 64), 0.2)
            hits |= scan_memory(fd, near, CHUNK - 64, 0.2)
        finally:
            os.close(fd)
        return sorted(h.decode() for h in hits)

    def grade(s, i):
        global found
        if found is None:
            found = scan()
        if found:
            raise RuntimeError('earlier batches seen: ' + ' '.join(found))
        return 0.0
""")

# System V and POSIX IPC objects live in the jail's IPC namespace, not in the process: one
# that a grader could create would outlive it (and every limit) until the jail stops.
IPC_KEYS = (0x5EC10, 0x5EC11, 0x5EC12)
IPC_CREATE = _src(f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def grade(s, i):
        made = 0
        made += libc.shmget({IPC_KEYS[0]}, 1 << 20, 0o1000 | 0o600) >= 0
        made += libc.msgget({IPC_KEYS[1]}, 0o1000 | 0o600) >= 0
        made += libc.semget({IPC_KEYS[2]}, 1, 0o1000 | 0o600) >= 0
        made += libc.mq_open(b'/persist', os.O_CREAT | os.O_RDWR, 0o600, None) >= 0
        return made / 4
""")
IPC_PROBE = _src(f"""
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    def grade(s, i):
        seen = 0
        seen += libc.shmget({IPC_KEYS[0]}, 0, 0) >= 0
        seen += libc.msgget({IPC_KEYS[1]}, 0) >= 0
        seen += libc.semget({IPC_KEYS[2]}, 0, 0) >= 0
        seen += libc.mq_open(b'/persist', os.O_RDONLY, 0, None) >= 0
        return seen / 4
""")


def sandbox_processes() -> set[int]:
    """Pids of every process of the sandbox uid (65534) on this host."""
    found = set()
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info.get("uids")
        if uids is not None and 65534 in (uids.real, uids.effective):
            found.add(proc.pid)
    return found


def descendants(pid: int) -> set[int]:
    try:
        return {child.pid for child in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()
