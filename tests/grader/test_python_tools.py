"""Python tools in the grader's sandbox (issue #17 c), through a real rft-grader over gRPC:
DescribePythonTools derives each tool's schema from its signature, CallPythonTool runs it
in the tenant's jail and turns every failure into a tool error for the model, and tenants
share nothing."""

from __future__ import annotations

import json
import re
import textwrap
import time
import urllib.request

import grpc
import pytest
from google.protobuf import json_format
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft_common.tenancy import tenant_label
from service_process import ServiceProcess
from tenant_keys import KEYS, OPERATOR, auth, code_of, service_args

pytestmark = pytest.mark.python_grader

SOURCE = textwrap.dedent('''
    import json
    from os.path import join

    PRICES = {"A1": "12.50 EUR", "B2": "3.10 EUR"}
    NOTES = []


    def lookup_price(sku: str) -> str:
        """Price of a product in EUR."""
        return PRICES.get(sku, "unknown sku")


    def order_total(skus: list[str], discount: float = 0.0, gift: bool = False, note=None) -> dict:
        """Total of an order."""
        total = sum(float(PRICES[s].split()[0]) for s in skus) * (1 - discount)
        return {"total": round(total, 2), "items": len(skus), "gift": gift}


    def count(limit: int, *, step: int = 1) -> list:
        return list(range(0, limit, step))


    def fail(reason: str) -> str:
        raise ValueError(f"cannot do that: {reason}")


    def spin() -> str:
        while True:
            pass


    def hoard() -> str:
        blocks = []
        while True:
            blocks.append(bytearray(10**7))


    def shout() -> str:
        return "A" * 1_000_000


    def remember(secret: str) -> str:
        NOTES.append(secret)
        with open("/tmp/note", "w") as f:
            f.write(secret)
        return "noted"


    def recall() -> str:
        import os
        return json.dumps({"notes": NOTES, "tmp": sorted(os.listdir("/tmp"))})


    def _helper() -> None:
        pass


    shortcut = lookup_price
''')

FLAGS = [
    "--sandbox-timeout-seconds", "4",
    "--sandbox-cpu-seconds", "4",
    "--sandbox-memory-bytes", str(256 * 1024**2),
    "--sandbox-max-output-bytes", "8192",
    "--max-python-tools-bytes", "65536",
    "--max-python-tool-arguments-bytes", "4096",
]  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("python-tools")
    args = ["--data-dir", str(directory), *service_args(directory), *FLAGS]
    with ServiceProcess("rft-grader", args) as proc:
        yield proc


@pytest.fixture(scope="module")
def stub(service: ServiceProcess):
    with service.channel() as channel:
        yield grader_pb2_grpc.GraderServiceStub(channel)


def describe(stub, source: str = SOURCE, tenant: str = "alice") -> dict[str, dict]:
    request = grader_pb2.DescribePythonToolsRequest(tenant=tenant, source=source)
    response = stub.DescribePythonTools(request, metadata=auth(OPERATOR), timeout=60)
    return {
        tool.name: {"description": tool.description, "parameters": json_format.MessageToDict(tool.input_schema)}
        for tool in response.tools
    }


def call(stub, name: str, arguments: dict | None = None, tenant: str = "alice", timeout: float = 60, source=SOURCE):
    request = grader_pb2.CallPythonToolRequest(tenant=tenant, source=source, name=name, episode_id="ep-1")
    request.arguments.update(arguments or {})
    response = stub.CallPythonTool(request, metadata=auth(OPERATOR), timeout=timeout)
    return response.content, response.is_error


def test_describe_lists_the_public_functions_with_schemas_from_their_signatures(stub) -> None:
    tools = describe(stub)
    # Defined in the source, public, under their own name: not `join` (imported), not
    # `_helper` (private), not `shortcut` (an alias).
    assert list(tools) == [
        "lookup_price", "order_total", "count", "fail", "spin", "hoard", "shout", "remember", "recall",
    ]  # fmt: skip
    assert tools["lookup_price"] == {
        "description": "Price of a product in EUR.",
        "parameters": {
            "type": "object",
            "properties": {"sku": {"type": "string"}},
            "required": ["sku"],
            "additionalProperties": False,
        },
    }
    order = tools["order_total"]["parameters"]
    assert order["properties"] == {
        "skus": {"type": "array", "items": {"type": "string"}},
        "discount": {"type": "number", "default": 0.0},
        "gift": {"type": "boolean", "default": False},
        "note": {},  # no annotation: no type
    }
    assert order["required"] == ["skus"]
    assert tools["count"]["parameters"]["properties"] == {
        "limit": {"type": "integer"},
        "step": {"type": "integer", "default": 1.0},
    }
    assert tools["count"]["description"] == ""


def test_string_annotations_and_dicts_map_too(stub) -> None:
    source = 'from __future__ import annotations\n\ndef f(a: int, b: dict[str, int], c: str | None = None) -> str:\n    return ""\n'
    properties = describe(stub, source)["f"]["parameters"]["properties"]
    assert properties["a"] == {"type": "integer"}
    assert properties["b"] == {"type": "object", "additionalProperties": {"type": "integer"}}
    assert properties["c"] == {"type": ["string", "null"]}
    odd = describe(stub, "def odd(x: [1, 2], y: 'list', z: 'Nonsense[int]' = 3) -> str:\n    return ''\n")
    assert odd["odd"]["parameters"]["properties"] == {"x": {}, "y": {"type": "array"}, "z": {"default": 3.0}}


