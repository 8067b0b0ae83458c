"""Runs the HTTP API with uvicorn on the learner's event loop, next to its gRPC server.
The gRPC runtime owns SIGTERM and stops this server during its graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

log = logging.getLogger(__name__)


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        yield  # uvicorn would take SIGTERM from the gRPC server's handler


class HttpApiServer:
    """Bind (failing loudly when the port is taken), serve, stop."""

    def __init__(self, app, host: str, port: int, tls_cert_file: str = "", tls_key_file: str = "") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.tls = (tls_cert_file, tls_key_file) if tls_cert_file else None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/v1"

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise OSError(f"could not bind the HTTP API to {self.host}:{self.port}: {exc}") from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ssl_certfile=self.tls[0] if self.tls else None,
            ssl_keyfile=self.tls[1] if self.tls else None,
            timeout_graceful_shutdown=10,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the HTTP API stopped during start-up")
            await asyncio.sleep(0.05)
        log.info("HTTP API listening", extra={"base_url": self.base_url, "tls": bool(self.tls)})

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
