"""Collective weight updates (rft.rollout.v1.CollectiveWeights): the learner's sender
broadcasts over a real gloo group into the real vLLM worker, which receives the whole
update before anything is applied.

The same weights sent collectively or streamed serve the same greedy tokens; a refused
or broken transfer leaves the old weights serving; a repeat of the applied update is
answered without joining."""

from __future__ import annotations

import asyncio
import threading

import grpc
import numpy as np
import pytest
import torch
from rft.rollout.v1 import rollout_pb2
from rft_common import collective
from rft_common.weights import weight_update_requests
from rft_learner.remote import RemoteError, RolloutPool
from rft_learner.weight_sync import CollectiveTransfer, PushPlan, TransferError, WeightSyncSettings, served_dtypes
from rollout_helpers import current_version, greedy, metric_value

PROBES = [[5, 6, 7], [40, 41, 42, 43], [70, 3, 71]]
COLLECTIVE = WeightSyncSettings(mode="collective", host="127.0.0.1", timeout_seconds=30)


def source(weights: dict[str, np.ndarray]):
    return lambda: ((name, torch.from_numpy(array)) for name, array in weights.items())


def outputs(rollout) -> tuple[int, list[list[int]]]:
    return current_version(rollout.stub), [list(s.token_ids) for s in greedy(rollout.stub, PROBES)]


def push(rollout, weights, settings: WeightSyncSettings = COLLECTIVE) -> RolloutPool:
    async def run():
        pool = RolloutPool([rollout.proc.address], patience_seconds=30, weight_sync=settings)
        try:
            pool.set_weights_source(source(weights))
            await pool.push_weights()
            return pool
        finally:
            await pool.close()

    return asyncio.run(run())


def attempt(rollout, version: int, plan: PushPlan, backend: str = "gloo"):
    """One collective UpdateWeights by hand: the call and the sender side by side. Returns
    (the call's reply or its RpcError, what the sender returned or raised)."""
    info = rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    transfer = CollectiveTransfer(COLLECTIVE, plan, rollout.proc.address, backend, info.weight_receivers)
    ended, sent = threading.Event(), []

    def sender():
        try:
            sent.append(transfer.send(ended))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            sent.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        request = rollout_pb2.UpdateWeightsRequest(header=transfer.header(version))
        reply = rollout.stub.UpdateWeights(iter([request]), timeout=120)
    except grpc.RpcError as exc:
        reply = exc
    finally:
        ended.set()
        thread.join(60)
    assert not thread.is_alive(), "the sender did not stop"
    return reply, sent[0]


def plan_of(rollout, weights) -> PushPlan:
    info = rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    plan = PushPlan(source(weights), served_dtypes(info), info.dtype)
    asyncio.run(plan.prepare())
    return plan


def gpu_engine(rollout) -> bool:
    return "nccl" in rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30).collective_backends


def test_the_replica_offers_gloo_to_its_one_worker(rollout) -> None:
    info = rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    # NCCL only where vLLM runs on CUDA: gloo (host memory) is always there.
    expected = ["gloo", "nccl"] if torch.cuda.is_available() and gpu_engine(rollout) else ["gloo"]
    assert list(info.collective_backends) == expected
    assert info.weight_receivers == 1


def test_nccl_from_a_cuda_trainer_serves_the_same_tokens_as_a_stream(rollout, models) -> None:
    """GPU only: the trainer's CUDA tensors (on cuda:1) broadcast over NCCL into vLLM's
    worker (on cuda:0): NCCL refuses two ranks of one group on the same GPU."""
    if not (torch.cuda.device_count() >= 2 and torch.distributed.is_nccl_available() and gpu_engine(rollout)):
        pytest.skip("needs 2 CUDA devices, a torch build with NCCL and the rollout on vLLM's GPU build")
    weights = models.weight_sets["C"]
    rollout.stub.UpdateWeights(weight_update_requests(current_version(rollout.stub) + 1, weights.items()), timeout=120)
    streamed = outputs(rollout)[1]
    rollout.stub.UpdateWeights(
        weight_update_requests(current_version(rollout.stub) + 1, models.weight_sets["B"].items()), timeout=120
    )

    async def run():
        settings = WeightSyncSettings(mode="collective", backend="nccl", host="127.0.0.1", timeout_seconds=60)
        pool = RolloutPool([rollout.proc.address], patience_seconds=30, weight_sync=settings, trainer_on_cuda=True)
        try:
            pool.set_weights_source(lambda: ((n, torch.from_numpy(a).to("cuda:1")) for n, a in weights.items()))
            await pool.push_weights()
            return pool.version
        finally:
            await pool.close()

    version = asyncio.run(run())
    assert outputs(rollout) == (version, streamed)


def test_collective_and_streamed_weights_serve_the_same_tokens(rollout, models) -> None:
    weights_b, weights_c = models.weight_sets["B"], models.weight_sets["C"]
    before = rollout.proc.metrics()
    start = current_version(rollout.stub)
    rollout.stub.UpdateWeights(weight_update_requests(start + 1, weights_c.items()), timeout=120)
    version, streamed = outputs(rollout)

    pool = push(rollout, weights_b)
    version_b, collective_b = outputs(rollout)
    assert version_b == pool.version > version
    assert collective_b != streamed  # other weights, other tokens: the broadcast changed the model

    pool = push(rollout, weights_c)
    assert outputs(rollout) == (pool.version, streamed)
    after = rollout.proc.metrics()
    count = "rft_rollout_weight_update_seconds_count"
    assert (metric_value(after, count, transport="collective") or 0) - (
        metric_value(before, count, transport="collective") or 0
    ) == 2