def test_a_source_that_does_not_compile_or_import_is_invalid_with_its_line(stub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        describe(stub, "def ok() -> str:\n    return 'x'\n\ndef broken(:\n    pass\n")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SyntaxError" in error.value.details() and "line 4" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        describe(stub, "import json\nVALUE = json.loads('{')\n")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "JSONDecodeError" in error.value.details() and "line 2" in error.value.details()


def test_calls_return_text_or_json(stub) -> None:
    assert call(stub, "lookup_price", {"sku": "A1"}) == ("12.50 EUR", False)
    content, is_error = call(stub, "order_total", {"skus": ["A1", "B2"], "discount": 0.5})
    assert not is_error and json.loads(content) == {"total": 7.8, "items": 2, "gift": False}
    assert call(stub, "count", {"limit": 3}) == ("[0, 1, 2]", False)


def test_failures_are_tool_errors_for_the_model(stub) -> None:
    content, is_error = call(stub, "fail", {"reason": "out of stock"})
    assert is_error and content.startswith("ValueError: cannot do that: out of stock (line ")
    assert "/" not in content  # no host (or jail) paths, only the source's line
    content, is_error = call(stub, "lookup_price", {"sku": "A1", "colour": "red"})
    assert is_error and "TypeError" in content and "colour" in content
    content, is_error = call(stub, "lookup_price", {})
    assert is_error and "TypeError" in content and "sku" in content
    for name in ("_helper", "join", "shortcut", "nonexistent"):
        content, is_error = call(stub, name)
        assert is_error and "no tool" in content and "lookup_price" in content, (name, content)
    content, is_error = call(stub, "../../etc/passwd")
    assert is_error and "no tool" in content


def test_an_endless_tool_times_out_at_the_callers_deadline_or_the_sandbox_limit(stub) -> None:
    started = time.monotonic()
    content, is_error = call(stub, "spin", timeout=2.0)
    assert is_error and "wall-clock limit" in content
    assert time.monotonic() - started < 2.0
    content, is_error = call(stub, "spin", timeout=30)  # the sandbox's own 4 s
    assert is_error and ("4 s" in content or "CPU" in content)
    assert call(stub, "lookup_price", {"sku": "B2"}) == ("3.10 EUR", False)  # the worker serves on


def test_memory_and_output_limits_hold(stub) -> None:
    content, is_error = call(stub, "hoard")
    assert is_error and "MemoryError" in content
    content, is_error = call(stub, "shout")
    assert not is_error and content.startswith("AAAA") and content.endswith("[truncated]")
    assert len(content.encode()) <= 8192 + 4096


def test_sizes_are_bounded(stub) -> None:
    big = SOURCE + "#" * 70_000
    for request in (
        grader_pb2.DescribePythonToolsRequest(tenant="alice", source=big),
        grader_pb2.CallPythonToolRequest(tenant="alice", source=big, name="lookup_price"),
    ):
        method = stub.DescribePythonTools if isinstance(request, grader_pb2.DescribePythonToolsRequest) else None
        method = method or stub.CallPythonTool
        with pytest.raises(grpc.RpcError) as error:
            method(request, metadata=auth(OPERATOR), timeout=30)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "max_python_tools_bytes" in error.value.details()
    request = grader_pb2.CallPythonToolRequest(tenant="alice", source=SOURCE, name="lookup_price")
    request.arguments.update({"sku": "x" * 5000})
    with pytest.raises(grpc.RpcError) as error:
        stub.CallPythonTool(request, metadata=auth(OPERATOR), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_python_tool_arguments_bytes" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        describe(stub, "   \n")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_nothing_persists_between_calls_or_crosses_tenants(stub) -> None:
    assert call(stub, "remember", {"secret": "alice-secret"}, tenant="alice") == ("noted", False)
    for tenant in ("bob", "alice"):
        content, is_error = call(stub, "recall", tenant=tenant)
        assert not is_error and json.loads(content) == {"notes": [], "tmp": []}, tenant


def test_tenants_come_from_credentials(stub) -> None:
    request = grader_pb2.CallPythonToolRequest(tenant="alice", source=SOURCE, name="lookup_price")
    assert code_of(stub.CallPythonTool, request, auth(KEYS["bob"])) == grpc.StatusCode.PERMISSION_DENIED
    request = grader_pb2.DescribePythonToolsRequest(tenant="alice", source=SOURCE)
    assert code_of(stub.DescribePythonTools, request, auth(KEYS["bob"])) == grpc.StatusCode.PERMISSION_DENIED
    own = grader_pb2.CallPythonToolRequest(source=SOURCE, name="lookup_price")
    own.arguments.update({"sku": "A1"})
    response = stub.CallPythonTool(own, metadata=auth(KEYS["bob"]), timeout=60)
    assert (response.content, response.is_error) == ("12.50 EUR", False)


def test_calls_and_errors_are_counted_by_tenant(service: ServiceProcess, stub) -> None:
    call(stub, "fail", {"reason": "x"}, tenant="alice")
    call(stub, "lookup_price", {"sku": "A1"}, tenant="alice")
    text = urllib.request.urlopen(service.metrics_url, timeout=10).read().decode()
    label = tenant_label("alice")
    counts = {
        outcome: re.search(
            rf'rft_grader_python_tool_requests_total\{{method="call",outcome="{outcome}",tenant="{label}"\}} (\S+)',
            text,
        )
        for outcome in ("ok", "exception")
    }
    ok, failed = counts["ok"], counts["exception"]
    assert ok and float(ok.group(1)) >= 1 and failed and float(failed.group(1)) >= 1, text[-3000:]
