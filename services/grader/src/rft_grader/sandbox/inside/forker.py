"""The fork server: the process every grading child is forked from.

A child is a copy of the process it was forked from: whatever that process ever held
(a request, a grader's source, samples, a results list, freed heap pages that still hold
them) the graded code can read in its own memory. So grading children are not forked
from the zygote, which reads every batch, but from this process: a copy of the zygote
made right after start-up (packages imported, seccomp filter built, nothing served yet)
that never receives a batch. It only forks on request and reaps on request, so its
memory stays what it was at start-up, and each child's memory holds the child's own
batch and nothing older.

Protocol on a SOCK_SEQPACKET socketpair (one message per request, answers in order):
  b"F"           -> b"F" + pid, with the child's job-pipe write end and result-pipe read
                    end attached (SCM_RIGHTS)
  b"W" + pid     -> b"W" + wait status + CPU seconds (user + system), once it has exited
  end of stream  -> kill and reap every child not reaped yet, exit
A child is reaped only when the zygote asks, so its pid cannot be reused while the
zygote may still signal it. Any failure here (a fork refused, ...) ends this process;
the zygote then fails and the server restarts the worker.
"""

from __future__ import annotations

import os
import signal
import socket
import struct

from child import PR_SET_PDEATHSIG, Child

PID = struct.Struct("!i")
WAITED = struct.Struct("!id")  # wait status, CPU seconds


class ForkerFailed(RuntimeError):
    """The fork server is gone or answered out of protocol."""


class Forker:
    """The zygote's handle on its fork server."""

    def __init__(self, zygote, close_fds: tuple[int, ...]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        zygote_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            status = 70
            try:
                ours.close()
                for fd in close_fds:  # the server's pipes: only the zygote speaks to the server
                    os.close(fd)
                zygote.libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() != zygote_pid:
                    os._exit(0)  # the zygote died before the line above
                status = serve_forks(zygote, theirs)
            finally:
                os._exit(status)
        theirs.close()
        self.pid, self.sock = pid, ours
        self.requested = False
        self.ready: tuple[int, int, int, int] | None = None

    def request(self) -> None:
        """Ask for a child now; `child()` collects it later (the fork runs meanwhile)."""
        if not self.requested and self.ready is None:
            self.sock.send(b"F")
            self.requested = True

    def child(self) -> tuple[int, int, int, int]:
        """(pid, job-pipe write end, result-pipe read end, pidfd) of a fresh child."""
        self.request()
        self._collect()
        child, self.ready = self.ready, None
        return child

    def wait(self, pid: int) -> tuple[int, float]:
        """Reap `pid` (it has exited or been killed): its wait status and CPU seconds."""
        self._collect()  # an answer to an earlier F comes first
        self.sock.send(b"W" + PID.pack(pid))
        answer = self.sock.recv(64)
        if answer[:1] != b"W" or len(answer) != 1 + WAITED.size:
            raise ForkerFailed("fork server failed")
        return WAITED.unpack(answer[1:])

    def close(self) -> None:
        self.sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def _collect(self) -> None:
        if not self.requested:
            return
        self.requested = False
        answer, fds, _flags, _addr = socket.recv_fds(self.sock, 64, 2)
        if answer[:1] != b"F" or len(answer) != 1 + PID.size or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise ForkerFailed("fork server failed")
        (pid,) = PID.unpack(answer[1:])
        # A pidfd names this process and no other, even once its pid could be reused.
        self.ready = (pid, fds[0], fds[1], os.pidfd_open(pid))


def serve_forks(zygote, sock: socket.socket) -> int:
    children: set[int] = set()
    while True:
        request = sock.recv(64)
        if not request:
            break
        if request == b"F":
            job_r, job_w = os.pipe()
            result_r, result_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                status = 70
                try:
                    sock.close()
                    os.close(job_w)
                    os.close(result_r)
                    status = Child(zygote, job_r, result_w).main()
                finally:
                    os._exit(status)
            os.close(job_r)
            os.close(result_w)
            try:
                os.setpgid(pid, pid)
            except OSError:
                pass  # the child did it first
            children.add(pid)
            socket.send_fds(sock, [b"F" + PID.pack(pid)], [job_w, result_r])
            os.close(job_w)
            os.close(result_r)
        elif request[:1] == b"W" and len(request) == 1 + PID.size:
            (pid,) = PID.unpack(request[1:])
            if pid not in children:
                return 72
            _, status, usage = os.wait4(pid, 0)
            children.discard(pid)
            sock.send(b"W" + WAITED.pack(status, usage.ru_utime + usage.ru_stime))
        else:
            return 72
    for pid in children:  # the zygote is stopping: nothing of ours outlives it
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return 0
