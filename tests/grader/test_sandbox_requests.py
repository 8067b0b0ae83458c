"""Each sandbox request gets its own answer, in time, and tools cannot shut grades out
(review of the Python-tools path): through a real rft-grader over gRPC, and through
SandboxPool with real jails.

- A request its caller gave up after it was written (cancelled) used to leave its answer
  in the worker's pipe: the next request read it as its own, and every later one on that
  worker was shifted by one. Now the worker drains that answer (or is restarted), and
  every answer carries the request's id, checked by the server.
- A tool call's time limit is what is left of its caller's deadline once it has a
  worker; one whose deadline passed while it waited is answered as a timeout, unrun.
- Tool calls hold at most sandbox_workers_per_tenant - 1 of a tenant's workers.
- DescribePythonTools leaves out defaults (and Literal values) JSON Schema cannot hold.
"""

from __future__ import annotations

import asyncio
import json
import struct
import textwrap
import time

import grpc
import pytest
from google.protobuf import json_format
from graderlib import grade_request, scores
from prometheus_client import REGISTRY
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft_grader.sandbox import SandboxPool, SandboxSettings
from service_process import ServiceProcess
from tenant_keys import OPERATOR, auth, service_args

pytestmark = pytest.mark.python_grader

TOOLS = textwrap.dedent("""
    import time


    def slow(x: str) -> str:
        time.sleep(2.5)
        return "slow:" + x


    def fast(x: str) -> str:
        return "fast:" + x


    def nap(seconds: float) -> str:
        time.sleep(seconds)
        return "slept"


    def spin() -> str:
        while True:
            pass
""")

GRADER = {
    "type": "python",
    "name": "p",
    "source": "import time\n\ndef grade(sample, item):\n    time.sleep(item.get('sleep', 0))\n    return item['v']\n",
}

FLAGS = [
    "--sandbox-timeout-seconds", "8",
    "--sandbox-cpu-seconds", "8",
    "--sandbox-memory-bytes", str(256 * 1024**2),
]  # fmt: skip


def start(tmp_path_factory: pytest.TempPathFactory, workers: int):
    directory = tmp_path_factory.mktemp(f"sandbox-requests-{workers}")
    args = ["--data-dir", str(directory), *service_args(directory), *FLAGS]
    return ServiceProcess("rft-grader", [*args, "--sandbox-workers-per-tenant", str(workers)])


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory):
    """A grader whose tenants have one sandbox worker each: every request of a tenant
    goes through the same worker, in order."""
    with start(tmp_path_factory, 1) as proc, proc.channel() as channel:
        yield grader_pb2_grpc.GraderServiceStub(channel)


def tool_request(name: str, arguments: dict | None = None, source: str = TOOLS) -> grader_pb2.CallPythonToolRequest:
    request = grader_pb2.CallPythonToolRequest(tenant="alice", source=source, name=name, episode_id="ep")
    request.arguments.update(arguments or {})
    return request


def call(stub, name: str, arguments: dict | None = None, timeout: float = 60) -> tuple[str, bool]:
    response = stub.CallPythonTool(tool_request(name, arguments), metadata=auth(OPERATOR), timeout=timeout)
    return response.content, response.is_error


def grade(stub, items: list[dict], timeout: float = 60) -> list:
    request = grade_request(GRADER, [("x", item) for item in items], tenant="alice")
    return scores(stub.Grade(request, metadata=auth(OPERATOR), timeout=timeout))


def test_a_cancelled_tool_call_does_not_answer_the_next_ones(one_worker) -> None:
    """The reviewer's scenario: cancel slow("A") while it runs, then B, C, D get theirs
    (they got ['slow:A', 'fast:B', 'fast:C'])."""
    assert call(one_worker, "fast", {"x": "warm"}) == ("fast:warm", False)
    future = one_worker.CallPythonTool.future(tool_request("slow", {"x": "A"}), metadata=auth(OPERATOR), timeout=60)
    time.sleep(1.0)  # written to the worker, sleeping in the jail
    assert future.cancel()
    assert [call(one_worker, "fast", {"x": x}) for x in "BCD"] == [(f"fast:{x}", False) for x in "BCD"]


