"""The gRPC server runtime every RFT service uses.

`GrpcServer` owns one grpc.aio server with: the observing (metrics, request id) and
optional token-auth interceptors, grpc.health.v1 (NOT_SERVING until the service says
it is ready), server reflection, optional TLS / mutual TLS, max message sizes, a
Prometheus /metrics endpoint on its own port, and graceful shutdown: on SIGTERM or
SIGINT it reports NOT_SERVING, stops accepting RPCs, lets in-flight RPCs finish within
the grace period, and returns so the process can exit 0.

    async with GrpcServer(config, "grader") as server:
        server.add_service(add_GraderServiceServicer_to_server, servicer, GRADER_SERVICE)
        await server.start()
        server.set_serving(True)
        await server.wait_for_termination()
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import signal
from collections.abc import Callable
from typing import Any, Literal

import grpc
import pydantic
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import Gauge, start_http_server

from rft_common.api_keys import ApiKeys
from rft_common.config import Config
from rft_common.interceptors import ObservingInterceptor, TokenAuthInterceptor

log = logging.getLogger(__name__)

KEEPALIVE_ACCEPTED_MS = 1000
"""The most frequent keepalive ping a server accepts from a client with calls in flight."""
SERVING_GAUGE = Gauge("rft_service_serving", "1 while the service reports SERVING, else 0.", ["service"])


class ServerConfig(Config):
    """Network, security and runtime settings shared by every service."""

    host: str = "0.0.0.0"
    """Address the gRPC server binds to ("127.0.0.1" for loopback only)."""
    port: int = pydantic.Field(50051, ge=0, le=65535)
    """gRPC port; 0 picks a free port (it is logged)."""
    metrics_host: str = "0.0.0.0"
    """Address the Prometheus /metrics HTTP endpoint binds to."""
    metrics_port: int = pydantic.Field(9100, ge=0, le=65535)
    """Port of the Prometheus /metrics HTTP endpoint; 0 disables it."""
    tls_cert_file: str = ""
    """PEM server certificate; with tls_key_file it turns TLS on."""
    tls_key_file: str = ""
    """PEM private key of tls_cert_file."""
    tls_client_ca_file: str = ""
    """PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."""
    auth_token: str = ""
    """When set, every RPC but health and reflection needs 'authorization: Bearer <token>'."""
    auth_token_file: str = ""
    """File holding the bearer token (e.g. a mounted Kubernetes Secret); overrides auth_token."""
    max_message_bytes: int = pydantic.Field(64 * 1024 * 1024, ge=1024)
    """Largest gRPC message accepted or sent, in bytes."""
    grace_seconds: float = pydantic.Field(30.0, ge=0)
    """On SIGTERM, how long in-flight RPCs may run before they are cancelled."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level."""
    log_format: Literal["json", "text"] = "json"
    """Log format: one JSON object per line, or plain text."""

    @pydantic.model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    def resolved_auth_token(self) -> str:
        """The bearer token, read from auth_token_file when that is set."""
        if self.auth_token_file:
            return pathlib.Path(self.auth_token_file).read_text().strip()
        return self.auth_token


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the config, or None for plaintext."""
    if not config.tls_cert_file:
        return None
    key = pathlib.Path(config.tls_key_file).read_bytes()
    cert = pathlib.Path(config.tls_cert_file).read_bytes()
    client_ca = pathlib.Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class GrpcServer:
    """One service's gRPC server with health, reflection, metrics and graceful stop."""

    def __init__(self, config: ServerConfig, name: str, keys: ApiKeys | None = None) -> None:
        """`keys`: tenant API keys, for the services whose RPCs act for a tenant (grader,
        learner); elsewhere only the service token opens the door."""
        self.config = config
        self.name = name
        interceptors: list[grpc.aio.ServerInterceptor] = [ObservingInterceptor()]
        token = config.resolved_auth_token()
        if token or (keys is not None and keys.required):
            interceptors.append(TokenAuthInterceptor(token, keys))
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
            ("grpc.so_reuseport", 0),
            # The suite's clients ping every KEEPALIVE_SECONDS while a call is in flight
            # (client.py); gRPC's default would count those pings as abuse after two
            # and drop the connection under a long Generate.
            ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_ACCEPTED_MS),
        ]
        self.server = grpc.aio.server(interceptors=interceptors, options=options)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self._metrics_http: Any = None
        self._stop_requested = asyncio.Event()
        self.port = 0
        self.metrics_port = 0

    async def __aenter__(self) -> GrpcServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_service(self, add_to_server: Callable[[Any, Any], None], servicer: Any, full_name: str) -> None:
        """Register a servicer; `full_name` is e.g. 'rft.grader.v1.GraderService'."""
        add_to_server(servicer, self.server)
        self._service_names.append(full_name)

    async def start(self) -> None:
        """Bind, start serving RPCs (health says NOT_SERVING until set_serving)."""
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        address = f"{self.config.host}:{self.config.port}"
        credentials = server_credentials(self.config)
        if credentials is None:
            self.port = self.server.add_insecure_port(address)
        else:
            self.port = self.server.add_secure_port(address, credentials)
        if self.port == 0:
            raise OSError(f"could not bind gRPC port {address}")
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.config.metrics_port:
            self._metrics_http, _ = start_http_server(self.config.metrics_port, addr=self.config.metrics_host)
            self.metrics_port = self._metrics_http.server_port
        log.info(
            "%s listening",
            self.name,
            extra={
                "grpc_address": f"{self.config.host}:{self.port}",
                "tls": credentials is not None,
                "mutual_tls": bool(self.config.tls_client_ca_file),
                "metrics_port": self.metrics_port,
                "services": ",".join(self._service_names),
            },
        )

    async def _set_health(self, status: int) -> None:
        for service in ["", *self._service_names]:
            await self.health.set(service, status)

    async def set_serving(self, serving: bool, reason: str = "") -> None:
        """Report SERVING (ready for traffic) or NOT_SERVING through grpc.health.v1."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._set_health(status)
        SERVING_GAUGE.labels(self.name).set(1 if serving else 0)
        log.info("%s %s", self.name, "SERVING" if serving else "NOT_SERVING", extra={"reason": reason})

    def request_stop(self) -> None:
        """Ask wait_for_termination to return (what SIGTERM does)."""
        self._stop_requested.set()

    async def wait_for_termination(self) -> None:
        """Serve until SIGTERM / SIGINT, then drain and stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop_requested.wait()
        log.info("%s shutting down", self.name, extra={"grace_seconds": self.config.grace_seconds})
        await self.stop()

    async def stop(self) -> None:
        """NOT_SERVING, refuse new RPCs, drain in-flight RPCs within the grace period."""
        await self.health.enter_graceful_shutdown()
        SERVING_GAUGE.labels(self.name).set(0)
        await self.server.stop(self.config.grace_seconds)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http = None
        log.info("%s stopped", self.name)
