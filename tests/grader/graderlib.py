"""Helpers for grader tests: build rft.grader.v1 requests from plain Python and read
results back. Shared by our own tests and the conformance suite."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from rft.grader.v1 import grader_pb2, grader_pb2_grpc

Stub = grader_pb2_grpc.GraderServiceStub
KIND = grader_pb2.GradeErrorKind


def grade_request(
    spec: dict[str, Any] | None,
    items: list[tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], dict[str, Any]]],
    tenant: str = "",
    grader_id: str = "",
) -> grader_pb2.GradeRequest:
    """items: (output_text, item) or (output_text, item, output_json)."""
    request = grader_pb2.GradeRequest(tenant=tenant)
    if spec is not None:
        request.spec.update(spec)
    if grader_id:
        request.grader_id = grader_id
    for entry in items:
        added = request.items.add()
        added.sample.output_text = entry[0]
        added.item.update(entry[1])
        if len(entry) > 2:
            added.sample.output_json.update(entry[2])
    return request


def grade(stub: Stub, spec: dict[str, Any] | None, items: list, tenant: str = "", grader_id: str = ""):
    return stub.Grade(grade_request(spec, items, tenant, grader_id), timeout=60)


def scores(response: grader_pb2.GradeResponse) -> list[float | str]:
    """Score per result, or the error kind's short name when the sample has an error."""
    out: list[float | str] = []
    for result in response.results:
        if result.HasField("error"):
            out.append(KIND.Name(result.error.kind).removeprefix("GRADE_ERROR_KIND_"))
        else:
            out.append(result.score)
    return out


def validate(stub: Stub, spec: dict[str, Any], tenant: str = "") -> grader_pb2.ValidateGraderResponse:
    request = grader_pb2.ValidateGraderRequest(tenant=tenant)
    request.spec.update(spec)
    return stub.ValidateGrader(request, timeout=30)


def issue_fields(response: grader_pb2.ValidateGraderResponse) -> list[str]:
    return [issue.field for issue in response.issues]


def register(stub: Stub, name: str, spec: dict[str, Any], tenant: str = "") -> grader_pb2.Grader:
    request = grader_pb2.RegisterGraderRequest(tenant=tenant, name=name)
    request.spec.update(spec)
    return stub.RegisterGrader(request, timeout=30).grader


def types(stub: Stub) -> dict[str, grader_pb2.GraderType]:
    return {t.name: t for t in stub.ListGraderTypes(grader_pb2.ListGraderTypesRequest(), timeout=30).types}


def require(stub: Stub, kind: str) -> None:
    """Skip unless the server under test runs `kind` (python needs a usable sandbox)."""
    import pytest

    listed = types(stub).get(kind)
    if listed is None or not listed.enabled:
        pytest.skip(f"{kind} is not enabled on the server under test")


def spec_dict(grader: grader_pb2.Grader) -> dict[str, Any]:
    return json_format.MessageToDict(grader.spec)


def status_of(call, *args, **kwargs) -> grpc.StatusCode:
    """The status code a call fails with (OK when it succeeds)."""
    try:
        call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def string_check(operation: str = "eq", reference: str = "{{item.answer}}", name: str = "check") -> dict[str, Any]:
    return {
        "type": "string_check",
        "name": name,
        "input": "{{sample.output_text}}",
        "reference": reference,
        "operation": operation,
    }


def similarity(metric: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "text_similarity",
        "name": metric,
        "input": "{{sample.output_text}}",
        "reference": "{{item.reference}}",
        "evaluation_metric": metric,
        **extra,
    }


class FakeChatModel:
    """A deterministic OpenAI-compatible /chat/completions endpoint on loopback: the
    boundary score_model / label_model talk to. The reply is the text after "REPLY:" in
    the last message; "HTTP500" answers 500; every request body is recorded."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                model.requests.append({"path": self.path, "body": body, "auth": self.headers.get("authorization")})
                text = body["messages"][-1]["content"]
                if "HTTP500" in text:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"boom")
                    return
                reply = text.split("REPLY:", 1)[1] if "REPLY:" in text else "no reply given"
                payload = json.dumps(
                    {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeChatModel:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