def test_a_cancelled_grade_does_not_answer_the_next_ones(one_worker) -> None:
    assert grade(one_worker, [{"v": 0.125}]) == [0.125]
    request = grade_request(GRADER, [("x", {"v": 0.25, "sleep": 2.5})], tenant="alice")
    future = one_worker.Grade.future(request, metadata=auth(OPERATOR), timeout=60)
    time.sleep(1.0)
    assert future.cancel()
    assert [grade(one_worker, [{"v": v}]) for v in (0.5, 0.75, 1.0)] == [[0.5], [0.75], [1.0]]
    # ...and tool calls on the same worker after it.
    assert call(one_worker, "fast", {"x": "E"}) == ("fast:E", False)


def test_a_call_whose_deadline_passes_while_it_waits_is_a_timeout_and_does_not_run(one_worker) -> None:
    busy = one_worker.CallPythonTool.future(tool_request("nap", {"seconds": 2.5}), metadata=auth(OPERATOR), timeout=60)
    time.sleep(0.5)  # the nap holds the tenant's only worker
    started = time.monotonic()
    content, is_error = call(one_worker, "fast", {"x": "late"}, timeout=1.0)  # was DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0
    assert is_error and "deadline passed" in content and "not run" in content, content
    assert (busy.result().content, busy.result().is_error) == ("slept", False)


def test_the_time_limit_is_what_is_left_of_the_deadline_once_a_worker_is_free(one_worker) -> None:
    """Computed on arrival, the limit let a queued call run past its caller's deadline."""
    busy = one_worker.CallPythonTool.future(tool_request("nap", {"seconds": 1.5}), metadata=auth(OPERATOR), timeout=60)
    time.sleep(0.3)
    started = time.monotonic()
    content, is_error = call(one_worker, "spin", timeout=3.0)  # was DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3.0
    assert is_error and "wall-clock limit" in content, content
    assert busy.result().content == "slept"
    assert call(one_worker, "fast", {"x": "after"}) == ("fast:after", False)


def test_describe_leaves_out_defaults_json_schema_cannot_hold(one_worker) -> None:
    """`def f(x=10**400)` failed with INTERNAL (OverflowError in Struct.update)."""
    source = textwrap.dedent("""
        from typing import Literal


        def big(x=10**400, y: int = 2**53, z: float = 1e300) -> str:
            return ""


        def odd(a=float("nan"), b=float("inf"), c=object(), d=[1, 10**400], e={"k": -float("inf")},
                f: Literal[10**400, "ok"] = "ok", g=(1, 2), h={1: 2}, i=[[[[[[[[[[1]]]]]]]]]]) -> str:
            return ""
    """)
    request = grader_pb2.DescribePythonToolsRequest(tenant="alice", source=source)
    response = one_worker.DescribePythonTools(request, metadata=auth(OPERATOR), timeout=60)
    tools = {tool.name: json_format.MessageToDict(tool.input_schema) for tool in response.tools}
    assert tools["big"]["properties"] == {
        "x": {},
        "y": {"type": "integer", "default": 2**53},
        "z": {"type": "number", "default": 1e300},
    }
    properties = tools["odd"]["properties"]
    assert properties["f"] == {"enum": ["ok"], "default": "ok"}
    assert properties["g"] == {"default": [1, 2]}
    for name in "abcdehi":
        assert properties[name] == {}, (name, properties[name])


def test_a_description_tampered_with_by_the_module_is_refused_naming_the_parameter(one_worker) -> None:
    """The describing child ran the tenant's module, which can change what it answers: the
    grader checks the numbers again (INVALID_ARGUMENT, not INTERNAL or an infinity)."""
    for bad in ("1e400", "NaN", "1" + "0" * 400):
        source = textwrap.dedent(f"""
            import json

            _dumps = json.dumps


            def f(x: int = 7) -> str:
                return ""


            json.dumps = lambda value, **kw: _dumps(value, **kw).replace('"default": 7', '"default": {bad}')
        """)
        request = grader_pb2.DescribePythonToolsRequest(tenant="alice", source=source)
        with pytest.raises(grpc.RpcError) as error:
            one_worker.DescribePythonTools(request, metadata=auth(OPERATOR), timeout=60)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, error.value.details())
        assert "tool f, parameter x" in error.value.details() or "NaN is not JSON" in error.value.details()


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory):
    with start(tmp_path_factory, 2) as proc, proc.channel() as channel:
        yield grader_pb2_grpc.GraderServiceStub(channel)


