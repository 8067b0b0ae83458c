"""Python tools of an episode, run in the grader's sandbox: the client of a tool server
of kind `grader_python`.

A request's EpisodeParams.python_tools_source is a Python module; its public top-level
functions are the episode's tools. The grader (rft.grader.v1 DescribePythonTools /
CallPythonTool) runs the source in the tenant's jail: the rollout never executes it.
Descriptions are cached by (tenant, SHA-256 of the source) in a bounded LRU, and
concurrent requests for one source share one DescribePythonTools call. Calls go to the
grader one by one, under the server's timeout (sent as the call's deadline, which also
bounds the sandbox), output cap and concurrency limit, like every other tool server.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import logging
from typing import Any

from rft_rollout.tool_servers import ToolServerConfig, ToolSpec, grpc_channel, tool_spec, unavailable

log = logging.getLogger(__name__)

CACHE_ENTRIES = 256
"""Sources whose descriptions are kept (per rollout replica)."""
DESCRIBE_TIMEOUT_SECONDS = 60.0


class DescribeFailed(Exception):
    """The source cannot be described. `invalid`: the source's fault (the grader said
    INVALID_ARGUMENT; the message is for the user); otherwise the grader could not be
    reached or refused for another reason (the message is a status code only)."""

    def __init__(self, message: str, invalid: bool) -> None:
        super().__init__(message)
        self.invalid = invalid


def source_key(tenant: str, source: str) -> tuple[str, str]:
    return tenant, hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


class GraderPythonClient:
    """One grader_python server: a channel to a grader, with the description cache."""

    def __init__(self, config: ToolServerConfig) -> None:
        from rft.grader.v1 import grader_pb2_grpc

        self._channel, self._metadata = grpc_channel(config)
        self._stub = grader_pb2_grpc.GraderServiceStub(self._channel)
        self._timeout = config.timeout_seconds
        self._connect_timeout = config.connect_timeout_seconds
        self._cache: collections.OrderedDict[tuple[str, str], list[ToolSpec]] = collections.OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future] = {}

    async def connect(self) -> None:
        """Wait until the grader answers (start-up: an unreachable grader is the operator's error)."""
        from rft.grader.v1 import grader_pb2

        await self._stub.ListGraderTypes(
            grader_pb2.ListGraderTypesRequest(), metadata=self._metadata, timeout=self._connect_timeout
        )

    async def list_tools(self) -> list[ToolSpec]:
        """No fixed tools: each episode's come from its source (`describe`)."""
        return []

    async def call(self, name: str, arguments: dict[str, Any], episode_id: str) -> tuple[str, bool]:
        """No tool outside an episode's source: ToolBox.call sends those to `call_python`
        (this server lists no fixed tool, so nothing resolves to it here)."""
        return f"error: unknown tool {name!r}", True

    def cached(self, tenant: str, source: str) -> list[ToolSpec] | None:
        key = source_key(tenant, source)
        tools = self._cache.get(key)
        if tools is not None:
            self._cache.move_to_end(key)
        return tools

    async def describe(self, tenant: str, source: str) -> list[ToolSpec]:
        """The source's tools (cached); DescribeFailed when the grader says no."""
        if (tools := self.cached(tenant, source)) is not None:
            return tools
        key = source_key(tenant, source)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._describe(tenant, source))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _describe(self, tenant: str, source: str) -> list[ToolSpec]:
        import grpc
        from rft.grader.v1 import grader_pb2

        request = grader_pb2.DescribePythonToolsRequest(tenant=tenant, source=source)
        try:
            response = await self._stub.DescribePythonTools(
                request, metadata=self._metadata, timeout=DESCRIBE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise DescribeFailed(exc.details() or "invalid source", True) from None
            log.warning("DescribePythonTools: gRPC %s: %s", exc.code().name, exc.details())
            raise DescribeFailed(exc.code().name, False) from None
        tools = [tool_spec(tool) for tool in response.tools]
        key = source_key(tenant, source)
        self._cache[key] = tools
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return tools

    async def call_python(
        self, tenant: str, source: str, name: str, arguments: dict[str, Any], episode_id: str
    ) -> tuple[str, bool]:
        """(output, is_error) of one call; transport failures raise as in GrpcToolClient."""
        import grpc
        from rft.grader.v1 import grader_pb2

        request = grader_pb2.CallPythonToolRequest(tenant=tenant, source=source, name=name, episode_id=episode_id)
        request.arguments.update(arguments)
        try:
            response = await self._stub.CallPythonTool(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # e.g. arguments past the grader's bound
                return exc.details() or "invalid arguments", True
            log.warning("python tool %s: gRPC %s: %s", name, exc.code().name, exc.details())
            return unavailable(name, exc.code().name), True
        return response.content, response.is_error

    async def close(self) -> None:
        await self._channel.close()
