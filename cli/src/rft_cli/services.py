"""Channels to the RFT services, and RPC errors turned into messages that say what to fix."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any

import grpc
from rft_common.client import aio_channel

from rft_cli.output import EXIT_FAILED, EXIT_UNREACHABLE, CliError

DEFAULT_LEARNER = "127.0.0.1:50053"
DEFAULT_GRADER = "127.0.0.1:50052"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One service the CLI talks to, and how the user would fix not reaching it."""

    service: str
    address: str
    flag: str
    env: str = ""
    start_hint: str = ""

    def how_to_reach(self) -> str:
        where = f"{self.flag} HOST:PORT" + (f" (env {self.env})" if self.env else "")
        start = f"start it with `{self.start_hint}`, or " if self.start_hint else ""
        return f"{start}point {where} at a running one"


def learner_endpoint(address: str) -> Endpoint:
    return Endpoint("learner", address, "--learner", "RFT_LEARNER_ADDRESS", "make serve-learner")


def grader_endpoint(address: str) -> Endpoint:
    return Endpoint("grader", address, "--grader", "RFT_GRADER_ADDRESS", "make serve-grader")


def rollout_endpoint(address: str) -> Endpoint:
    return Endpoint("rollout", address, "--rollout", "", 'make serve-rollout ARGS="--model DIR"')


def env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


class ServiceError(Exception):
    """An RPC failed; `code` is the CLI exit code and `str()` the message for the user."""

    def __init__(self, endpoint: Endpoint, method: str, exc: grpc.aio.AioRpcError, reached: bool) -> None:
        self.endpoint = endpoint
        self.method = method
        self.status = exc.code()
        self.details = exc.details() or ""
        self.reached = reached
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        unreachable = self.status == grpc.StatusCode.UNAVAILABLE and not self.reached
        return EXIT_UNREACHABLE if unreachable else EXIT_FAILED

    def _describe(self) -> str:
        name, address, details = self.endpoint.service, self.endpoint.address, self.details
        if self.status == grpc.StatusCode.UNAVAILABLE and not self.reached:
            return f"cannot reach the {name} at {address} ({details}); {self.endpoint.how_to_reach()}"
        if self.status == grpc.StatusCode.UNAUTHENTICATED:
            return f"the {name} at {address} refused the credentials ({details}); pass --token (env RFT_TOKEN)"
        if self.status == grpc.StatusCode.UNIMPLEMENTED:
            return f"the {name} at {address} does not implement {self.method} ({details}); is it an older version?"
        if self.status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return f"the {name} at {address} did not answer {self.method} in time ({details})"
        return f"the {name} refused {self.method} ({self.status.name}): {details}"


class Stub:
    """A generated stub whose failed calls raise ServiceError naming the service.

    Unary calls are awaited as usual; server streams are iterated with `async for`.
    """

    def __init__(self, endpoint: Endpoint, channel: grpc.aio.Channel, stub_class: type) -> None:
        self._endpoint = endpoint
        self._channel = channel
        self._stub = stub_class(channel)

    def _error(self, method: str, exc: grpc.aio.AioRpcError) -> ServiceError:
        state = self._channel.get_state(try_to_connect=False)
        reached = state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.IDLE)
        if exc.code() == grpc.StatusCode.UNAVAILABLE and "failed to connect" in (exc.details() or "").lower():
            reached = False
        return ServiceError(self._endpoint, method, exc, reached)

    def __getattr__(self, method: str):
        multicallable = getattr(self._stub, method)

        def call(*args: Any, **kwargs: Any):
            result = multicallable(*args, **kwargs)
            if hasattr(result, "__aiter__"):
                return self._stream(method, result)
            return self._unary(method, result)

        return call

    async def _unary(self, method: str, call) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise self._error(method, exc) from None

    async def _stream(self, method: str, call) -> AsyncIterator[Any]:
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise self._error(method, exc) from None
        finally:
            call.cancel()


class Connections:
    """Channels opened on first use, closed together at the end of a command."""

    def __init__(self, token: str = "", tls_ca: str = "") -> None:
        self.token = token
        self.tls_ca = tls_ca
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, endpoint: Endpoint, stub_class: type, plaintext: bool = False) -> Stub:
        """`plaintext` for services this CLI started itself on loopback (no TLS, no token)."""
        channel = self._channels.get(endpoint.address)
        if channel is None and plaintext:
            channel = self._channels[endpoint.address] = aio_channel(endpoint.address)
        if channel is None:
            try:
                channel = aio_channel(endpoint.address, tls_ca_file=self.tls_ca, token=self.token)
            except OSError as exc:
                raise CliError(f"--tls-ca {self.tls_ca}: cannot read the CA bundle ({exc.strerror})") from None
            self._channels[endpoint.address] = channel
        return Stub(endpoint, channel, stub_class)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
