"""The learner's side of a weight push: casts to the served dtype, one checksum pass per
push, and a request stream that reads the weights one tensor at a time."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import grpc
import torch
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common import dtypes
from rft_common.weights import checksum
from rft_learner.remote import (
    RemoteError,
    RolloutPool,
    is_transient_for_a_stream,
    is_transient_for_a_transfer,
    retry_transient,
)
from rft_learner.weight_sync import PushPlan, wire_tensors

WEIGHTS = {
    "embed.weight": torch.randn(7, 4),
    "norm.weight": torch.ones(4),
    "position_ids": torch.arange(5),
}


def test_tensors_are_cast_to_the_dtype_the_rollout_serves() -> None:
    served = {"embed.weight": "bfloat16", "norm.weight": "bfloat16", "position_ids": "int64"}
    wire = {t.name: t for t in wire_tensors(WEIGHTS.items(), served, "bfloat16")}
    assert {name: t.dtype for name, t in wire.items()} == served
    as_bf16 = WEIGHTS["embed.weight"].to(torch.bfloat16)
    assert bytes(wire["embed.weight"].data) == as_bf16.view(torch.uint16).numpy().tobytes()
    assert wire["embed.weight"].data.nbytes == dtypes.nbytes("bfloat16", (7, 4))
    # A floating tensor the rollout does not list (a LoRA adapter's) takes the engine's dtype.
    (adapter,) = wire_tensors([("lora_A.weight", torch.randn(2, 4))], {}, "float16")
    assert adapter.dtype == "float16"


def test_a_manifest_without_checksums_describes_the_served_tensors() -> None:
    served = {"embed.weight": "bfloat16", "norm.weight": "bfloat16", "position_ids": "int64"}
    checked, described = PushPlan(WEIGHTS.items, served, "bfloat16"), PushPlan(WEIGHTS.items, served, "bfloat16")
    asyncio.run(checked.prepare("crc32"))
    asyncio.run(described.prepare("none"))
    for spec in checked.manifest.tensors:
        spec.checksum = ""
    assert described.manifest.tensors == checked.manifest.tensors  # names, served dtypes, shapes, sizes
    assert described.manifest.checksum_algorithm == rollout_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED


def test_a_push_reads_the_weights_once_for_checksums_and_once_per_stream() -> None:
    reads = []

    def source():
        reads.append(1)
        return WEIGHTS.items()

    plan = PushPlan(source, {"embed.weight": "float32", "norm.weight": "float32", "position_ids": "int64"}, "float32")

    async def stream():
        return [r async for r in plan.requests(3, None, chunk_bytes=16)]

    async def run():
        await plan.prepare()
        return [await stream(), await stream()]

    streams = asyncio.run(run())
    assert len(reads) == 3  # the manifest, then one read per replica stream
    for stream in streams:
        header, chunks = stream[0].header, [r.chunk for r in stream[1:]]
        assert header.version == 3 and [s.name for s in header.manifest.tensors] == list(WEIGHTS)
        for index, tensor in enumerate(WEIGHTS.values()):
            data = b"".join(c.data for c in chunks if c.tensor_index == index)
            assert data == tensor.numpy().tobytes()
            assert header.manifest.tensors[index].checksum == checksum(data, "crc32")
        assert max(len(c.data) for c in chunks) <= 16


def test_a_stream_that_stops_early_finishes_its_read_of_the_source_off_the_event_loop() -> None:
    """A sharded source's read is a pass of collectives on every trainer rank: it must end
    (its close() gathers the rest) even when the replica's stream fails part-way, and in a
    worker thread, for the rest of a large model takes a while to gather."""
    ended_in = []

    def source():
        try:
            yield from WEIGHTS.items()
        finally:
            ended_in.append(threading.current_thread())

    plan = PushPlan(source, {}, "float32")

    async def run():
        await plan.prepare()
        async with contextlib.aclosing(plan.requests(3, None, chunk_bytes=16)) as requests:
            async for request in requests:
                if request.HasField("chunk"):
                    break  # the call failed after the first chunk
        return len(ended_in)

    assert asyncio.run(run()) == 2  # the checksum pass, and the stopped stream's
    assert threading.main_thread() not in ended_in


class DropsTwiceMidStream(rollout_pb2_grpc.RolloutServiceServicer):
    """Stands in for a replica that dies twice while receiving a push, then takes it."""

    def __init__(self) -> None:
        self.attempts = 0

    async def UpdateWeights(self, request_iterator, context):
        self.attempts += 1
        received = 0
        async for _ in request_iterator:
            received += 1
            if self.attempts <= 2 and received == 2:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return rollout_pb2.UpdateWeightsResponse(version=1)


async def push_through_drops(events: list[str]) -> int:
    def source():
        # A generator, as a sharded read is: its `finally` is where the pass would end.
        events.append("open")
        try:
            yield from WEIGHTS.items()
        finally:
            events.append("close")

    servicer = DropsTwiceMidStream()
    server = grpc.aio.server()
    rollout_pb2_grpc.add_RolloutServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    pool = RolloutPool([f"127.0.0.1:{port}"], patience_seconds=60)
    stub, held = pool._stubs[0], []

    class Holding:
        """Keeps every request stream it was given, as any lingering reference would:
        the push must not count on the garbage collector to close them."""

        def UpdateWeights(self, requests, **kwargs):
            held.append(requests)
            return stub.UpdateWeights(requests, **kwargs)

    pool._stubs[0] = Holding()
    try:
        plan = PushPlan(source, {}, "float32")
        await plan.prepare()
        # One tensor per request: the replica drops the stream with tensors still unread.
        await pool._update(0, 1, plan, None)
    finally:
        await pool.close()
        await server.stop(None)
    return servicer.attempts


def test_a_stream_the_replica_dropped_closes_its_read_before_the_retry_reads_again() -> None:
    # gRPC never closes a request stream it stopped reading; under FSDP a read left open
    # would keep every trainer rank in its pass, and the retry's read would wait on it.
    events: list[str] = []
    assert asyncio.run(push_through_drops(events)) == 3
    assert events == ["open", "close"] * 4  # the checksum pass, then three streams, never two at once


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


async def attempts_until_done(failures: list[grpc.aio.AioRpcError], transient=is_transient_for_a_stream) -> int:
    attempts = 0

    async def call() -> None:
        nonlocal attempts
        attempts += 1
        if failures:
            raise failures.pop(0)

    try:
        await retry_transient(call, "push", patience_seconds=30, transient=transient)
    except RemoteError:
        return -attempts
    return attempts


def test_a_push_retries_the_status_grpc_makes_up_for_a_stream_cut_mid_write_only() -> None:
    # grpc.aio reports INTERNAL "Internal error from Core" when the replica ends the call
    # while the stream is still being written (it died mid-push, seen in this file's test
    # above): retried. An INTERNAL the rollout itself sent is not.
    made_up = rpc_error(grpc.StatusCode.INTERNAL, "Internal error from Core")
    assert asyncio.run(attempts_until_done([made_up])) == 2
    assert asyncio.run(attempts_until_done([rpc_error(grpc.StatusCode.INTERNAL, "engine failed")])) == -1
    assert asyncio.run(attempts_until_done([rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad shape")])) == -1


def test_a_collective_push_retries_a_broken_transfer_but_not_a_missed_deadline() -> None:
    broke = rpc_error(grpc.StatusCode.UNAVAILABLE, "the collective transfer broke, nothing changed")
    assert asyncio.run(attempts_until_done([broke], is_transient_for_a_transfer)) == 2
    late = rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert asyncio.run(attempts_until_done([late], is_transient_for_a_transfer)) == -1
    assert asyncio.run(attempts_until_done([late])) == 2  # a stream's push does retry it
