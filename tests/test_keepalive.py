"""The suite's client channels (rft_common.client) detect a peer that stops answering
without closing its connection, and their keepalive pings do not get a live call dropped.

A process frozen with SIGSTOP stands in for a node that was lost: the kernel keeps its
sockets open, so only the HTTP/2 pings can tell that nothing answers any more.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.client import FOREIGN_PINGS_WITHOUT_DATA, SUITE_PINGS_WITHOUT_DATA, aio_channel
from service_process import ServiceProcess

SPEC = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}"}  # fmt: skip
SLOW_SPEC = {
    "type": "python",
    "name": "slow",
    "source": "import time\n\ndef grade(sample, item):\n    time.sleep(5)\n    return 1.0\n",
}


def grade_request(spec: dict) -> grader_pb2.GradeRequest:
    request = grader_pb2.GradeRequest()
    request.spec.update(spec)
    item = request.items.add()
    item.sample.output_text = "4"
    item.item.update({"answer": "4"})
    return request


async def call_frozen_grader(grader: ServiceProcess) -> grpc.StatusCode:
    # No retries: what is measured is how the one call ends.
    async with aio_channel(grader.address, retries=False, keepalive_seconds=1, keepalive_timeout_seconds=1) as channel:
        stub = grader_pb2_grpc.GraderServiceStub(channel)
        await stub.Grade(grade_request(SPEC), timeout=30)  # connected, and answering
        os.kill(grader.proc.pid, signal.SIGSTOP)
        try:
            await stub.Grade(grade_request(SPEC), timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        finally:
            os.kill(grader.proc.pid, signal.SIGCONT)
    raise AssertionError("a frozen grader answered")


def test_a_call_to_a_frozen_peer_fails_unavailable_before_its_deadline(tmp_path) -> None:
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path)]) as grader:
        # Without pings the call would wait out its 30 s deadline (DEADLINE_EXCEEDED);
        # UNAVAILABLE is what the learner's retries treat as "the peer went away".
        assert asyncio.run(call_frozen_grader(grader)) == grpc.StatusCode.UNAVAILABLE


async def slow_grade(grader: ServiceProcess) -> float:
    async with aio_channel(grader.address, retries=False, keepalive_seconds=1, keepalive_timeout_seconds=1) as channel:
        response = await grader_pb2_grpc.GraderServiceStub(channel).Grade(grade_request(SLOW_SPEC), timeout=60)
    result = response.results[0]
    assert not result.HasField("error"), result.error
    return result.score


def test_pings_during_a_long_silent_call_are_accepted_by_the_server(tmp_path) -> None:
    # A grade that takes 5 s sends no byte meanwhile: the client pings every second. With
    # gRPC's default server policy (one ping per 5 minutes) the third would be "too many
    # pings" and the connection would be dropped under the call.
    with ServiceProcess("rft-grader", ["--data-dir", str(tmp_path)]) as grader:
        assert asyncio.run(slow_grade(grader)) == 1.0


class Refusing(rollout_pb2_grpc.RolloutServiceServicer):
    """Answers every call UNAVAILABLE, counting the attempts gRPC makes."""

    def __init__(self) -> None:
        self.attempts = {"GetModelInfo": 0, "UpdateWeights": 0}

    async def GetModelInfo(self, request, context):
        self.attempts["GetModelInfo"] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")

    async def UpdateWeights(self, request_iterator, context):
        self.attempts["UpdateWeights"] += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


async def attempts_per_call() -> dict[str, int]:
    servicer = Refusing()
    server = grpc.aio.server()
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio_channel(f"127.0.0.1:{port}") as channel:
            stub = rollout_pb2_grpc.RolloutServiceStub(channel)
            for call in (
                lambda: stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30),
                lambda: stub.UpdateWeights(iter([rollout_pb2.UpdateWeightsRequest()]), timeout=30),
            ):
                try:
                    await call()
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)
    return servicer.attempts


def test_grpc_retries_unary_calls_but_never_a_client_stream() -> None:
    # The server here is a stand-in: what is tested is the channel's retry policy.
    attempts = asyncio.run(attempts_per_call())
    assert attempts["GetModelInfo"] == 5  # the retry policy's maxAttempts
    assert attempts["UpdateWeights"] == 1  # RolloutPool restarts a push itself


class SlowGrader(grader_pb2_grpc.GraderServiceServicer):
    async def Grade(self, request, context):
        await asyncio.sleep(6)  # a model judging a batch: no byte on the wire meanwhile
        return grader_pb2.GradeResponse()


async def grade_on_a_default_server(pings_without_data: int) -> grpc.StatusCode:
    server = grpc.aio.server()  # gRPC's default ping policy, as a customer's own grader has
    grader_pb2_grpc.add_GraderServiceServicer_to_server(SlowGrader(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with aio_channel(
            f"127.0.0.1:{port}",
            retries=False,
            keepalive_seconds=1,
            keepalive_timeout_seconds=1,
            pings_without_data=pings_without_data,
        ) as channel:
            await grader_pb2_grpc.GraderServiceStub(channel).Grade(grader_pb2.GradeRequest(), timeout=30)
            return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await server.stop(None)


def test_a_grader_we_do_not_run_is_pinged_within_its_default_policy() -> None:
    # The learner's grader channels use the foreign budget: the long call survives.
    assert asyncio.run(grade_on_a_default_server(FOREIGN_PINGS_WITHOUT_DATA)) == grpc.StatusCode.OK
    # The suite's own budget would have the server drop the call for "too many pings".
    assert asyncio.run(grade_on_a_default_server(SUITE_PINGS_WITHOUT_DATA)) == grpc.StatusCode.UNAVAILABLE