def test_tools_running_to_their_limit_do_not_shut_out_the_tenants_grades(two_workers) -> None:
    """With two workers, two tool calls that run until the sandbox's limit took both, and
    the tenant's grades waited for them; tool calls now hold at most one."""
    assert grade(two_workers, [{"v": 0.5}] * 64) == [0.5] * 64  # two chunks: both workers started
    naps = [
        two_workers.CallPythonTool.future(tool_request("nap", {"seconds": 100}), metadata=auth(OPERATOR), timeout=12)
        for _ in range(2)
    ]
    time.sleep(0.5)
    started = time.monotonic()
    assert grade(two_workers, [{"v": 1.0}]) == [1.0]
    assert time.monotonic() - started < 5.0  # a nap runs 8 s (the sandbox's limit)
    for nap in naps:
        assert nap.result().is_error and "wall-clock limit" in nap.result().content


# -- SandboxPool ------------------------------------------------------------------------

FAST = {"sandbox_timeout_seconds": 2, "sandbox_cpu_seconds": 2, "sandbox_memory_bytes": 256 * 1024**2}
SOURCE = "def grade(sample, item):\n    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n"
RIGHT = [({"output_text": "1"}, {"answer": "1"})]


def kills(reason: str) -> float:
    return REGISTRY.get_sample_value("rft_grader_sandbox_kills_total", {"reason": reason}) or 0.0


def test_an_answer_to_another_request_fails_the_worker_and_the_batch_is_retried() -> None:
    """Defence in depth: answers carry the request's id. A request whose answer nobody read
    (written straight to the worker here) must not answer the next batch."""

    async def run() -> None:
        async with SandboxPool(SandboxSettings(sandbox_workers_per_tenant=1, **FAST)) as pool:
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0
            await asyncio.gather(*pool._settling)
            (worker,) = pool._tenants["t"].workers
            header = json.dumps({"source": SOURCE, "count": 1}).encode()
            body = json.dumps([[{"output_text": "1"}, {"answer": "2"}]]).encode()  # scores 0.0
            worker._writer.write(struct.pack("!I", len(header)) + header + struct.pack("!I", len(body)) + body)
            before = kills("wrong_answer")
            assert [o.score for o in await pool.grade("t", SOURCE, RIGHT)] == [1.0]  # was the old 0.0
            assert kills("wrong_answer") == before + 1

    asyncio.run(run())


def test_a_cancelled_batch_that_may_run_long_restarts_its_worker() -> None:
    """A given-up request that may run past DRAIN_SECONDS is not waited for: the worker is
    restarted, and the next batch runs at once and gets its own scores."""
    endless = "def grade(sample, item):\n    while True:\n        pass\n"

    async def run() -> None:
        settings = SandboxSettings(
            sandbox_workers_per_tenant=1, **{**FAST, "sandbox_timeout_seconds": 20, "sandbox_cpu_seconds": 20}
        )
        async with SandboxPool(settings) as pool:
            assert (await pool.grade("t", SOURCE, RIGHT))[0].score == 1.0
            (jail,) = pool.worker_pids()["t"]
            task = asyncio.create_task(pool.grade("t", endless, RIGHT))
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            started = time.monotonic()
            assert [o.score for o in await pool.grade("t", SOURCE, RIGHT)] == [1.0]
            assert time.monotonic() - started < 15  # not after the endless grade's 20 s
            assert pool.worker_pids()["t"] != [jail]

    asyncio.run(run())


def test_a_cancelled_tool_call_through_the_pool_is_drained() -> None:
    """One that ends soon (within DRAIN_SECONDS) is drained: same worker, next call's own result."""
    tools = "import time\n\ndef slow() -> str:\n    time.sleep(1.5)\n    return 'slow'\n\ndef fast() -> str:\n    return 'fast'\n"

    async def run() -> None:
        async with SandboxPool(SandboxSettings(sandbox_workers_per_tenant=1, **FAST)) as pool:
            assert (await pool.run_tool("t", tools, "call", "fast", {})).message == "fast"
            (jail,) = pool.worker_pids()["t"]
            task = asyncio.create_task(pool.run_tool("t", tools, "call", "slow", {}))
            await asyncio.sleep(0.7)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert [(await pool.run_tool("t", tools, "call", "fast", {})).message for _ in range(3)] == ["fast"] * 3
            assert pool.worker_pids()["t"] == [jail]

    asyncio.run(run())
