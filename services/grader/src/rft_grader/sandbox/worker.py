"""One sandbox worker: a zygote process in its own jail, spoken to over two pipes.

The server writes a request frame (4-byte length + JSON) on one pipe and reads frames on
the other: heartbeats while a batch makes progress, then the results, then a "settled"
frame once the zygote has emptied the worker's /tmp. Nothing from the jail is trusted:
frames are size-capped, parsed as JSON (never unpickled) and checked field by field. A
worker that stops answering (no frame within the per-sample timeout plus a margin) is
killed from here, with its whole jail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import struct
import subprocess
import tempfile
from typing import Any

from rft_grader.sandbox import metrics
from rft_grader.sandbox.outcome import ERROR_KINDS, MAX_ABS_SCORE, PythonOutcome
from rft_grader.sandbox.runtime import Runtime, worker_command
from rft_grader.sandbox.settings import SandboxSettings

log = logging.getLogger(__name__)

WATCHDOG_MARGIN_SECONDS = 30.0
SETTLE_SECONDS = 120.0
GRACEFUL_STOP_SECONDS = 2.0
MAX_RESPONSE_BYTES = 1 << 30
ZYGOTE_KILL_REASONS = frozenset({"timeout", "cpu", "file_size", "signal", "tampered"})


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
        self._unsettled = False
        self.crash_streak = 0
        """Batches in a row in which every sample crashed (the pool replaces the worker past a bound)."""
        self.replace = False
        """Set by the pool: stop this worker instead of returning it (it restarts on next use)."""

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._reader is not None

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
        try:
            self.proc = await asyncio.to_thread(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err_w,
                pass_fds=(req_r, resp_w),
                env={},  # nothing of the server's environment reaches the jail
                start_new_session=True,
            )
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
        self._unsettled = False
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
            if length > MAX_RESPONSE_BYTES:
                raise WorkerFailed(f"worker sent an oversized frame ({length} bytes)")
            body = await self._reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise WorkerFailed("worker exited") from None
        if length > 1 << 20:
            return await asyncio.to_thread(json.loads, body)
        return json.loads(body)

    async def settle(self) -> bool:
        """Wait until the zygote has emptied /tmp after the last batch; False: restart it."""
        if not self._unsettled:
            return self.alive
        try:
            frame = await asyncio.wait_for(self._read_frame(), SETTLE_SECONDS)
        except (asyncio.TimeoutError, WorkerFailed, ValueError):
            return False
        self._unsettled = False
        return isinstance(frame, dict) and frame.get("clean") is True

    async def grade(self, source: str, pairs: list[tuple[Any, Any]], body: bytes | None = None) -> list[PythonOutcome]:
        """Grade `pairs` in this worker. Raises WorkerFailed (worker killed) if it misbehaves."""
        if not self.alive or self._writer is None:
            raise WorkerFailed("worker not running")
        if body is None:
            body = await encode_request(source, pairs)
        self._writer.write(body)
        watchdog = self.settings.sandbox_timeout_seconds + WATCHDOG_MARGIN_SECONDS
        try:
            while True:
                try:
                    frame = await asyncio.wait_for(self._read_frame(), watchdog)
                except asyncio.TimeoutError:
                    metrics.KILLS.labels("watchdog").inc()
                    raise WorkerFailed("sandbox worker stopped answering and was killed") from None
                except ValueError:
                    raise WorkerFailed("sandbox worker sent malformed JSON") from None
                if isinstance(frame, dict) and frame.get("heartbeat") is True:
                    continue
                outcomes = parse_results(frame, len(pairs), self.settings.sandbox_max_output_bytes + 4096)
                self._unsettled = True
                if frame.get("damaged"):
                    # A child ended before confining itself: the zygote or its fork server was
                    # tampered with (limits lowered from outside, ...). Nothing it runs is sound.
                    raise WorkerFailed(f"sandbox worker damaged: {str(frame['damaged'])[:500]}", "damaged")
                return outcomes
        except WorkerFailed:
            await self.stop(graceful=False)
            raise


async def encode_request(
    source: str, pairs: list[tuple[Any, Any]], mode: str = "grade", timeout_seconds: float | None = None
) -> bytes:
    """The two request frames: a JSON header {source, count[, mode, timeout_seconds]}, then
    the pairs as a JSON list.

    Python tools ("call", "describe") send one pair, (name, arguments) or (None, None), and
    may lower the wall-clock limit. Big batches are encoded off the event loop. The zygote
    forwards the pairs to the grading child unparsed.
    """

    def encode() -> bytes:
        fields: dict[str, Any] = {"source": source, "count": len(pairs)}
        if mode != "grade":
            fields["mode"] = mode
        if timeout_seconds is not None:
            fields["timeout_seconds"] = timeout_seconds
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
