"""Cross-cutting concerns of every RPC, as grpc.aio server interceptors.

`ObservingInterceptor` gives each call a request id (from `x-request-id` metadata or a
new one) and records Prometheus metrics labelled by service, method and status code.
`TokenAuthInterceptor` requires a bearer credential on every RPC except health checks and
reflection, which probes and tools call without credentials: the service token (the
operator) or a tenant's API key, and makes the caller known to the handler
(rft_common.tenancy.CALLER).

Streaming responses are timed by wrapping the response iterator, because the handler
returns before the stream ends.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram

from rft_common.api_keys import ApiKeys
from rft_common.logs import REQUEST_ID
from rft_common.tenancy import CALLER, OPERATOR, Caller

log = logging.getLogger(__name__)

RPC_REQUESTS = Counter(
    "rft_rpc_requests_total",
    "RPCs handled, by service, method and gRPC status code.",
    ["service", "method", "code"],
)
RPC_DURATION = Histogram(
    "rft_rpc_duration_seconds",
    "RPC handling time from the first request byte to the final status.",
    ["service", "method", "code"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
RPC_IN_FLIGHT = Gauge("rft_rpc_in_flight", "RPCs being handled now.", ["service", "method"])

UNAUTHENTICATED_METHODS_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def split_method(full_method: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, service, method = full_method.split("/", 2) if full_method.count("/") >= 2 else ("", "", full_method)
    return service, method


def _final_code(context: grpc.aio.ServicerContext, error: BaseException | None) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(code, int):
        for candidate in grpc.StatusCode:
            if candidate.value[0] == code:
                return candidate
    if error is None:
        return grpc.StatusCode.OK
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def _wrap_handler(
    handler: grpc.RpcMethodHandler,
    around: Callable[[Callable[[], Any], grpc.aio.ServicerContext], Awaitable[Any]],
    around_stream: Callable[[Callable[[], Any], grpc.aio.ServicerContext], Any],
) -> grpc.RpcMethodHandler:
    """Return `handler` with its behaviour wrapped by `around` (unary responses) or
    `around_stream` (streaming responses). Both receive a thunk that starts the
    original behaviour, so a wrapper may also decide not to run it."""
    # grpc.aio decides how to drive a behaviour by inspecting it, so the wrappers must be
    # real coroutine functions / async generator functions, not lambdas.
    if handler.unary_unary or handler.stream_unary:
        unary_behavior = handler.unary_unary or handler.stream_unary

        async def unary_response(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await around(lambda: unary_behavior(request, context), context)

        field = "unary_unary" if handler.unary_unary else "stream_unary"
        return handler._replace(**{field: unary_response})

    stream_behavior = handler.unary_stream or handler.stream_stream

    async def stream_response(request: Any, context: grpc.aio.ServicerContext):
        async for item in around_stream(lambda: stream_behavior(request, context), context):
            yield item

    field = "unary_stream" if handler.unary_stream else "stream_stream"
    return handler._replace(**{field: stream_response})


class ObservingInterceptor(grpc.aio.ServerInterceptor):
    """Request ids and per-RPC Prometheus metrics."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, method = split_method(handler_call_details.method)
        metadata = dict(handler_call_details.invocation_metadata or ())
        request_id = metadata.get("x-request-id") or uuid.uuid4().hex[:16]

        def begin() -> float:
            REQUEST_ID.set(request_id)
            RPC_IN_FLIGHT.labels(service, method).inc()
            return time.perf_counter()

        def end(started: float, context: grpc.aio.ServicerContext, error: BaseException | None) -> None:
            code = _final_code(context, error)
            RPC_IN_FLIGHT.labels(service, method).dec()
            RPC_REQUESTS.labels(service, method, code.name).inc()
            RPC_DURATION.labels(service, method, code.name).observe(time.perf_counter() - started)
            if code == grpc.StatusCode.UNKNOWN and error is not None and not isinstance(error, grpc.aio.AbortError):
                log.error("unhandled error in %s/%s", service, method, exc_info=error)

        async def around(call: Callable[[], Any], context: grpc.aio.ServicerContext) -> Any:
            started = begin()
            error: BaseException | None = None
            try:
                result = call()
                return await result if inspect.isawaitable(result) else result
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(started, context, error)

        async def around_stream(call: Callable[[], Any], context: grpc.aio.ServicerContext):
            started = begin()
            error: BaseException | None = None
            try:
                result = call()
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                else:  # a handler that writes with context.write() and returns
                    await result
            except BaseException as exc:
                error = exc
                raise
            finally:
                end(started, context, error)

        return _wrap_handler(handler, around, around_stream)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Rejects RPCs without a credential (health and reflection exempt): `authorization:
    Bearer <service token>` (the operator), `Bearer <tenant API key>`, or, with mutual
    TLS, a client certificate whose common name the keys file gives a tenant."""

    def __init__(self, token: str, keys: ApiKeys | None = None) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self._keys = keys if keys is not None and keys.required else None

    def _caller(self, supplied: str, context: grpc.aio.ServicerContext) -> Caller | None:
        if self._expected is not None and hmac.compare_digest(supplied.encode(), self._expected):
            return OPERATOR
        if self._keys is None:
            return None
        if supplied.startswith("Bearer "):
            tenant = self._keys.tenant_for(supplied.removeprefix("Bearer "))
            return Caller(tenant) if tenant is not None else None
        # The certificate's names are only in the auth context once the TLS handshake has
        # verified it against --tls-client-ca-file.
        names = [v.decode(errors="replace") for v in context.auth_context().get("x509_common_name", [])]
        tenant = self._keys.tenant_for_certificate(names) if names else None
        return Caller(tenant) if tenant is not None else None

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(UNAUTHENTICATED_METHODS_PREFIXES):
            return handler
        supplied = str(dict(handler_call_details.invocation_metadata or ()).get("authorization", ""))

        async def as_caller(call: Callable[[], Any], context: grpc.aio.ServicerContext) -> Any:
            caller = self._caller(supplied, context)
            if caller is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            CALLER.set(caller)  # the handler's own context: nothing leaks to other RPCs
            result = call()
            return await result if inspect.isawaitable(result) else result

        async def as_caller_stream(call: Callable[[], Any], context: grpc.aio.ServicerContext):
            caller = self._caller(supplied, context)
            if caller is None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
            CALLER.set(caller)
            result = call()
            if inspect.isasyncgen(result):
                async for item in result:
                    yield item
            else:
                await result

        return _wrap_handler(handler, as_caller, as_caller_stream)
