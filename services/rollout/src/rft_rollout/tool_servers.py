"""Tool servers that episodes call: rft.tools.v1 over gRPC, MCP servers (stdio or
streamable HTTP) through the `mcp` SDK, and the grader's sandbox for Python tools
(grader_python, python_tools.py).

The operator lists them in a JSON file (--tool-servers-file), one `ToolServerConfig`
each; requests name the servers their episodes may use, never an address or a command,
so a client cannot make the service start processes or reach hosts, and a server's
credentials (headers, environment) stay in that file on the rollout side.

`ToolBox` connects to every server when the service starts (an async context manager:
MCP stdio servers are child processes, closed on exit), lists their tools and runs calls
with the server's timeout and output cap. A call never raises: whatever goes wrong
(unknown tool, the tool's own error, a timeout, a dead server) comes back as a
`ToolOutcome` with `is_error` set and a message for the model.

A grader_python server has no fixed tools: an episode's request carries a Python source
(EpisodeParams.python_tools_source) whose functions the grader describes and runs in the
tenant's sandbox; `python_tools` gives an episode its tools and `caller` its call function.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import ipaddress
import json
import logging
import pathlib
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import pydantic
from rft_common.api_keys import DEFAULT_TENANT

from rft_rollout import metrics
from rft_rollout.domain import EpisodeParams, InvalidRequest, ToolsUnavailable

if TYPE_CHECKING:
    from rft_rollout.python_tools import GraderPythonClient

log = logging.getLogger(__name__)

TRUNCATION_MARK = "\n[output truncated]"
T = TypeVar("T")


class ToolServerConfig(pydantic.BaseModel):
    """One tool server, as the operator configures it."""

    model_config = pydantic.ConfigDict(extra="forbid", hide_input_in_errors=True)  # inputs hold credentials

    name: str = pydantic.Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    """Name requests use in EpisodeParams.tool_servers."""
    kind: Literal["grpc", "mcp_stdio", "mcp_http", "grader_python"]
    """Transport: an rft.tools.v1 gRPC service, an MCP server started as a child process
    (stdio), an MCP server reached over streamable HTTP, or a grader (rft.grader.v1) that
    runs each episode's Python tools (EpisodeParams.python_tools_source) in its sandbox."""
    target: str = pydantic.Field(min_length=1)
    """grpc and grader_python: host:port; mcp_stdio: the command to run; mcp_http: the
    endpoint URL."""
    args: list[str] = []
    """mcp_stdio: the command's arguments."""
    env: dict[str, str] = {}
    """mcp_stdio: extra environment variables of the server process (its credentials)."""
    headers: dict[str, str] = {}
    """grpc and grader_python (as metadata, lowercase keys) and mcp_http (as HTTP headers):
    sent with every call, e.g. an authorization token (for grader_python the grader's
    --auth-token, which may act for the episode's tenant). Never shown to the model or to
    clients."""
    timeout_seconds: float = pydantic.Field(10.0, gt=0, le=600)
    """Per-call limit; a call past it is an error for the model ("timed out")."""
    max_output_bytes: int = pydantic.Field(4096, ge=64, le=1 << 20)
    """Largest tool output shown to the model (UTF-8 bytes); longer output is cut and
    marked "[output truncated]"."""
    connect_timeout_seconds: float = pydantic.Field(30.0, gt=0, le=600)
    """Limit on connecting and listing the tools at start-up."""
    reconnect_seconds: float = pydantic.Field(5.0, ge=0.1, le=3600)
    """mcp_stdio and mcp_http: after a call fails in transport (the server died, the
    session was lost), calls in the next this-many seconds are tool errors; the first call
    after them opens a new session (starting a stdio server again) before it runs."""
    max_concurrent_calls: int = pydantic.Field(16, ge=1, le=4096)
    """Calls in flight to this server at once (all episodes together); later calls wait,
    and the wait counts against their timeout."""
    allowed_tenants: list[str] = [DEFAULT_TENANT]
    """Tenants whose episodes may use this server (and its credentials); "*" is every
    tenant. Absent: the operator's tenant "default" only. A server keeps one session for
    everyone allowed on it, so a stateful server is shared by these tenants."""

    tls_ca_file: str = ""
    """grpc and grader_python: connect over TLS, verifying the server against this CA bundle (PEM); without
    it the channel is plaintext. mcp_http: the CA bundle that verifies an https:// target
    (default: the system's)."""
    allow_plaintext_credentials: bool = False
    """Allow `headers` to go in plaintext (grpc without tls_ca_file, an http:// mcp_http
    target) to a host that is not loopback. Refused at start-up otherwise."""

    def allows(self, tenant: str) -> bool:
        return "*" in self.allowed_tenants or tenant in self.allowed_tenants

    @pydantic.model_validator(mode="after")
    def _no_plaintext_credentials(self) -> ToolServerConfig:
        if self.kind == "mcp_stdio" or not self.headers or self.allow_plaintext_credentials:
            return self
        if self.kind in ("grpc", "grader_python"):
            plaintext, host = not self.tls_ca_file, grpc_target_host(self.target)
        else:
            url = urllib.parse.urlsplit(self.target)
            if url.scheme not in ("http", "https"):
                raise ValueError(f"tool server {self.name!r}: an mcp_http target must be an http(s):// URL")
            plaintext, host = url.scheme == "http", url.hostname or ""
        if plaintext and not is_loopback(host):
            how = "use an https:// target" if self.kind == "mcp_http" else "set tls_ca_file"
            raise ValueError(
                f"tool server {self.name!r}: its headers would go in plaintext to {host!r}; {how}, or set "
                "allow_plaintext_credentials: true"
            )
        return self


