"""Worker processes ("lanes") for library graders, with a deadline per sample.

Each lane is one spawned process running cpu_tasks.worker_main. A job goes to a lane
as a list of argument tuples; the lane answers one message per sample, in order. If
no answer arrives within `sample_timeout` the sample being worked on is the culprit:
the lane is killed (SIGKILL), that sample gets a TIMEOUT error, a fresh lane starts
and the rest of the job continues there. A lane that dies (segfault, OOM kill) marks
its current sample CRASHED the same way. The server process never runs these
libraries itself, so no input can hang or crash it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import subprocess
import sys
from multiprocessing.connection import Connection

from rft_grader.domain import ErrorKind, GradeError

log = logging.getLogger(__name__)

_START_TIMEOUT = 120.0
_MIN_CHUNK = 32  # below this, splitting a batch across lanes costs more than it saves


class LaneResult:
    """A worker's answer for one sample: a score and metrics, or an error."""

    __slots__ = ("score", "metrics", "error")

    def __init__(self, score: float = 0.0, metrics: dict[str, float] | None = None, error: GradeError | None = None):
        self.score = score
        self.metrics = metrics or {}
        self.error = error


def _result(message: tuple) -> LaneResult:
    if message[0] == "ok":
        return LaneResult(message[1], message[2])
    return LaneResult(error=GradeError(ErrorKind(message[1]), message[2]))


class _Lane:
    def __init__(self, memory_bytes: int, nltk_data_dir: str, sample_timeout: float) -> None:
        self.memory_bytes = memory_bytes
        self.nltk_data_dir = nltk_data_dir
        self.sample_timeout = sample_timeout
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.warm = False

    async def start(self) -> None:
        # A fresh interpreter via subprocess, not multiprocessing: no server state is
        # copied in, and the parent's __main__ is not re-imported.
        parent, child = socket.socketpair()
        command = [
            sys.executable,
            "-c",
            "import sys; from rft_grader.cpu_tasks import worker_from_fd; "
            "worker_from_fd(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])",
            str(child.fileno()),
            str(self.memory_bytes),
            self.nltk_data_dir,
        ]
        try:
            self.process = await asyncio.to_thread(
                subprocess.Popen, command, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL
            )
        finally:
            child.close()
        self.conn = Connection(parent.detach())
        self.warm = False

    async def ensure_warm(self) -> None:
        """Wait until the worker has imported its libraries (it then says "ready"), so
        import time never counts against a sample's deadline."""
        if self.process is None:
            await self.start()
        if self.warm:
            return
        messages = await self._receive(_START_TIMEOUT)
        if not isinstance(messages, list) or not messages or messages[0] != ("ready",):
            await self.stop()
            raise RuntimeError(f"grader worker process did not start ({messages!r})")
        self.warm = True

    async def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            await asyncio.to_thread(self.process.wait)
            self.process = None

    async def _receive(self, timeout: float) -> list[tuple] | str:
        """Every message available within `timeout`: a list, or 'timeout' / 'died'."""
        loop = asyncio.get_running_loop()
        readable = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await asyncio.wait_for(readable, timeout)
        except asyncio.TimeoutError:
            return "timeout"
        finally:
            loop.remove_reader(fd)
        messages = []
        try:
            while self.conn.poll(0):
                messages.append(self.conn.recv())
        except (EOFError, OSError):
            return messages or "died"
        return messages

    def _death_reason(self) -> str:
        code = self.process.returncode if self.process is not None else None
        if code is not None and code < 0:
            return f"the worker process was killed by signal {-code} (out of memory or a crash)"
        return f"the worker process exited (code {code})"

    def kill(self) -> None:
        """Stop at once (no await): used when the caller is cancelled mid-job, since the
        worker's late answers would otherwise be read as the next job's."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.process is not None:
            self.process.kill()
            self.process.wait()  # returns at once after SIGKILL; leaves no zombie
            self.process = None

    async def run(self, task: str, jobs: list[tuple]) -> list[LaneResult]:
        try:
            return await self._run(task, jobs)
        except BaseException:
            self.kill()
            raise

    async def _run(self, task: str, jobs: list[tuple]) -> list[LaneResult]:
        results: list[LaneResult] = []
        while len(results) < len(jobs):
            await self.ensure_warm()
            remaining = jobs[len(results) :]
            try:
                await asyncio.to_thread(self.conn.send, (task, remaining))
            except (BrokenPipeError, OSError):
                await self.stop()
                continue
            done = 0
            deadline = self.sample_timeout
            while done < len(remaining):
                messages = await self._receive(deadline)
                if isinstance(messages, list):
                    answers = [m for m in messages if m != ("loading",)]
                    # A one-time library load (WordNet) does not count against the sample.
                    deadline = _START_TIMEOUT if len(answers) < len(messages) else self.sample_timeout
                    results.extend(_result(m) for m in answers)
                    done += len(answers)
                    continue
                if messages == "timeout":
                    error = GradeError(
                        ErrorKind.TIMEOUT, f"grading took longer than {self.sample_timeout:g} s; the worker was killed"
                    )
                else:
                    await asyncio.to_thread(self.process.wait)
                    error = GradeError(ErrorKind.CRASHED, self._death_reason())
                log.warning("grader worker lost", extra={"task": task, "reason": error.message})
                results.append(LaneResult(error=error))
                await self.stop()
                break
        return results


class CpuLanes:
    """A pool of lanes owned by the app's lifespan: `async with CpuLanes(...) as lanes`."""

    def __init__(self, size: int, memory_bytes: int, nltk_data_dir: str, sample_timeout: float) -> None:
        self._lanes = [_Lane(memory_bytes, nltk_data_dir, sample_timeout) for _ in range(size)]
        self._idle: asyncio.Queue[_Lane] = asyncio.Queue()

    async def __aenter__(self) -> CpuLanes:
        """Spawn the workers. They import their libraries in the background (seconds on a
        busy machine); a job that arrives earlier waits for that outside its deadline,
        so the server need not hold back SERVING for it."""
        try:
            await asyncio.gather(*(lane.start() for lane in self._lanes))
        except BaseException:
            await self.__aexit__()
            raise
        for lane in self._lanes:
            self._idle.put_nowait(lane)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(lane.stop() for lane in self._lanes))

    async def _run_on_idle_lane(self, task: str, jobs: list[tuple]) -> list[LaneResult]:
        lane = await self._idle.get()
        try:
            return await lane.run(task, jobs)
        finally:
            self._idle.put_nowait(lane)

    async def run(self, task: str, jobs: list[tuple]) -> list[LaneResult]:
        """Score `jobs` with cpu_tasks.TASKS[task]; one result per job, in order."""
        if not jobs:
            return []
        chunks = max(1, min(len(self._lanes), len(jobs) // _MIN_CHUNK))
        size = math.ceil(len(jobs) / chunks)
        parts = await asyncio.gather(
            *(self._run_on_idle_lane(task, jobs[i : i + size]) for i in range(0, len(jobs), size))
        )
        return [result for part in parts for result in part]
