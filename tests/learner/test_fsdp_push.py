"""Under --trainer-sharding fsdp a weight push streams the policy from the trainer ranks'
shards tensor by tensor: the replica streams carry the gathered state dict, rank 0 holds
about one whole tensor at a time (never the model), a stream that stops early still finishes its
pass on every rank (the ranks stay in step), and a later push reads the weights as they
are then (what a restarted replica gets).

Rank 0 (with its Updater's rank worker) runs in a child process, this file as a script: a
rank left waiting in a collective then fails the test by timeout rather than hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import sys
import threading
import weakref

import torch
from rft_common.weights import checksum

SCENARIO_TIMEOUT = 180  # the scenario takes ~15 s; a rank left in a collective would wait 30 min


def test_a_sharded_push_streams_the_gathered_weights_one_tensor_at_a_time(tiny_model, tmp_path) -> None:
    out = tmp_path / "push.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, __file__, str(tiny_model), str(out)], check=True, timeout=SCENARIO_TIMEOUT, env=env)
    result = torch.load(out)
    whole, initial = result["whole"], result["initial"]
    assert list(result["manifest"]) == list(whole), "the push sends every tensor of the state dict, in its order"
    for stream in result["streams"]:  # two replica streams of one push, and the first after one more step
        assert list(stream) == list(whole)
        for name, tensor in stream.items():
            assert torch.equal(tensor, whole[name]), name
            assert result["manifest"][name] == checksum(tensor.numpy().tobytes(), "crc32"), name
    moved = [name for name in whole if not torch.equal(whole[name], initial[name])]
    assert len(moved) > len(whole) // 2, "the update barely changed the model: the comparison proves nothing"
    after = result["after_another_step"]
    assert list(after) == list(result["whole_after"])
    assert all(torch.equal(after[name], tensor) for name, tensor in result["whole_after"].items())
    assert any(not torch.equal(after[name], whole[name]) for name in whole), "a later push sent stale weights"

    # Rank 0's memory: the push holds one gathered tensor at a time, never the model.
    sizes = [tensor.numel() * tensor.element_size() for tensor in whole.values()]
    assert result["peak_live_tensors"] == 1
    assert result["peak_live_bytes"] <= max(sizes) < sum(sizes) / 4, "the model is only a few tensors"
    # The manifest, the stream stopped early and two replica streams; after the step, the
    # manifest and one stream.
    assert result["passes"] == 6


class LiveGathered:
    """Counts the whole tensors gathered from shards on rank 0 that the push still holds:
    the source hands out a copy of each one (torch's collectives may keep their own
    output a while longer; that is theirs) and a weak reference on the copy's storage says
    when the push lets go of it."""

    def __init__(self) -> None:
        self.passes = 0
        self.live = self.live_bytes = self.peak = self.peak_bytes = 0
        self._lock = threading.Lock()

    def wrap(self, gathered_tensors):
        from torch.distributed.tensor import DTensor

        def tracked(model):
            self.passes += 1
            sharded = {name for name, value in model.state_dict().items() if isinstance(value, DTensor)}
            for name, tensor in gathered_tensors(model):
                if name in sharded:
                    tensor = tensor.clone()
                    self._gathered(tensor.untyped_storage())
                yield name, tensor
                del tensor

        return tracked

    def _gathered(self, storage) -> None:
        nbytes = storage.nbytes()
        with self._lock:
            self.live, self.live_bytes = self.live + 1, self.live_bytes + nbytes
            self.peak, self.peak_bytes = max(self.peak, self.live), max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._freed, nbytes)

    def _freed(self, nbytes: int) -> None:
        with self._lock:
            self.live, self.live_bytes = self.live - 1, self.live_bytes - nbytes


def received(requests) -> dict[str, torch.Tensor]:
    """The tensors a replica would rebuild from one UpdateWeights stream (float32 here)."""
    specs = requests[0].header.manifest.tensors
    data = [bytearray() for _ in specs]
    for request in requests[1:]:
        assert request.chunk.offset == len(data[request.chunk.tensor_index])
        data[request.chunk.tensor_index] += request.chunk.data
    return {
        spec.name: torch.frombuffer(raw, dtype=torch.float32).reshape(tuple(spec.shape)).clone()
        for spec, raw in zip(specs, data, strict=True)
    }


def scenario(model_dir: str, out: str) -> None:
    """Rank 0: one RL step on 2 gloo ranks with the model sharded, then pushes of it."""
    from dp_worker import fixed_groups
    from rft_learner.hparams import ReinforcementParams
    from rft_learner.trainer import ranks
    from rft_learner.trainer.policy import load_model, load_tokenizer
    from rft_learner.weight_sync import PushPlan

    torch.manual_seed(0)
    updater = ranks.Updater(2, sharding_mode="fsdp")
    updater.start()
    try:
        model = load_model(model_dir)
        initial = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        optimizer = updater.begin_phase(model_dir, model, 1e-2)
        assert updater.sharded
        params = ReinforcementParams(algorithm="grpo", group_size=3, kl_coef=0.0)
        groups, pad_id = fixed_groups(model.config.vocab_size), load_tokenizer(model_dir).pad_token_id
        updater.train_rl(model, None, optimizer, groups, params, pad_id, None)

        tracker = LiveGathered()
        ranks.gathered_tensors = tracker.wrap(ranks.gathered_tensors)

        async def stream(plan: PushPlan, stop_after: int | None = None) -> list:
            collected = []
            async with contextlib.aclosing(plan.requests(1, None, chunk_bytes=4096)) as requests:
                async for request in requests:
                    collected.append(request)
                    if len(collected) == stop_after:
                        break  # a replica's call failed mid-stream: the rest of the pass is drained
            return collected

        async def push() -> tuple[PushPlan, list, list]:
            plan = PushPlan(lambda: updater.streamed_weights(model), {}, "float32")
            await plan.prepare()
            await stream(plan, stop_after=3)
            # Two replicas at once, as RolloutPool.push_weights without one_read_at_a_time:
            # their passes must still run one after the other.
            first, second = await asyncio.gather(stream(plan), stream(plan))
            return plan, first, second

        plan, first, second = asyncio.run(push())
        whole = updater.weights(model)  # torch's full state dict, gathered at once
        updater.train_rl(model, None, optimizer, groups, params, pad_id, None)  # the ranks are still in step
        later = PushPlan(lambda: updater.streamed_weights(model), {}, "float32")

        async def push_later() -> list:
            await later.prepare()
            return [request async for request in later.requests(2, None)]

        after = asyncio.run(push_later())
        torch.save(
            {
                "initial": initial,
                "whole": whole,
                "manifest": {spec.name: spec.checksum for spec in plan.manifest.tensors},
                "streams": [received(first), received(second)],
                "after_another_step": received(after),
                "whole_after": updater.weights(model),
                "passes": tracker.passes,
                "peak_live_tensors": tracker.peak,
                "peak_live_bytes": tracker.peak_bytes,
            },
            out,
        )
    finally:
        updater.close()


if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).parent))  # dp_worker
    scenario(*sys.argv[1:])
