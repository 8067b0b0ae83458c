"""A temporary rollout service: `rft-rollout serve --model DIR` on a free loopback port,
ready once grpc.health.v1 reports SERVING, stopped with SIGTERM. `rft evals run` starts
one per model; the learner's HTTP API starts one for an evaluation run of tool-using
episodes (the rollout runs the episode loop and reaches the tool servers). The process
inherits the caller's environment, so RFT_ROLLOUT_* variables configure it as they
configure any rollout service.

The service runs in a process group of its own (a Ctrl-C reaches only the caller, which
stops it with SIGTERM) and, on Linux, gets SIGTERM when the thread that started it dies
(PR_SET_PDEATHSIG), however it dies: a SIGKILLed learner leaves no vLLM behind holding a
GPU. Start it from a thread that lives as long as it (the event loop's).

A failed start's details (the command, the exit code, the log's path and its last lines)
belong to whoever runs the machine: `detailed_errors=True` (the CLI: the user's own
machine) puts them in the RolloutStartError and keeps the log; `detailed_errors=False`
(a service answering tenants: the log names other tenants' tool servers, targets and
paths) logs them under a reference id, deletes the log, and raises a generic error that
carries only the reference."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

LOG_TAIL_LINES = 30
PR_SET_PDEATHSIG = 1  # linux/prctl.h

log = logging.getLogger(__name__)
# Looked up here, not in the forked child (no dynamic-linker work between fork and exec).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class RolloutStartError(Exception):
    """The rollout service could not be started (`launch`: the command itself failed) or
    did not become SERVING. `message` is what the caller may show: the details, or with
    `reference` set a generic sentence naming the reference its details were logged under."""

    def __init__(self, message: str, launch: bool = False, reference: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.launch = launch
        self.reference = reference


def default_rollout_command() -> str:
    """`rft-rollout` beside this interpreter (the same venv), else on PATH."""
    beside = pathlib.Path(sys.executable).parent / "rft-rollout"
    if beside.exists():
        return str(beside)
    return shutil.which("rft-rollout") or "rft-rollout"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _own_group_dying_with_parent(parent: int) -> None:
    """In the child, before exec: a session (so a process group) of its own, and on Linux
    SIGTERM when the parent thread dies. A parent already gone before prctl took effect
    (the child then has another parent) ends the child at once."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os._exit(1)


class RolloutProcess:
    """Async context manager yielding the address of a serving rollout for `model`."""

    def __init__(
        self,
        command: str,
        model: str,
        extra_args: str = "",
        ready_timeout: float = 900.0,
        tool_servers_file: str = "",
        timeout_hint: str = "raise the ready timeout?",
        detailed_errors: bool = True,
    ) -> None:
        self.command = shlex.split(command)
        self.detailed_errors = detailed_errors
        self.model = model
        self.extra_args = shlex.split(extra_args)
        if tool_servers_file:
            self.extra_args += ["--tool-servers-file", tool_servers_file]
        self.ready_timeout = ready_timeout
        self.timeout_hint = timeout_hint
        self.address = ""
        self.proc: subprocess.Popen | None = None
        self.log_path = ""

    async def __aenter__(self) -> str:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        args = [
            *self.command,
            "serve",
            "--model",
            self.model,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--log-format",
            "text",
            *self.extra_args,
        ]
        handle, self.log_path = tempfile.mkstemp(prefix="rft-evals-rollout-", suffix=".log")
        try:
            # Own session (Ctrl-C reaches only the CLI, which then stops the service with
            # SIGTERM), and SIGTERM should this process die first.
            self.proc = subprocess.Popen(
                args,
                stdout=handle,
                stderr=subprocess.STDOUT,
                preexec_fn=functools.partial(_own_group_dying_with_parent, os.getpid()),
            )
        except OSError as exc:
            os.close(handle)
            pathlib.Path(self.log_path).unlink(missing_ok=True)  # nothing ran, nothing to read
            raise self._failed(
                RolloutStartError(
                    f"cannot start the rollout service ({shlex.join(args[:1])}: {exc.strerror})", launch=True
                )
            ) from None
        os.close(handle)
        try:
            await self._wait_serving()
        except RolloutStartError as exc:
            await self.stop()
            raise self._failed(exc) from None
        except BaseException:
            await self.stop()
            if not self.detailed_errors:
                pathlib.Path(self.log_path).unlink(missing_ok=True)
            raise
        return self.address

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
        if exc[0] is None:
            pathlib.Path(self.log_path).unlink(missing_ok=True)

    def _failed(self, exc: RolloutStartError) -> RolloutStartError:
        """The error to raise for a failed start: `exc` itself with detailed_errors; else
        its details logged under a new reference, the log deleted, and a generic error."""
        if self.detailed_errors:
            return exc
        reference = uuid.uuid4().hex[:12]
        log.error(
            "rollout service start failed (reference %s): %s",
            reference,
            exc.message,
            extra={"reference": reference, "model": self.model},
        )
        pathlib.Path(self.log_path).unlink(missing_ok=True)
        return RolloutStartError(
            f"the rollout service did not start (reference {reference}; the details are in the operator's log)",
            launch=exc.launch,
            reference=reference,
        )

    def log_tail(self) -> str:
        try:
            lines = pathlib.Path(self.log_path).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("  | " + line for line in lines[-LOG_TAIL_LINES:])

    async def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        status = "not started"
        async with grpc.aio.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RolloutStartError(
                        f"the rollout service for {self.model} exited with code {self.proc.returncode} "
                        f"before serving (log {self.log_path}):\n{self.log_tail()}"
                    )
                try:
                    response = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if response.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                except grpc.aio.AioRpcError as exc:
                    status = exc.code().name
                await asyncio.sleep(0.5)
        raise RolloutStartError(
            f"the rollout service for {self.model} was not SERVING after {self.ready_timeout:.0f}s "
            f"(last health: {status}; log {self.log_path}); {self.timeout_hint}\n{self.log_tail()}"
        )

    async def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM (the service drains in-flight calls), then SIGKILL after `timeout`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
