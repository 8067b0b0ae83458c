"""Chat completions on base and fine-tuned models: each model gets its own vLLM
OpenAI-compatible server process (`vllm serve`), started on its first request and kept
while it is among the `max_models` most recently used. The API forwards requests to it
unchanged but for the model name, so sampling parameters, tools, logprobs and streaming
behave as vLLM documents them.

Why separate processes rather than the rollout's engine: the rollout serves the weights a
running job is training, and must not be paused or reloaded to answer a user's question;
a vLLM server per exported model is what a user would run by hand to evaluate it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import importlib.util
import logging
import os
import pathlib
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

import httpx
from rft_common import vllm_cpu

from rft_learner.http_api.errors import ApiError

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Loaded before any fork: the child between fork and exec must not take the loader's locks.
_LIBC = ctypes.CDLL(None, use_errno=True)
# Not the `vllm` console script: it reads the "vllm" distribution's metadata, which the
# CPU build (distributed as vllm-cpu) lacks.
VLLM_SERVER = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


@dataclasses.dataclass
class InferenceSettings:
    max_models: int = 1
    kv_cache_gib: int = 1
    gpu_memory_utilization: float = 0.3
    start_timeout_seconds: float = 900.0
    log_dir: pathlib.Path = pathlib.Path("./data/learner/inference")


@dataclasses.dataclass
class _Server:
    model_id: str
    directory: pathlib.Path
    port: int
    process: subprocess.Popen
    log_path: pathlib.Path
    ready: asyncio.Future
    api_key: str
    """A key of this process's own: other local processes cannot use the server behind the API's tenant checks."""
    in_use: int = 0
    last_used: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: pathlib.Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


class InferenceServers:
    """Started vLLM servers by model id."""

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self._servers: dict[str, _Server] = {}
        self._lock = asyncio.Lock()
        # No read timeout (a long generation streams for minutes); bounded connect and pool waits.
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(None, connect=10.0, pool=60.0),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=64),
        )

    def _command(self, model_id: str, directory: pathlib.Path, port: int) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        command = [*VLLM_SERVER, "--model", str(directory), "--served-model-name", model_id]
        command += ["--host", "127.0.0.1", "--port", str(port), "--uvicorn-log-level", "warning"]
        import torch

        if torch.cuda.is_available():
            command += ["--gpu-memory-utilization", f"{self.settings.gpu_memory_utilization:g}"]
        else:
            if self.settings.kv_cache_gib > 0:
                env["VLLM_CPU_KVCACHE_SPACE"] = str(self.settings.kv_cache_gib)
            # An idle server must not spin a core the trainer needs (rft_common.vllm_cpu).
            env.update(vllm_cpu.single_process_env(0, len(os.sched_getaffinity(0))))
            # vLLM 0.32's CPU worker cannot rewind a seeded request's generator when a
            # prompt's prefill is split (see the rollout's engine): prefills run whole.
            command += ["--no-enable-chunked-prefill"]
        return command, env

    async def _start(self, model_id: str, directory: pathlib.Path) -> _Server:
        if importlib.util.find_spec("vllm") is None:
            raise ApiError(
                503,
                "chat completions need vLLM in the learner's environment (pip install 'rft-learner[inference]',"
                " or the learner image built with LEARNER_EXTRAS=train,inference)",
                code="inference_unavailable",
            )
        port = _free_port()
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.settings.log_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", model_id) + ".log")
        command, env = self._command(model_id, directory, port)
        api_key = secrets.token_urlsafe(24)
        env["VLLM_API_KEY"] = api_key  # in the environment, not in `ps`
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, env=env, preexec_fn=_own_group_dying_with_us
            )
        ready = asyncio.get_running_loop().create_future()
        server = _Server(model_id, directory, port, process, log_path, ready, api_key)
        log.info("starting a vLLM server for chat completions", extra={"model": model_id, "port": port})
        return server

    async def _wait_ready(self, server: _Server) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                log.error(
                    "the vLLM server for %s exited with code %s:\n%s",
                    server.model_id,
                    server.process.returncode,
                    _log_tail(server.log_path),
                )
                raise ApiError(
                    503,
                    f"the inference server for {server.model_id} failed to start (the learner's log has the reason)",
                    param="model",
                    code="model_unavailable",
                )
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get(server.url + "/health", timeout=5)).status_code == 200:
                    return
            await asyncio.sleep(1.0)
        raise ApiError(
            503,
            f"the inference server for {server.model_id} did not load within"
            f" {self.settings.start_timeout_seconds:g} s; retry later",
            param="model",
            code="model_unavailable",
        )

    @contextlib.asynccontextmanager
    async def serving(self, model_id: str, directory: pathlib.Path):
        """Yield a ready server for the model (its `url` and `api_key`), marked in use meanwhile."""
        async with self._lock:
            server = self._servers.get(model_id)
            if server is not None and server.process.poll() is not None and server.ready.done():
                log.warning("the vLLM server for %s exited; starting it again", model_id)
                self._servers.pop(model_id)
                await asyncio.to_thread(_stop, server)
                server = None
            if server is None:
                await self._make_room()
                server = await self._start(model_id, directory)
                self._servers[model_id] = server
                asyncio.create_task(self._become_ready(server))
            server.in_use += 1
        try:
            await asyncio.shield(server.ready)
            server.last_used = time.monotonic()
            yield server
        finally:
            server.in_use -= 1
            server.last_used = time.monotonic()

    async def _become_ready(self, server: _Server) -> None:
        try:
            await self._wait_ready(server)
        except ApiError as exc:
            self._servers.pop(server.model_id, None)
            await asyncio.to_thread(_stop, server)
            server.ready.set_exception(exc)
            server.ready.exception()  # retrieved here: every waiter re-raises it
            return
        log.info("vLLM server ready", extra={"model": server.model_id, "port": server.port})
        server.ready.set_result(None)

    async def _make_room(self) -> None:
        while len(self._servers) >= self.settings.max_models:
            idle = [s for s in self._servers.values() if s.in_use == 0]
            if not idle:
                raise ApiError(
                    503,
                    f"all {self.settings.max_models} inference slot(s) are busy with other models; retry shortly"
                    " (the operator can raise --inference-max-models)",
                    code="inference_busy",
                )
            victim = min(idle, key=lambda s: s.last_used)
            self._servers.pop(victim.model_id)
            log.info("stopping an idle vLLM server to make room", extra={"model": victim.model_id})
            await asyncio.to_thread(_stop, victim)

    async def close(self) -> None:
        servers, self._servers = list(self._servers.values()), {}
        await asyncio.gather(*(asyncio.to_thread(_stop, s) for s in servers))
        await self.client.aclose()


def _own_group_dying_with_us() -> None:
    """In the child before exec: a process group of its own (stopped as one), and SIGTERM
    when the learner dies, however it dies, so no vLLM outlives it holding memory."""
    os.setsid()
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(server: _Server) -> None:
    """SIGTERM the server's process group (vLLM forks an engine core), SIGKILL after 30 s."""
    # The group, even when the leader is gone: its engine-core child may outlive it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