def test_bytes_that_do_not_match_the_manifest_are_refused_and_the_old_weights_serve(rollout, models) -> None:
    served = outputs(rollout)
    plan = plan_of(rollout, models.weight_sets["C"])
    plan.source = source(models.weight_sets["D"])  # the broadcast carries other bytes than the checksums say
    reply, sent = attempt(rollout, served[0] + 1, plan)
    assert isinstance(reply, grpc.RpcError) and reply.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "crc32" in reply.details()
    # The worker stops at the first bad tensor; the sender sees its peer leave.
    assert isinstance(sent, TransferError) and "closed by peer" in str(sent)
    assert outputs(rollout) == served


def test_a_transfer_the_sender_abandons_changes_nothing_and_the_next_one_lands(rollout, models) -> None:
    served = outputs(rollout)
    weights = models.weight_sets["D"]

    def dies_after_three():
        for index, (name, array) in enumerate(weights.items()):
            if index == 3:
                raise RuntimeError("the trainer died")
            yield name, torch.from_numpy(array)

    plan = plan_of(rollout, weights)
    plan.source = dies_after_three
    reply, sent = attempt(rollout, served[0] + 1, plan)
    assert isinstance(sent, RuntimeError) and "the trainer died" in str(sent)
    assert isinstance(reply, grpc.RpcError) and reply.code() == grpc.StatusCode.UNAVAILABLE, reply
    assert "broke" in reply.details()
    assert outputs(rollout) == served
    assert (
        metric_value(rollout.proc.metrics(), "rft_rollout_weight_update_failures_total", reason="transfer") or 0
    ) >= 1

    plan.source = source(weights)
    reply, sent = attempt(rollout, served[0] + 1, plan)
    assert sent is True and reply.version == served[0] + 1
    assert outputs(rollout)[1] != served[1]


def test_a_repeat_of_the_applied_update_is_answered_without_a_transfer(rollout, models) -> None:
    plan = plan_of(rollout, models.weight_sets["B"])
    version = current_version(rollout.stub) + 1
    first, sent = attempt(rollout, version, plan)
    assert sent is True and first.version == version
    again, sent = attempt(rollout, version, plan)  # a new session, the same update: a lost reply retried
    assert sent is False, "nothing is broadcast for an update already applied"
    assert (again.version, again.apply_seconds) == (version, 0)


def test_a_refused_header_never_blocks_the_sender(rollout, models) -> None:
    served = outputs(rollout)
    plan = plan_of(rollout, models.weight_sets["C"])
    reply, sent = attempt(rollout, served[0] + 1, plan, backend="nccl")
    assert isinstance(reply, grpc.RpcError) and reply.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.collective.backend: 'nccl'" in reply.details() and "gloo" in reply.details()
    assert sent is False
    assert outputs(rollout) == served


def test_a_backend_the_replica_does_not_offer_names_the_flag(rollout, models) -> None:
    with pytest.raises(RemoteError, match="--weight-sync-backend nccl"):
        push(rollout, models.weight_sets["C"], WeightSyncSettings(mode="collective", backend="nccl"))


def test_a_push_retries_a_transfer_that_broke_on_the_way_with_a_new_session(rollout, models, monkeypatch) -> None:
    """The network fails once, mid-broadcast (injected on the learner's side of the
    group): the replica answers UNAVAILABLE, and the pool's retry lands the weights."""
    weights = models.weight_sets["D"]
    rollout.stub.UpdateWeights(weight_update_requests(current_version(rollout.stub) + 1, weights.items()), timeout=120)
    expected = outputs(rollout)[1]
    push(rollout, models.weight_sets["B"])
    broadcasts, real = [], collective.broadcast_bytes

    def fails_once(group, tensor):
        broadcasts.append(1)
        if len(broadcasts) == 3:
            raise RuntimeError("injected: connection reset")
        real(group, tensor)

    monkeypatch.setattr(collective, "broadcast_bytes", fails_once)
    messages: list[str] = []

    async def run():
        pool = RolloutPool([rollout.proc.address], patience_seconds=60, weight_sync=COLLECTIVE)
        pool.on_retry = messages.append
        try:
            pool.set_weights_source(source(weights))
            await pool.push_weights()
            return pool.version
        finally:
            await pool.close()

    version = asyncio.run(run())
    assert [m for m in messages if "UNAVAILABLE" in m], messages
    assert outputs(rollout) == (version, expected)


def test_a_cancelled_push_stops_between_tensors_closes_its_read_and_changes_nothing(rollout, models) -> None:
    served = outputs(rollout)
    weights = models.weight_sets["C"]
    reached, release, closed = threading.Event(), threading.Event(), threading.Event()
    reads = []

    def blocks_at_the_third():  # of the broadcast's read; the manifest's read goes through
        reads.append(1)
        broadcast = len(reads) == 2
        try:
            for index, (name, array) in enumerate(weights.items()):
                if index == 2 and broadcast:
                    reached.set()
                    release.wait(30)
                yield name, torch.from_numpy(array)
        finally:
            if broadcast:
                closed.set()

    async def run():
        pool = RolloutPool([rollout.proc.address], patience_seconds=30, weight_sync=COLLECTIVE)
        try:
            pool.set_weights_source(blocks_at_the_third)
            task = asyncio.ensure_future(pool.push_weights())
            while not reached.is_set():
                await asyncio.sleep(0.05)
            task.cancel()
            await asyncio.sleep(0.2)
            assert not task.done(), "the push returned before its broadcast thread stopped"
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert closed.is_set(), "the read of the weights was left open"
        finally:
            await pool.close()

    asyncio.run(run())
    assert outputs(rollout) == served
    pool = push(rollout, weights)  # the replica takes the next transfer
    assert outputs(rollout)[0] == pool.version
