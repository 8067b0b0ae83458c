"""RolloutPool against real rollout processes: a replica that lost the job's weights (it
restarted) gets them back once, however many of its requests notice at the same time."""

from __future__ import annotations

import asyncio
import pathlib

import pytest
import torch
from rft.rollout.v1 import rollout_pb2
from rft_learner.hparams import LoraSpec
from rft_learner.remote import RemoteError, RolloutPool
from rft_learner.trainer import lora
from rft_learner.trainer.policy import load_model
from service_process import ServiceProcess

DEMO_BASE = pathlib.Path(__file__).resolve().parents[2] / "models" / "demo-base"

PROMPTS = [[{"role": "user", "content": f"What is {n} + {n}?"}] for n in range(8)]
SAMPLING = rollout_pb2.SamplingParams(temperature=1.0, max_tokens=4, n=2)


def generate_after_a_lost_version(address: str, configure) -> tuple[RolloutPool, list, list[str]]:
    """Put a pool one version ahead of what the replica serves, as after a replica
    restart, and generate all prompts at once: every request comes back stale together."""

    async def run():
        pool = RolloutPool([address], patience_seconds=60)
        messages: list[str] = []
        pool.on_retry = messages.append
        try:
            configure(pool)
            await pool.push_weights()
            (info,) = await pool.model_info()
            assert info.policy_version == pool.version
            pool.version += 3  # the version the job believes the replica serves
            results = await pool.generate(PROMPTS, SAMPLING)
            return pool, results, messages
        finally:
            await pool.close()

    return asyncio.run(run())


def assert_resent_once(pool: RolloutPool, results: list, messages: list[str]) -> None:
    assert len(results) == len(PROMPTS)
    assert {s.policy_version for r in results for s in r.samples} == {pool.version}
    assert all(len(r.samples) == SAMPLING.n for r in results)
    resends = [m for m in messages if "re-sending weights" in m]
    assert len(resends) == 1, messages


def test_a_stale_replica_gets_full_weights_again_once(rollout, tiny_model):
    model = load_model(tiny_model)
    pool, results, messages = generate_after_a_lost_version(
        rollout.address, lambda pool: pool.set_weights_source(lambda: model.state_dict().items())
    )
    assert_resent_once(pool, results, messages)


def test_a_stale_lora_replica_gets_base_and_adapter_again_once(lora_rollout):
    model = lora.add_adapter(load_model(lora_rollout.model_dir), LoraSpec(rank=4, alpha=8.0))
    base, adapter = lora.base_state_dict(model).items, lora.adapter_state_dict(model).items
    adapter_spec = rollout_pb2.LoraAdapter(rank=4, alpha=8.0)
    pool, results, messages = generate_after_a_lost_version(
        lora_rollout.address, lambda pool: pool.set_weights_source(adapter, base, adapter_spec)
    )
    assert_resent_once(pool, results, messages)
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    assert info.policy_version == pool.version and info.lora.rank == 4


def test_a_lora_replica_restarted_between_pushes_gets_its_base_again(tmp_path):
    """The base goes to a replica once; if the replica restarts afterwards it holds the
    weights it loads at start, and the next adapter must not go on those."""
    torch.manual_seed(0)
    model = load_model(DEMO_BASE)
    with torch.no_grad():  # a base the replica does not start from, as after an SFT warm-up
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    policy = lora.add_adapter(model, LoraSpec(rank=4, alpha=8.0))
    with torch.no_grad():  # PEFT starts B at zero: make the adapter count
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    base, adapter = lora.base_state_dict(policy).items, lora.adapter_state_dict(policy).items

    args = ["--model", str(DEMO_BASE), "--max-lora-rank", "8", "--warmup-requests", "0"]
    replica = [ServiceProcess("rft-rollout", args, ready_timeout=300).__enter__()]
    messages: list[str] = []

    async def push_and_generate(pool: RolloutPool):
        await pool.push_weights()
        return await pool.generate(PROMPTS[:2], rollout_pb2.SamplingParams(temperature=0.0, max_tokens=8))

    async def run():
        pool = RolloutPool([replica[0].address], patience_seconds=120)
        pool.on_retry = messages.append
        pool.set_weights_source(adapter, base, rollout_pb2.LoraAdapter(rank=4, alpha=8.0))
        try:
            await push_and_generate(pool)
            replica[0].kill()  # between two steps: the next push is an adapter only
            replica[0] = replica[0].restarted().__enter__()
            return await push_and_generate(pool)
        finally:
            await pool.close()

    try:
        results = asyncio.run(run())
    finally:
        replica[0].stop()

    for result in results:
        sample = result.samples[0]
        ids = torch.tensor([result.prompt_token_ids + sample.token_ids])
        with torch.no_grad():
            logits = policy(input_ids=ids).logits[0, len(result.prompt_token_ids) - 1 : -1]
        expected = torch.log_softmax(logits, dim=-1)[torch.arange(len(sample.token_ids)), sample.token_ids]
        torch.testing.assert_close(torch.tensor(sample.logprobs), expected, atol=1e-3, rtol=0)
    assert any("lost the LoRA base; re-sending it" in m for m in messages), messages


def test_a_push_whose_weights_change_midway_fails_with_the_reason(rollout, tiny_model):
    """An error while streaming (here the weights lose a tensor between the checksum pass
    and the stream) ends the push with a RemoteError naming it, not a bare cancellation."""
    model = load_model(tiny_model)
    reads = []

    def source():
        reads.append(1)
        items = list(model.state_dict().items())
        return items if len(reads) == 1 else items[:-1]

    async def run():
        pool = RolloutPool([rollout.address], patience_seconds=30)
        pool.set_weights_source(source)
        try:
            await pool.push_weights()
        finally:
            await pool.close()

    with pytest.raises(RemoteError, match="failed while sending: the weights have .* tensors, the manifest announced"):
        asyncio.run(run())
