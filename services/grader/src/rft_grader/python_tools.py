"""Python tools: a tenant's plain Python functions, run as tools in the grader's sandbox.

    tools = PythonTools(sandbox, limits)
    specs = await tools.describe("acme", source)            # [ToolInfo(name, description, parameters)]
    result = await tools.call("acme", source, "lookup_price", {"sku": "A1"}, deadline=time.monotonic() + 10)

The source runs in the tenant's sandbox workers (the python graders' pool, jail and
limits: sandbox/inside/tool_schema.py says which functions are tools and how their
schemas are built). Nothing the jail answers is trusted: a description is checked field
by field here. A failing call is a result with `is_error` for the model; a source that
cannot be described is InvalidRequest, with the sandbox's message (which names the line).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any

from rft_common.tenancy import tenant_label

from rft_grader.domain import Busy, Disabled, InvalidRequest
from rft_grader.graders.python import sandbox_unavailable_reason
from rft_grader.limits import Limits, clip
from rft_grader.metrics import PYTHON_TOOL_REQUESTS, PYTHON_TOOL_SECONDS
from rft_grader.sandbox import SandboxBusy, SandboxPool, SandboxUnavailable
from rft_grader.sandbox.outcome import PythonOutcome

TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_TOOLS = 64
MAX_DESCRIPTION_CHARS = 4096
MAX_SCHEMA_DEPTH = 48


@dataclasses.dataclass(frozen=True)
class ToolInfo:
    """One tool of a source, in OpenAI's function format."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """What one call gives the model: its text, and whether it is an error."""

    content: str
    is_error: bool


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _check_schema(value: Any, where: str, depth: int = 0) -> None:
    """ValueError unless `value` is JSON that a protobuf Struct holds: finite numbers a
    double can represent, not nested deeper than MAX_SCHEMA_DEPTH."""
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"{where}: nested more than {MAX_SCHEMA_DEPTH} deep")
    if isinstance(value, dict):
        for item in value.values():
            _check_schema(item, where, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_schema(item, where, depth + 1)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(float(value))
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError(f"{where}: a number JSON Schema cannot hold as a double ({str(value)[:20]}...)")


def parse_description(text: str) -> list[ToolInfo]:
    """The sandbox's description (a JSON list), checked; ValueError when malformed.

    The jail leaves out defaults that are no JSON a Struct can hold (tool_schema.py), but
    the child that describes ran the tenant's module: its answer is checked again here."""
    value = json.loads(text, parse_constant=_no_constant)
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise ValueError("not a list of at most 64 tools")
    tools, seen = [], set()
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"name", "description", "parameters"}:
            raise ValueError("a tool is not {name, description, parameters}")
        name, description, parameters = entry["name"], entry["description"], entry["parameters"]
        if not isinstance(name, str) or not TOOL_NAME.match(name) or name in seen:
            raise ValueError("a tool name is not a unique identifier")
        if not isinstance(description, str) or not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise ValueError(f"tool {name}: malformed description or parameters")
        properties = parameters.get("properties")
        for parameter, schema in properties.items() if isinstance(properties, dict) else ():
            _check_schema(schema, f"tool {name}, parameter {parameter[:100]}")
        _check_schema(parameters, f"tool {name}")
        seen.add(name)
        tools.append(ToolInfo(name, clip(description, MAX_DESCRIPTION_CHARS), parameters))
    return tools


class PythonTools:
    """Describe and call Python tools of a tenant in the sandbox pool."""

    def __init__(self, sandbox: SandboxPool, limits: Limits) -> None:
        self.sandbox = sandbox
        self.limits = limits

    def _check_source(self, source: str) -> None:
        size, limit = len(source.encode("utf-8", "surrogatepass")), self.limits.max_python_tools_bytes
        if size > limit:
            raise InvalidRequest(f"source: {size} bytes; at most {limit} (max_python_tools_bytes)")
        if not source.strip():
            raise InvalidRequest("source: empty; give a Python module that defines the tool functions")

    async def _run(self, method: str, tenant: str, source: str, **kwargs: Any) -> PythonOutcome:
        if reason := sandbox_unavailable_reason(self.sandbox):
            raise Disabled(f"python tools are disabled on this server: {reason}")
        started = time.perf_counter()
        try:
            outcome = await self.sandbox.run_tool(tenant, source, method, **kwargs)
        except SandboxUnavailable as exc:  # the pool failed after start-up
            raise Disabled(f"python tools are disabled on this server: {exc}") from None
        except SandboxBusy as exc:
            raise Busy(str(exc)) from None
        PYTHON_TOOL_SECONDS.labels(method).observe(time.perf_counter() - started)
        PYTHON_TOOL_REQUESTS.labels(method, tenant_label(tenant), outcome.error_kind or "ok").inc()
        return outcome

    async def describe(self, tenant: str, source: str) -> list[ToolInfo]:
        """The source's tools; InvalidRequest when it does not compile or fails on import."""
        self._check_source(source)
        outcome = await self._run("describe", tenant, source)
        if outcome.error_kind is not None:
            raise InvalidRequest(f"source: {outcome.message or outcome.error_kind}")
        try:
            return parse_description(outcome.message)
        except (ValueError, RecursionError) as exc:
            raise InvalidRequest(f"source: the sandbox's description of its tools is malformed ({exc})") from None

    async def call(
        self,
        tenant: str,
        source: str,
        name: str,
        arguments: dict[str, Any],
        arguments_bytes: int = 0,
        deadline: float | None = None,
    ) -> ToolResult:
        """The result of tool `name` with `arguments` (keywords). `deadline` (time.monotonic(),
        the caller's) bounds the wait for a sandbox worker and the run: what is left of it
        once a worker is free lowers the sandbox's wall-clock limit."""
        self._check_source(source)
        limit = self.limits.max_python_tool_arguments_bytes
        if arguments_bytes > limit:
            raise InvalidRequest(
                f"arguments: {arguments_bytes} bytes; at most {limit} (max_python_tool_arguments_bytes)"
            )
        if not TOOL_NAME.match(name):
            return ToolResult(f"no tool {name[:100]!r}", True)
        outcome = await self._run("call", tenant, source, name=name, arguments=arguments, deadline=deadline)
        if outcome.error_kind is not None:
            return ToolResult(outcome.message or outcome.error_kind, True)
        return ToolResult(outcome.message, False)
