"""gRPC face of the grader: translates protobuf to the core and back.

Domain errors become status codes in one place (`_STATUS`, applied by `_rpc`). Turning
a request of up to max_message_bytes into Python, and thousands of results back into
protobuf, runs on a thread, not on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import struct_pb2
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft_common.tenancy import TenantDenied, acting_tenant

from rft_grader.core import GraderCore, tenant_of
from rft_grader.domain import (
    AlreadyExists,
    Busy,
    Disabled,
    ErrorKind,
    GraderError,
    InvalidRequest,
    InvalidSpec,
    NotFound,
    Outcome,
    Pair,
    Sample,
)
from rft_grader.limits import clip_bytes
from rft_grader.registry import GraderRecord

MAX_STATUS_DETAILS_BYTES = 2000
"""Status details travel in a header (gRPC clients refuse more than 16 KiB, percent-encoded)."""

DEADLINE_MARGIN_SECONDS = 0.1
"""A Python tool call stops this long before its caller's deadline, so its timeout error gets back in time."""


def _deadline_margin(remaining: float) -> float:
    """How long before the deadline seen here a tool call must stop. gRPC sends a timeout
    rounded up in its third digit (2 s arrives as 2.01 s, 12 s as 12.1 s, 120 s as 121 s):
    from 10 s up that is as much as the margin itself, so it is added (1 %)."""
    return DEADLINE_MARGIN_SECONDS + (0.01 * remaining if remaining >= 10 else 0.0)


SERVICE_NAME = grader_pb2.DESCRIPTOR.services_by_name["GraderService"].full_name

