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
from rft_common.client import aio_channel
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
