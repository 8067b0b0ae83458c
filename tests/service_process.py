"""Start a service's real console entry point as a subprocess on free loopback ports,
wait until grpc.health.v1 reports SERVING, and stop it with SIGTERM."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A running service. `address` is host:port of gRPC; `metrics_url` its /metrics."""

    def __init__(
        self,
        command: str,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 60.0,
        wait_serving: bool = True,
        channel_credentials: grpc.ChannelCredentials | None = None,
        launcher: list[str] | None = None,
    ) -> None:
        self.command = command
        self.launcher = launcher or []  # e.g. torchrun's arguments, with --no-python
        self.port = free_port()
        self.metrics_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        # The learner's OpenAI-compatible HTTP API, on a port of its own per process.
        self.http_port = free_port() if command == "rft-learner" else 0
        self.base_url = f"http://127.0.0.1:{self.http_port}/v1"
        self.extra_args = extra_args or []
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.wait_serving = wait_serving
        self.channel_credentials = channel_credentials
        self.log = tempfile.NamedTemporaryFile(prefix=f"{command}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> ServiceProcess:
        args = [
            *self.launcher,
            str(BIN / self.command),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-host",
            "127.0.0.1",
            "--metrics-port",
            str(self.metrics_port),
            "--log-format",
            "text",
            "--grace-seconds",
            "20",
            *(["--http-host", "127.0.0.1", "--http-port", str(self.http_port)] if self.http_port else []),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=self.env)
        if self.wait_serving:
            try:
                self.wait_until_serving()
            except BaseException:
                # `with` calls no __exit__ when __enter__ raises: a slow start would leave
                # the process (and vLLM's engine, gigabytes) running for the session.
                self.kill()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def kill(self) -> None:
        """SIGKILL the service and every process it started: vLLM's engine processes
        outlive a killed parent and would keep their memory (gigabytes each)."""
        import psutil

        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass

    def restarted(self) -> ServiceProcess:
        """A new process of the same service on the same ports (not started yet), to
        stand in for this one after it was killed."""
        replacement = ServiceProcess(
            self.command,
            self.extra_args,
            ready_timeout=self.ready_timeout,
            wait_serving=self.wait_serving,
            channel_credentials=self.channel_credentials,
            launcher=self.launcher,
        )
        replacement.env = self.env
        replacement.port, replacement.metrics_port = self.port, self.metrics_port
        replacement.address, replacement.metrics_url = self.address, self.metrics_url
        return replacement

    def channel(self) -> grpc.Channel:
        if self.channel_credentials is not None:
            return grpc.secure_channel(self.address, self.channel_credentials)
        return grpc.insecure_channel(self.address)

    def logs(self) -> str:
        return pathlib.Path(self.log.name).read_text(errors="replace")

    def wait_until_serving(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_error = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                with self.channel() as channel:
                    response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                last_error = str(exc.code())
            time.sleep(0.2)
        raise TimeoutError(f"{self.command} not SERVING after {self.ready_timeout}s ({last_error}):\n{self.logs()}")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()

    def terminate(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()