def grpc_target_host(target: str) -> str:
    """The host of a gRPC target ("host:port", "[v6]:port", "dns:///host:port"); "localhost"
    for a unix socket."""
    if target.startswith(("unix:", "unix-abstract:")):
        return "localhost"
    target = target.split("///", 1)[-1] if "///" in target else target.removeprefix("dns:").removeprefix("ipv4:")
    target = target.removeprefix("ipv6:")
    if target.startswith("["):
        return target[1 : target.find("]")]
    return target.rsplit(":", 1)[0] if target.count(":") == 1 else target


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ToolServersFile(pydantic.BaseModel):
    """The --tool-servers-file: {"servers": [ToolServerConfig, ...]}."""

    model_config = pydantic.ConfigDict(extra="forbid", hide_input_in_errors=True)  # inputs hold credentials

    servers: list[ToolServerConfig] = []
    """Every tool server; names are unique."""

    @pydantic.model_validator(mode="after")
    def _unique(self) -> ToolServersFile:
        names = [server.name for server in self.servers]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"tool server names must be unique; repeated: {duplicates}")
        return self


def load_tool_servers(path: str | pathlib.Path) -> list[ToolServerConfig]:
    return ToolServersFile.model_validate_json(pathlib.Path(path).read_text()).servers


@dataclasses.dataclass(frozen=True)
class ToolSpec:
    """One tool as the chat template shows it (OpenAI function format)."""

    name: str
    description: str
    parameters: dict[str, Any]

    def as_template_tool(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclasses.dataclass(frozen=True)
class ToolOutcome:
    """What one call gave: the text for the model, whether it failed, and its seconds."""

    output: str
    is_error: bool
    latency_seconds: float


def cap_output(text: str, max_bytes: int) -> str:
    """`text` if its UTF-8 encoding fits `max_bytes`; otherwise its longest prefix that
    fits together with TRUNCATION_MARK (never a partial character), then the mark."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    room = max(0, max_bytes - len(TRUNCATION_MARK.encode("utf-8")))
    return data[:room].decode("utf-8", errors="ignore") + TRUNCATION_MARK


def unavailable(tool: str, code: str) -> str:
    """What the model reads when a call fails in transport: the tool and a code (a gRPC
    status or an exception's type), never the details, which may name infrastructure."""
    return f"error: tool {tool!r} unavailable ({code})"


class ToolClient(Protocol):
    """One connected server."""

    async def list_tools(self) -> list[ToolSpec]: ...

    async def call(self, name: str, arguments: dict[str, Any], episode_id: str) -> tuple[str, bool]:
        """(output text, is_error); may raise on transport failures."""


# ---------------------------------------------------------------- rft.tools.v1 over gRPC


def tool_spec(tool: Any) -> ToolSpec:
    """A ToolSpec from an rft.tools.v1.Tool (an unset input schema: no arguments)."""
    from google.protobuf import json_format

    schema = json_format.MessageToDict(tool.input_schema) if tool.HasField("input_schema") else None
    return ToolSpec(tool.name, tool.description, schema or {"type": "object", "properties": {}})


def grpc_channel(config: ToolServerConfig) -> tuple[Any, tuple[tuple[str, str], ...]]:
    """(an aio channel to a grpc or grader_python server: TLS verified against its
    tls_ca_file when set, else plaintext; its headers as call metadata)."""
    import grpc

    if config.tls_ca_file:
        roots = pathlib.Path(config.tls_ca_file).read_bytes()
        channel = grpc.aio.secure_channel(config.target, grpc.ssl_channel_credentials(roots))
    else:
        channel = grpc.aio.insecure_channel(config.target)
    return channel, tuple((key.lower(), value) for key, value in config.headers.items())


class GrpcToolClient:
    def __init__(self, config: ToolServerConfig) -> None:
        from rft.tools.v1 import tools_pb2_grpc

        self._channel, self._metadata = grpc_channel(config)
        self._stub = tools_pb2_grpc.ToolServiceStub(self._channel)
        self._timeout = config.timeout_seconds

    async def list_tools(self) -> list[ToolSpec]:
        from rft.tools.v1 import tools_pb2

        response = await self._stub.ListTools(tools_pb2.ListToolsRequest(), metadata=self._metadata, timeout=30)
        return [tool_spec(tool) for tool in response.tools]

    async def call(self, name: str, arguments: dict[str, Any], episode_id: str) -> tuple[str, bool]:
        import grpc
        from rft.tools.v1 import tools_pb2

        request = tools_pb2.CallToolRequest(name=name, episode_id=episode_id)
        request.arguments.update(arguments)
        try:
            response = await self._stub.CallTool(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TimeoutError from None
            # The details may name hosts and addresses: the server log has them, the model
            # a code only.
            log.warning("tool %s: gRPC %s: %s", name, exc.code().name, exc.details())
            return unavailable(name, exc.code().name), True
        return response.content, response.is_error

    async def close(self) -> None:
        await self._channel.close()


# ---------------------------------------------------------------- MCP


def mcp_result_text(result: Any) -> str:
    """The text of an MCP CallToolResult: its text contents joined by newlines; other
    content (images, resources) as a placeholder naming its type; structured content as
    JSON when there is no text."""
    parts = []
    for item in result.content or []:
        text = getattr(item, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(item, 'type', 'content')} omitted]")
    if not parts and getattr(result, "structured_content", None) is not None:
        parts.append(json.dumps(result.structured_content, sort_keys=True))
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def open_mcp_client(config: ToolServerConfig) -> AsyncIterator[Any]:
    """An initialised `mcp.Client` session for the server (a stdio server process runs
    while the block does)."""
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    if config.kind == "mcp_stdio":
        server: Any = StdioServerParameters(command=config.target, args=list(config.args), env=dict(config.env))
        async with Client(server, read_timeout_seconds=config.timeout_seconds) as client:
            yield client
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    # https targets are verified: against tls_ca_file when set, else the system's CAs.
    verify: Any = ssl.create_default_context(cafile=config.tls_ca_file) if config.tls_ca_file else True
    async with httpx2.AsyncClient(headers=dict(config.headers), timeout=config.timeout_seconds, verify=verify) as http:
        transport = streamable_http_client(config.target, http_client=http)
        async with Client(transport, read_timeout_seconds=config.timeout_seconds) as client:
            yield client


def is_transport_failure(exc: BaseException) -> bool:
    """Whether an MCP call failed because its session is gone (the server died, the stream
    broke), rather than because of the call (a JSON-RPC error answer, a bad result)."""
    import anyio
    from mcp.shared.exceptions import MCPError
    from mcp_types import CONNECTION_CLOSED

    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    transport: tuple[type[BaseException], ...] = (
        anyio.ClosedResourceError,
        anyio.BrokenResourceError,
        anyio.EndOfStream,
        ConnectionError,
        EOFError,
    )
    try:
        import httpx2

        transport += (httpx2.TransportError,)
    except ImportError:
        pass
    return isinstance(exc, transport)


class McpToolClient:
    """An MCP server's session that comes back after the server dies.

    The session lives in a task of its own (the SDK's transports are anyio task groups,
    which must be left in the task that entered them). A call that fails in transport
    (`is_transport_failure`: not a timeout, not the tool's or the protocol's own error)
    marks the session broken; the first call at least `reconnect_seconds` later starts one
    reopening, in a task of the client's own (bounded by connect_timeout_seconds, never
    cut short by a caller's timeout), and every call meanwhile waits for it within its own
    time; a failed reopening waits reconnect_seconds again. So a crashed server costs the
    calls of that window, a server slow to start is not restarted over and over, and the
    operator sees it on `rft_rollout_tool_server_up`."""

    def __init__(self, config: ToolServerConfig) -> None:
        self._config = config
        self._client: Any = None
        self._holder: asyncio.Task | None = None
        self._release = asyncio.Event()
        self._broken_at: float | None = None
        self._reopening: asyncio.Task | None = None
        metrics.TOOL_SERVER_UP.labels(config.name).set(0)

    @property
    def up(self) -> bool:
        return self._client is not None and self._broken_at is None

    async def connect(self) -> None:
        """Open the session (raises what opening raised)."""
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._release = asyncio.Event()
        self._holder = asyncio.create_task(self._hold(ready, self._release))
        try:
            self._client = await asyncio.shield(ready)
        except BaseException:
            await self._end_holder()
            raise
        self._broken_at = None
        metrics.TOOL_SERVER_UP.labels(self._config.name).set(1)

    async def _hold(self, ready: asyncio.Future, release: asyncio.Event) -> None:
        try:
            async with open_mcp_client(self._config) as client:
                ready.set_result(client)
                await release.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError("session closed"))
            if not isinstance(exc, Exception):
                raise
            # A session that dies after opening ends here; its calls fail and mark it broken.

    async def _end_holder(self) -> None:
        self._release.set()
        holder, self._holder = self._holder, None
        if holder is not None:
            try:
                await asyncio.wait_for(holder, self._config.connect_timeout_seconds)
            except (Exception, asyncio.CancelledError):
                holder.cancel()
        self._client = None
        metrics.TOOL_SERVER_UP.labels(self._config.name).set(0)

    async def close(self) -> None:
        if self._reopening is not None:
            self._reopening.cancel()
            await asyncio.gather(self._reopening, return_exceptions=True)
            self._reopening = None
        await self._end_holder()

    async def _reopen(self) -> None:
        log.info("reconnecting to tool server %s", self._config.name)
        try:
            await self._end_holder()
            async with asyncio.timeout(self._config.connect_timeout_seconds):
                await self.connect()
            log.info("tool server %s is back", self._config.name)
        except BaseException as exc:
            self._broken_at = time.monotonic()
            if not isinstance(exc, Exception):
                raise
            log.warning("tool server %s: reconnecting failed: %r", self._config.name, exc)

    async def _session(self) -> Any:
        """The live session; while it is broken, a reopening (started by the first call at
        least reconnect_seconds after the failure) that this call waits for."""
        if self._broken_at is not None and self._reopening is None:
            if time.monotonic() - self._broken_at < self._config.reconnect_seconds:
                raise ConnectionError("the tool server is down")
            self._reopening = asyncio.create_task(self._reopen())
            self._reopening.add_done_callback(lambda _: setattr(self, "_reopening", None))
        reopening = self._reopening
        if reopening is not None:
            await asyncio.shield(reopening)  # a caller's timeout leaves the reopening running
            if self._broken_at is not None:
                raise ConnectionError("the tool server is down")
        if self._client is None:
            raise ConnectionError("not connected")
        return self._client

    async def _guarded(self, work: Callable[[Any], Awaitable[T]]) -> T:
        session = await self._session()
        try:
            return await work(session)
        except Exception as exc:
            if is_transport_failure(exc) and self._client is session and self._broken_at is None:
                log.warning("tool server %s: session lost: %r", self._config.name, exc)
                self._broken_at = time.monotonic()
                metrics.TOOL_SERVER_UP.labels(self._config.name).set(0)
            raise

    async def list_tools(self) -> list[ToolSpec]:
        async def listing(session: Any) -> list[ToolSpec]:
            tools, cursor = [], None
            while True:
                page = await session.list_tools(cursor=cursor)
                tools += [ToolSpec(t.name, t.description or "", dict(t.input_schema or {})) for t in page.tools]
                cursor = getattr(page, "next_cursor", None)
                if not cursor:
                    return tools

        return await self._guarded(listing)

    async def call(self, name: str, arguments: dict[str, Any], episode_id: str) -> tuple[str, bool]:
        async def calling(session: Any) -> tuple[str, bool]:
            result = await session.call_tool(name, arguments)
            return mcp_result_text(result), bool(result.is_error)

        return await self._guarded(calling)


# ---------------------------------------------------------------- the tool box


@dataclasses.dataclass
class ConnectedServer:
    config: ToolServerConfig
    client: ToolClient
    tools: list[ToolSpec]
    slots: asyncio.Semaphore = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.config.max_concurrent_calls)


