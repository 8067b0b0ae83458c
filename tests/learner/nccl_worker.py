"""Runs two RL update steps on a fixed batch on a CUDA device, alone (cuda:0) or as one
rank of an NCCL group under torchrun (of one rank or more; cuda:LOCAL_RANK, joined the way the learner's
ranks join: trainer.ranks.join_group), and saves the resulting weights (rank 0).
test_nccl_ranks.py compares the two. Arguments: model dir, output file, variant ("full":
data-parallel replicas, "fsdp": model and reference sharded with FSDP2; "broadcast":
only rank 0's weights sent to every rank, see `broadcast`), and the
updates' micro_batch_tokens; a fifth, "cpu", runs the same code over gloo on CPU
(test_nccl_ranks checks the script itself on machines without a GPU)."""

from __future__ import annotations

import dataclasses
import os
import sys

import torch
import torch.distributed as dist
from dp_worker import fixed_groups
from rft_learner.hparams import LoraSpec, ReinforcementParams
from rft_learner.trainer import lora, ranks, sharding
from rft_learner.trainer.devices import resolve_dist_backend, resolve_placement, torchrun_local_rank
from rft_learner.trainer.policy import ValueHead, load_model, load_tokenizer, trainable_parameters
from rft_learner.trainer.updates import rl_update


def main(model_dir: str, out: str, variant: str = "full", micro_batch_tokens: str = "0", device: str = "auto") -> None:
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 on both sides: the comparison is about the collectives
    # Under torchrun even with one rank (WORLD_SIZE 1): an NCCL group of one still runs every
    # collective path, on a machine with a single GPU.
    local = torchrun_local_rank()
    if local is None and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"]), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    placement = resolve_placement(device, "fp32", *(local or (None,)))
    assert device == "cpu" or placement.device.type == "cuda", "a GPU test: run it where torch sees CUDA"
    data_parallel = None
    if local is not None:
        backend = resolve_dist_backend("auto", placement.device)
        data_parallel = ranks.join_group(backend, placement.device)
        if device != "cpu":
            assert backend == "nccl" and ranks.command_group() is not None, backend
            assert data_parallel.device == torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    model = load_model(model_dir, placement)
    reference = load_model(model_dir, placement, frozen=True).requires_grad_(False)
    if variant == "broadcast":
        return broadcast(model, data_parallel, placement, out)
    if data_parallel is not None:
        ranks.broadcast_module_state([model, reference])  # what setup_phase does at a phase start
    if variant == "fsdp" and data_parallel is not None:
        model, reference = sharding.shard_model(model), sharding.shard_model(reference)
        data_parallel = dataclasses.replace(data_parallel, sharded=True)
    tokenizer = load_tokenizer(model_dir)
    optimizer = torch.optim.SGD(trainable_parameters(model), lr=0.5)
    params = ReinforcementParams(algorithm="grpo", group_size=3, kl_coef=0.05)
    groups = fixed_groups(model.config.vocab_size)
    for _ in range(2):
        rl_update(
            model, reference, optimizer, groups, params, tokenizer.pad_token_id, None, data_parallel,
            int(micro_batch_tokens),
        )  # fmt: skip
    if data_parallel is not None and data_parallel.sharded:
        state = sharding.full_state_dict(model)
    else:
        state = {name: tensor.cpu() for name, tensor in model.state_dict().items()}
    if data_parallel is None or data_parallel.rank == 0:
        torch.save(state, out)
    if data_parallel is not None:
        ranks.leave_group()
    assert not dist.is_initialized()


def broadcast(model, data_parallel, placement, out: str) -> None:
    """Rank 0 holds weights the others do not (a warm-up's or a checkpoint's): after
    ranks.broadcast_module_state every rank's policy (with a LoRA adapter) and value head
    are rank 0's. Each rank saves what it holds to `out`.<rank>."""
    rank = data_parallel.rank if data_parallel is not None else 0
    model = lora.add_adapter(model, LoraSpec(rank=4, alpha=8.0))
    value_head = ValueHead(model.config.hidden_size).to(placement.device)
    if rank == 0:
        with torch.no_grad():
            for tensor in [*model.parameters(), *value_head.parameters()]:
                tensor.add_(0.01 * torch.randn_like(tensor))
    if data_parallel is not None:
        ranks.broadcast_module_state([model, None, value_head])
    state = {f"policy.{k}": v.cpu() for k, v in model.state_dict().items()}
    state |= {f"value_head.{k}": v.cpu() for k, v in value_head.state_dict().items()}
    torch.save(state, f"{out}.{rank}")
    if data_parallel is not None:
        ranks.leave_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