_STATUS: dict[type[GraderError], grpc.StatusCode] = {
    InvalidSpec: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Disabled: grpc.StatusCode.FAILED_PRECONDITION,
    Busy: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_ERROR_KIND = {kind: grader_pb2.GradeErrorKind.Value(f"GRADE_ERROR_KIND_{kind.name}") for kind in ErrorKind}

Request = TypeVar("Request")
Response = TypeVar("Response")


def _rpc(
    method: Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    @functools.wraps(method)
    async def handler(self: Any, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except GraderError as exc:
            await context.abort(_STATUS[type(exc)], clip_bytes(str(exc), MAX_STATUS_DETAILS_BYTES))
        except TenantDenied as exc:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    return handler


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        # Struct stores every number as a double; give graders back the JSONL's integers.
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_dict(value.struct_value)
    if kind == "list_value":
        return [_value(v) for v in value.list_value.values]
    return None


def struct_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python (faster than json_format for the Grade hot path)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _pairs(items: Any) -> list[Pair]:
    return [
        Pair(
            Sample(
                item.sample.output_text,
                struct_dict(item.sample.output_json) if item.sample.HasField("output_json") else None,
                [_value(v) for v in item.sample.output_tools.values],
                [_value(v) for v in item.sample.output_messages.values],
            ),
            struct_dict(item.item),
        )
        for item in items
    ]


def _grade_inputs(request: grader_pb2.GradeRequest) -> tuple[dict[str, Any] | None, str, list[Pair]]:
    """(spec, grader_id, pairs) of a GradeRequest."""
    which = request.WhichOneof("grader")
    spec = struct_dict(request.spec) if which == "spec" else None
    grader_id = request.grader_id if which == "grader_id" else ""
    return spec, grader_id, _pairs(request.items)


def _result(outcome: Outcome) -> grader_pb2.GradeResult:
    if outcome.error is not None:
        return grader_pb2.GradeResult(
            sub_scores=outcome.sub_scores,
            error=grader_pb2.GradeError(kind=_ERROR_KIND[outcome.error.kind], message=outcome.error.message),
        )
    return grader_pb2.GradeResult(
        score=outcome.score, sub_scores=outcome.sub_scores, metrics=outcome.metrics, passed=outcome.passed
    )


def _grader(record: GraderRecord) -> grader_pb2.Grader:
    message = grader_pb2.Grader(id=record.id, tenant=record.tenant, name=record.name, type=record.type)
    message.spec.update(record.spec)
    message.create_time.FromDatetime(record.create_time)
    return message


class GraderServicer(grader_pb2_grpc.GraderServiceServicer):
    def __init__(self, core: GraderCore) -> None:
        self.core = core

    @_rpc
    async def Grade(
        self, request: grader_pb2.GradeRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.GradeResponse:
        tenant = tenant_of(acting_tenant(request.tenant))
        spec, grader_id, pairs = await asyncio.to_thread(_grade_inputs, request)
        report = await self.core.grade(tenant, pairs, spec=spec, grader_id=grader_id)

        def response() -> grader_pb2.GradeResponse:
            return grader_pb2.GradeResponse(
                results=[_result(outcome) for outcome in report.outcomes],
                grader_type=report.grader_type,
                grade_seconds=report.seconds,
            )

        return await asyncio.to_thread(response)

    @_rpc
    async def ValidateGrader(
        self, request: grader_pb2.ValidateGraderRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.ValidateGraderResponse:
        tenant_of(acting_tenant(request.tenant))
        kind, issues = await self.core.validate(await asyncio.to_thread(struct_dict, request.spec))
        return grader_pb2.ValidateGraderResponse(
            valid=not issues,
            issues=[grader_pb2.ValidationIssue(field=i.field, message=i.message) for i in issues],
            grader_type=kind,
        )

    @_rpc
    async def RegisterGrader(
        self, request: grader_pb2.RegisterGraderRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.RegisterGraderResponse:
        tenant = tenant_of(acting_tenant(request.tenant))
        record = await self.core.register(tenant, request.name, await asyncio.to_thread(struct_dict, request.spec))
        return grader_pb2.RegisterGraderResponse(grader=_grader(record))

    @_rpc
    async def GetGrader(
        self, request: grader_pb2.GetGraderRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.GetGraderResponse:
        record = await self.core.get(tenant_of(acting_tenant(request.tenant)), request.grader_id)
        return grader_pb2.GetGraderResponse(grader=_grader(record))

    @_rpc
    async def ListGraders(
        self, request: grader_pb2.ListGradersRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.ListGradersResponse:
        page = await self.core.list(tenant_of(acting_tenant(request.tenant)), request.page_size, request.page_token)
        return grader_pb2.ListGradersResponse(
            graders=[_grader(record) for record in page.graders], next_page_token=page.next_page_token
        )

    @_rpc
    async def DeleteGrader(
        self, request: grader_pb2.DeleteGraderRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.DeleteGraderResponse:
        await self.core.delete(tenant_of(acting_tenant(request.tenant)), request.grader_id)
        return grader_pb2.DeleteGraderResponse()

    @_rpc
    async def ListGraderTypes(
        self, request: grader_pb2.ListGraderTypesRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.ListGraderTypesResponse:
        return grader_pb2.ListGraderTypesResponse(
            types=[
                grader_pb2.GraderType(
                    name=t.name, description=t.description, openai_compatible=t.openai_compatible, enabled=t.enabled
                )
                for t in self.core.grader_types()
            ]
        )

    @_rpc
    async def DescribePythonTools(
        self, request: grader_pb2.DescribePythonToolsRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.DescribePythonToolsResponse:
        tenant = tenant_of(acting_tenant(request.tenant))
        tools = await self.core.python_tools.describe(tenant, request.source)
        response = grader_pb2.DescribePythonToolsResponse()
        for tool in tools:
            message = response.tools.add(name=tool.name, description=tool.description)
            try:
                message.input_schema.update(tool.parameters)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # (python_tools checks first)
                raise InvalidRequest(f"source: tool {tool.name}: its parameters' schema is not JSON ({exc})") from None
        return response

    @_rpc
    async def CallPythonTool(
        self, request: grader_pb2.CallPythonToolRequest, context: grpc.aio.ServicerContext
    ) -> grader_pb2.CallPythonToolResponse:
        tenant = tenant_of(acting_tenant(request.tenant))
        size = request.arguments.ByteSize()
        arguments = struct_dict(request.arguments) if size <= self.core.limits.max_python_tool_arguments_bytes else {}
        remaining = context.time_remaining()  # the caller's deadline bounds the wait and the run
        deadline = None if remaining is None else time.monotonic() + remaining - _deadline_margin(remaining)
        result = await self.core.python_tools.call(tenant, request.source, request.name, arguments, size, deadline)
        return grader_pb2.CallPythonToolResponse(content=result.content, is_error=result.is_error)