class ToolBox:
    """Every configured server, connected; `call` runs one tool with its server's limits."""

    def __init__(self, servers: Sequence[ConnectedServer]) -> None:
        self.servers = {server.config.name: server for server in servers}

    def usable_by(self, tenant: str | None) -> list[str]:
        """The servers `tenant` may use (None: every server, the operator's view)."""
        return [name for name, server in self.servers.items() if tenant is None or server.config.allows(tenant)]

    def tools_of(self, names: Sequence[str]) -> list[ToolSpec]:
        """The tools of the named servers, in order (KeyError names an unknown server)."""
        return [tool for name in names for tool in self.servers[name].tools]

    def resolve(self, server_names: Sequence[str], tool: str) -> ConnectedServer | None:
        """The first of the named servers that offers `tool`."""
        for name in server_names:
            server = self.servers[name]
            if any(spec.name == tool for spec in server.tools):
                return server
        return None

    # -- Python tools (grader_python) -------------------------------------------------

    def python_server(self, episode: EpisodeParams) -> ConnectedServer | None:
        """The grader_python server of an episode: the first named in its tool_servers, else
        the first its tenant may use."""
        names = [*episode.tool_servers, *self.usable_by(episode.tenant)]
        return next((self.servers[n] for n in names if self.servers[n].config.kind == "grader_python"), None)

    async def python_tools(self, episode: EpisodeParams) -> list[ToolSpec]:
        """The tools of the episode's Python source ([] without one), described by the
        grader (cached). InvalidRequest for a source the grader refuses, no grader_python
        server, or a tool name another named server has; ToolsUnavailable when the grader
        cannot answer."""
        from rft_rollout.python_tools import DescribeFailed

        if not episode.python_tools_source:
            return []
        server = self.python_server(episode)
        if server is None:
            raise InvalidRequest(
                f"episode.python_tools_source: no tool server of kind grader_python for tenant {episode.tenant!r}"
            )
        client: GraderPythonClient = server.client  # type: ignore[assignment]
        try:
            tools = await client.describe(episode.tenant, episode.python_tools_source)
        except DescribeFailed as exc:
            if exc.invalid:
                raise InvalidRequest(f"episode.python_tools_source: {exc}") from None
            raise ToolsUnavailable(f"python tools: the grader of {server.config.name!r} failed ({exc})") from None
        others = {spec.name for spec in self.tools_of(episode.tool_servers)}
        if clash := sorted(others & {tool.name for tool in tools}):
            raise InvalidRequest(f"episode.python_tools_source: tools {clash} repeat tools of episode.tool_servers")
        return tools

    def caller(self, episode: EpisodeParams) -> Any:
        """The episode's call function (`call`, with its Python tools when it has some)."""
        if not episode.python_tools_source:
            return self.call

        async def call(server_names: Sequence[str], tool: str, arguments: dict[str, Any], episode_id: str):
            return await self.call(server_names, tool, arguments, episode_id, episode)

        return call

    # -- calls ------------------------------------------------------------------------

    async def call(
        self,
        server_names: Sequence[str],
        tool: str,
        arguments: dict[str, Any],
        episode_id: str,
        episode: EpisodeParams | None = None,
    ) -> ToolOutcome:
        """Run `tool` of the named servers (or of `episode`'s Python tools)."""
        server = self.resolve(server_names, tool)
        invoke = None if server is None else functools.partial(server.client.call, tool, arguments, episode_id)
        offered = [spec.name for spec in self.tools_of(server_names)]
        if server is None and episode is not None and episode.python_tools_source:
            python = self.python_server(episode)
            client: GraderPythonClient | None = python.client if python else None  # type: ignore[assignment]
            described = client.cached(episode.tenant, episode.python_tools_source) if client else None
            if described is None and client is not None:  # evicted since the request was planned
                with contextlib.suppress(Exception):
                    described = await client.describe(episode.tenant, episode.python_tools_source)
            names = [spec.name for spec in described or []]
            offered += names
            if tool in names and client is not None:
                server = python
                invoke = functools.partial(
                    client.call_python, episode.tenant, episode.python_tools_source, tool, arguments, episode_id
                )
        if server is None or invoke is None:
            return ToolOutcome(f"error: unknown tool {tool!r}; the tools are {offered}", True, 0.0)
        config = server.config
        started = time.perf_counter()
        try:
            async with asyncio.timeout(config.timeout_seconds), server.slots:
                output, is_error = await invoke()
        except TimeoutError:
            output, is_error = f"error: tool {tool!r} timed out after {config.timeout_seconds:g} s", True
        except Exception as exc:  # a failing server must not end the episode
            # The exception may carry URLs, addresses or paths: the log has them, the model not.
            log.warning("tool %s on %s failed: %r", tool, config.name, exc)
            output, is_error = unavailable(tool, type(exc).__name__), True
        if is_error and not output.startswith("error"):
            output = f"error: {output}"
        return ToolOutcome(cap_output(output, config.max_output_bytes), is_error, time.perf_counter() - started)


@contextlib.asynccontextmanager
async def open_tool_box(configs: Sequence[ToolServerConfig]) -> AsyncIterator[ToolBox]:
    """Connect to every server and list its tools; a server that cannot be reached
    fails the start-up (an operator's configuration error). Closed on exit."""
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for config in configs:
            async with asyncio.timeout(config.connect_timeout_seconds):
                if config.kind == "grpc":
                    grpc_client = GrpcToolClient(config)
                    stack.push_async_callback(grpc_client.close)
                    client: ToolClient = grpc_client
                elif config.kind == "grader_python":
                    from rft_rollout.python_tools import GraderPythonClient

                    python_client = GraderPythonClient(config)
                    stack.push_async_callback(python_client.close)
                    await python_client.connect()
                    client = python_client
                else:
                    mcp_client = McpToolClient(config)
                    stack.push_async_callback(mcp_client.close)
                    await mcp_client.connect()
                    client = mcp_client
                tools = await client.list_tools()
            log.info("tool server %s (%s): tools %s", config.name, config.kind, [t.name for t in tools])
            servers.append(ConnectedServer(config, client, tools))
        yield ToolBox(servers)
