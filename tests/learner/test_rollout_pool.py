"""RolloutPool against real rollout processes: a replica that lost the job's weights (it
restarted) gets them back once, however many of its requests notice at the same time."""

from __future__ import annotations

import asyncio

from rft.rollout.v1 import rollout_pb2
from rft_learner.hparams import LoraSpec
from rft_learner.remote import RolloutPool
from rft_learner.trainer import lora
from rft_learner.trainer.policy import load_model, named_arrays

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
    arrays = named_arrays(load_model(tiny_model))
    pool, results, messages = generate_after_a_lost_version(
        rollout.address, lambda pool: pool.set_weights_source(lambda: arrays)
    )
    assert_resent_once(pool, results, messages)


def test_a_stale_lora_replica_gets_base_and_adapter_again_once(lora_rollout):
    model = lora.add_adapter(load_model(lora_rollout.model_dir), LoraSpec(rank=4, alpha=8.0))
    base, adapter = lora.base_arrays(model), lora.adapter_arrays(model)
    adapter_spec = rollout_pb2.LoraAdapter(rank=4, alpha=8.0)
    pool, results, messages = generate_after_a_lost_version(
        lora_rollout.address, lambda pool: pool.set_weights_source(lambda: adapter, lambda: base, adapter_spec)
    )
    assert_resent_once(pool, results, messages)
    info = lora_rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=30)
    assert info.policy_version == pool.version and info.lora.rank == 4
