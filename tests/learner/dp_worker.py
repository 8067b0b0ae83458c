"""Runs two RL update steps on a fixed batch, alone or as one rank under torchrun, and
saves the resulting weights (rank 0). test_data_parallel.py compares the two. With a
third argument "lora" the model trains a LoRA adapter (the reference is its base), with
"fsdp" model and reference are sharded with FSDP2 (trainer.sharding); a fourth is the
updates' micro_batch_tokens (default 0, no micro-batches)."""

from __future__ import annotations

import dataclasses
import sys

import torch
import torch.distributed as dist
from rft_learner.hparams import LoraSpec, ReinforcementParams
from rft_learner.trainer import lora, sharding
from rft_learner.trainer.distributed import DataParallel
from rft_learner.trainer.policy import load_model, load_tokenizer, trainable_parameters
from rft_learner.trainer.updates import Group, rl_update


def fixed_groups(vocab: int) -> list[Group]:
    generator = torch.Generator().manual_seed(1)
    groups = []
    for g in range(4):
        prompt = torch.randint(3, vocab, (5 + g,), generator=generator).tolist()
        completions = [torch.randint(3, vocab, (2 + (g + s) % 4,), generator=generator).tolist() for s in range(3)]
        logprobs = [[-3.0 - 0.1 * i for i in range(len(c))] for c in completions]
        rewards = [float((g + s) % 2) for s in range(3)]
        groups.append(Group(prompt, completions, logprobs, rewards))
    return groups


def main(model_dir: str, out: str, variant: str = "full", micro_batch_tokens: str = "0") -> None:
    torch.manual_seed(0)
    data_parallel = DataParallel.from_environment("gloo")
    model, reference = load_model(model_dir), load_model(model_dir)
    reference.requires_grad_(False)
    if variant == "lora":
        # Every rank draws the same adapter from the same seed.
        model, reference = lora.add_adapter(model, LoraSpec(rank=4, alpha=8.0)), None
    if variant == "fsdp" and data_parallel is not None:
        model, reference = sharding.shard_model(model), sharding.shard_model(reference)
        data_parallel = dataclasses.replace(data_parallel, sharded=True)
    tokenizer = load_tokenizer(model_dir)
    # Plain SGD: the comparison is about gradients; Adam would amplify float noise on ~0 gradients.
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.5)
    params = ReinforcementParams(algorithm="grpo", group_size=3, kl_coef=0.05)
    groups = fixed_groups(model.config.vocab_size)
    for _ in range(2):
        rl_update(
            model, reference, optimizer, groups, params, tokenizer.pad_token_id, None, data_parallel,
            int(micro_batch_tokens),
        )  # fmt: skip
    state = (
        sharding.full_state_dict(model) if data_parallel is not None and data_parallel.sharded else model.state_dict()
    )
    if data_parallel is None or data_parallel.rank == 0:
        torch.save(state, out)
    if data_parallel is not None:
        # As rank_worker does: a rank that exits with the gloo group still up can abort
        # in the group's teardown ("terminate called without an active exception").
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
