"""One sandbox worker: a zygote process in its own jail, spoken to over two pipes.

The server writes a request frame (4-byte length + JSON) on one pipe and reads frames on
the other: heartbeats while a batch makes progress, then the results, then a "settled"
frame once the zygote has emptied the worker's /tmp. Nothing from the jail is trusted:
frames are size-capped, parsed as JSON (never unpickled) and checked field by field. A
worker that stops answering (no frame within the per-sample timeout plus a margin) is
killed from here, with its whole jail.

Every request carries an id that the zygote echoes in its results and "settled" frames;
an answer to another request fails the worker. A request given up after it was written
(its caller cancelled, or an error while waiting) leaves the worker owing that answer:
`settle` reads it and throws it away (for at most one per-sample timeout) before the
worker serves again, or kills the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from typing import Any

from rft_grader.sandbox import metrics
from rft_grader.sandbox.outcome import ERROR_KINDS, MAX_ABS_SCORE, PythonOutcome
from rft_grader.sandbox.runtime import Runtime, worker_command
from rft_grader.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

WATCHDOG_MARGIN_SECONDS = 30.0
DRAIN_SECONDS = 10.0
"""The longest `settle` waits for the answer of a request given up after it was written;
one that may run longer is not waited for: the worker is restarted instead."""
DRAIN_MARGIN_SECONDS = 2.0
SETTLE_SECONDS = 120.0
GRACEFUL_STOP_SECONDS = 2.0
MAX_RESPONSE_BYTES = 1 << 30
ZYGOTE_KILL_REASONS = frozenset({"timeout", "cpu", "file_size", "signal", "tampered"})
_REQUEST_IDS = itertools.count(1)
"""Request ids, unique in this process (across workers and their restarts)."""


def _children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc; empty when it is gone)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(child) for child in f.read().split())
    except (OSError, ValueError):
        pass
    return found


async def _wait(proc: subprocess.Popen, seconds: float) -> bool:
    """Whether `proc` exited (and was reaped) within `seconds`."""
    try:
        await asyncio.to_thread(proc.wait, seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


class WorkerFailed(RuntimeError):
    """The worker died, stopped answering, broke the protocol or reported itself damaged;
    it has been killed. `reason` labels the kill in metrics."""

    def __init__(self, message: str, reason: str = "worker_died") -> None:
        super().__init__(message)
        self.reason = reason


class SandboxWorker:
    """A zygote process (jailed or not) serving one batch at a time."""

    def __init__(
        self,
        settings: SandboxSettings,
        runtime: Runtime,
        mode: str,
        bwrap: str | None,
        stage: str | None,
        name: str,
    ) -> None:
        self.settings, self.runtime, self.mode = settings, runtime, mode
        self.bwrap, self.stage, self.name = bwrap, stage, name
        self.proc: subprocess.Popen | None = None
        self.info: dict[str, Any] = {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.WriteTransport | None = None
        self._workdir: str | None = None
        self._stderr_task: asyncio.Task | None = None
        self._stderr_tail = b""
        self._unsettled: int | None = None
        """Id of the request whose "settled" frame is still to come."""
        self._owed: int | None = None
        """Id of a request written but given up before its results were read: they are still to come."""
        self._torn = False
        """A frame's length was read but not its body (a read was cancelled in between)."""
        self._owed_until = 0.0
        """When the owed request's first (or only) sample hits its wall-clock limit (monotonic)."""
        self.crash_streak = 0
        """Batches in a row in which every sample crashed (the pool replaces the worker past a bound)."""
        self.replace = False
        """Set by the pool: stop this worker instead of returning it (it restarts on next use)."""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._reader is not None

    @property
    def owes_answer(self) -> bool:
        """A request was written and given up before its answer was read (see `settle`)."""
        return self._owed is not None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # -- lifetime ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the zygote and wait until it has imported everything and said it is ready."""
        await self.stop()
        self.crash_streak, self.replace = 0, False
        loop = asyncio.get_running_loop()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        err_r, err_w = os.pipe()
        if self.mode != "bwrap":
            self._workdir = tempfile.mkdtemp(prefix="rft-sandbox-work-")
            if os.geteuid() == 0:
                os.chown(self._workdir, self.settings.sandbox_uid, self.settings.sandbox_gid)
        command = worker_command(
            self.settings, self.runtime, self.mode, self.bwrap, self.stage, self._workdir or "", (req_r, resp_w)
        )
        spawn = asyncio.ensure_future(
            asyncio.to_thread(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_w,
                pass_fds=(req_r, resp_w),
                env={},  # nothing of the server's environment reaches the jail
                start_new_session=True,
            )
        )
        try:
            # Shielded: a cancelled caller must not lose the process the thread is starting.
            self.proc = await asyncio.shield(spawn)
        except BaseException:
            with contextlib.suppress(BaseException):
                self.proc = await spawn
            for fd in (resp_r, req_w, err_r):
                os.close(fd)
            await _shielded_stop(self)
            raise
        finally:
            for fd in (req_r, resp_w, err_w):
                os.close(fd)
        self._reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(self._reader), os.fdopen(resp_r, "rb", buffering=0)
        )
        self._writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(req_w, "wb", buffering=0))
        self._stderr_task = asyncio.create_task(self._drain_stderr(err_r))
        try:
            ready = await asyncio.wait_for(self._read_frame(), self.settings.sandbox_start_seconds)
        except asyncio.CancelledError:
            await _shielded_stop(self)  # half started: its ready frame would answer the next request
            raise
        except (asyncio.TimeoutError, WorkerFailed, asyncio.IncompleteReadError, ValueError) as exc:
            await self.stop(graceful=False)
            if self._stderr_task is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._stderr_task, 5)
            detail = self._stderr_tail.decode("utf-8", "replace").strip()[-2000:]
            raise WorkerFailed(f"sandbox worker did not start ({type(exc).__name__}): {detail}") from None
        if not isinstance(ready, dict) or ready.get("ready") is not True:
            await self.stop(graceful=False)
            raise WorkerFailed("sandbox worker sent a malformed ready message")
        self.info = ready
        if ready.get("failed"):
            log.warning("sandbox worker could not import some modules", extra={"failed": str(ready["failed"])})
        metrics.WORKER_STARTS.inc()

    async def stop(self, graceful: bool = True) -> None:
        """Stop the worker and its whole jail, leaving no process (and no zombie) behind.

        Closing the request pipe lets an idle zygote reap its children and exit, and with it
        the jail. A busy or stuck one is killed inside-out: first the zygote, which is the
        jail's pid-namespace init (the kernel then kills every process of the jail, and
        bubblewrap reaps the zygote and exits), then whatever is left. Killing bubblewrap
        first would orphan the jail's processes to the host's init, which on some hosts
        (containers without a real init) never reaps them.
        """
        proc, self.proc = self.proc, None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if proc is not None:
            if not await _wait(proc, GRACEFUL_STOP_SECONDS if graceful else 0):
                for child in _children(proc.pid):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(child, signal.SIGKILL)
                if not await _wait(proc, GRACEFUL_STOP_SECONDS):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await asyncio.to_thread(proc.wait)
        self._reader = None
        self._unsettled = self._owed = None
        self._torn = False
        if self._workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)
            self._workdir = None

    async def _drain_stderr(self, fd: int) -> None:
        """Keep the tail of the jail's own stderr (start-up errors); graded code's goes to /dev/null."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0)
        )
        try:
            while chunk := await reader.read(1 << 16):
                self._stderr_tail = (self._stderr_tail + chunk)[-8192:]
        finally:
            transport.close()

    # -- protocol ----------------------------------------------------------------------

    async def _read_frame(self) -> Any:
        if self._reader is None:
            raise WorkerFailed("worker not running")
        try:
            (length,) = struct.unpack("!I", await self._reader.readexactly(4))
            # Cancelled from here on, the stream is mid-frame: `settle` restarts the worker.
            self._torn = True
            if length > MAX_RESPONSE_BYTES:
                raise WorkerFailed(f"worker sent an oversized frame ({length} bytes)")
            body = await self._reader.readexactly(length)
            self._torn = False
        except asyncio.IncompleteReadError:
            raise WorkerFailed("worker exited") from None
        if length > 1 << 20:
            return await asyncio.to_thread(json.loads, body)
        return json.loads(body)

    async def settle(self) -> bool:
        """Make the worker ready for its next request; False: stop and restart it.

        First the answer of a request given up after it was written, read and dropped when
        it comes within DRAIN_SECONDS (a longer wait holds the worker for nothing: restart
        it), then the "settled" frame once the zygote has emptied /tmp."""
        if self._torn:
            return False
        if self._owed is not None:
            give_up = self._owed_until + DRAIN_MARGIN_SECONDS
            if give_up - time.monotonic() > DRAIN_SECONDS:
                return False  # it may run long (an endless tool, a big batch): restart instead
            try:
                while True:
                    left = give_up - time.monotonic()
                    if left <= 0:
                        return False
                    frame = await asyncio.wait_for(self._read_frame(), left)
                    if not (isinstance(frame, dict) and frame.get("heartbeat") is True):
                        break
            except (asyncio.TimeoutError, WorkerFailed, ValueError, RecursionError):
                return False
            if not isinstance(frame, dict) or frame.get("id") != self._owed or "results" not in frame:
                return False
            if frame.get("damaged"):
                return False
            self._owed, self._unsettled = None, self._owed
        if self._unsettled is None:
            return self.alive
        try:
            frame = await asyncio.wait_for(self._read_frame(), SETTLE_SECONDS)
        except (asyncio.TimeoutError, WorkerFailed, ValueError, RecursionError):
            return False
        if not isinstance(frame, dict) or frame.get("clean") is not True or frame.get("id") != self._unsettled:
            return False
        self._unsettled = None
        return True

    async def grade(
        self,
        source: str,
        pairs: list[tuple[Any, Any]],
        body: bytes | None = None,
        timeout_seconds: float | None = None,
    ) -> list[PythonOutcome]:
        """Grade `pairs` in this worker. Raises WorkerFailed (worker killed) if it misbehaves.

        `body`: the request from `encode_request`; its id and `timeout_seconds` (which lowers
        the per-sample wall-clock limit) are added here. If this is cancelled, or fails
        otherwise, after the request was written, the worker owes its answer: `settle`
        drains it (or the pool restarts the worker) before the worker serves again."""
        if self._owed is not None or self._unsettled is not None or self._torn:
            # Not settled (a caller skipped `settle`): never let an old answer pass as a new one.
            if not await self.settle():
                await self.stop(graceful=False)
                raise WorkerFailed("sandbox worker still owed an earlier answer and was restarted")
        if not self.alive or self._writer is None:
            raise WorkerFailed("worker not running")
        if body is None:
            body = await encode_request(source, pairs)
        request_id = next(_REQUEST_IDS)
        fields: dict[str, Any] = {"id": request_id}
        limit = self.settings.sandbox_timeout_seconds
        if timeout_seconds is not None:
            limit = min(limit, timeout_seconds)
            fields["timeout_seconds"] = limit
        self._writer.write(with_header_fields(body, fields))
        self._owed = request_id
        self._owed_until = time.monotonic() + limit
        watchdog = self.settings.sandbox_timeout_seconds + WATCHDOG_MARGIN_SECONDS
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(self._read_frame(), watchdog)
                except asyncio.TimeoutError:
                    metrics.KILLS.labels("watchdog").inc()
                    raise WorkerFailed("sandbox worker stopped answering and was killed") from None
                except (ValueError, RecursionError):
                    raise WorkerFailed("sandbox worker sent malformed JSON") from None
                if isinstance(frame, dict) and frame.get("heartbeat") is True:
                    continue
                if not isinstance(frame, dict) or frame.get("id") != request_id:
                    # Defence in depth: an answer to another request (one given up earlier)
                    # must never be taken for this one's.
                    raise WorkerFailed("sandbox worker answered another request", "wrong_answer")
                self._owed = None
                outcomes = parse_results(frame, len(pairs), self.settings.sandbox_max_output_bytes + 4096)
                self._unsettled = request_id
                if frame.get("damaged"):
                    # A child ended before confining itself: the zygote or its fork server was
                    # tampered with (limits lowered from outside, ...). Nothing it runs is sound.
                    raise WorkerFailed(f"sandbox worker damaged: {str(frame['damaged'])[:500]}", "damaged")
                return outcomes
        except WorkerFailed:
            await _shielded_stop(self)
            raise


async def _shielded_stop(worker: SandboxWorker) -> None:
    """Kill `worker` now (not gracefully); a cancelled caller does not cut the kill short."""
    task = asyncio.ensure_future(worker.stop(graceful=False))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


def with_header_fields(body: bytes, fields: dict[str, Any]) -> bytes:
    """The request of `encode_request` with `fields` first in its header (a non-empty JSON
    object, whose bytes, with a big source, are not encoded again)."""
    (length,) = struct.unpack_from("!I", body)
    header = json.dumps(fields).encode()[:-1] + b", " + body[5 : 4 + length]
    return struct.pack("!I", len(header)) + header + body[4 + length :]


async def encode_request(source: str, pairs: list[tuple[Any, Any]], mode: str = "grade") -> bytes:
    """The two request frames: a JSON header {source, count[, mode]}, then the pairs as a
    JSON list (`SandboxWorker.grade` adds the request's id and time limit to the header).

    Python tools ("call", "describe") send one pair, (name, arguments) or (None, None).
    Big batches are encoded off the event loop. The zygote forwards the pairs to the
    grading child unparsed.
    """

    def encode() -> bytes:
        fields: dict[str, Any] = {"source": source, "count": len(pairs)}
        if mode != "grade":
            fields["mode"] = mode
        header = json.dumps(fields).encode()
        body = json.dumps([[sample, item] for sample, item in pairs], allow_nan=False).encode()
        return struct.pack("!I", len(header)) + header + struct.pack("!I", len(body)) + body

    if len(source) + len(pairs) * 256 > 1 << 16:
        return await asyncio.to_thread(encode)
    return encode()


def parse_results(frame: Any, count: int, max_message: int) -> list[PythonOutcome]:
    """Check the zygote's answer field by field; anything unexpected fails the worker."""
    if not isinstance(frame, dict) or not isinstance(frame.get("results"), list) or len(frame["results"]) != count:
        raise WorkerFailed("sandbox worker sent a malformed result")
    kills = frame.get("kills", {})
    if isinstance(kills, dict):
        for reason, n in kills.items():
            if reason in ZYGOTE_KILL_REASONS and isinstance(n, int) and 0 < n <= count * 2:
                metrics.KILLS.labels(reason).inc(n)
    outcomes = []
    for entry in frame["results"]:
        if not isinstance(entry, list) or len(entry) != 3:
            raise WorkerFailed("sandbox worker sent a malformed result entry")
        kind, score, message = entry
        if not isinstance(message, str):
            raise WorkerFailed("sandbox worker sent a non-text message")
        # Lone surrogates (from JSON escapes) cannot go into a protobuf string.
        message = message[:max_message].encode("utf-8", "replace").decode("utf-8")
        if kind is None:
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                raise WorkerFailed("sandbox worker sent a non-numeric score")
            score = float(score)
            if not math.isfinite(score) or abs(score) > MAX_ABS_SCORE:
                raise WorkerFailed("sandbox worker sent an invalid score")
            outcomes.append(PythonOutcome(score=score, error_kind=None, message=message))  # message: a tool's result
        elif kind in ERROR_KINDS and score is None:
            outcomes.append(PythonOutcome.error(kind, message))
        else:
            raise WorkerFailed("sandbox worker sent an unknown error kind")
    return outcomes
