"""A trainer rank > 0: holds a model replica and runs the update steps rank 0 broadcasts
(see trainer.ranks). Started by the learner for one job (`--trainer-ranks`), or by
torchrun for the life of the service (`torchrun ... rft-learner serve`: every rank but
0 runs `serve_ranks`); not a user-facing command."""

from __future__ import annotations

import signal
import sys

import torch

from rft_learner.hparams import ReinforcementParams
from rft_learner.trainer import lora, sharding
from rft_learner.trainer.devices import Placement
from rft_learner.trainer.policy import ValueHead, load_model
from rft_learner.trainer.ranks import (
    finish_pass,
    gather_state,
    gathered_tensors,
    join_group,
    join_torchrun_group,
    leave_group,
    receive_command,
    setup_phase,
)
from rft_learner.trainer.updates import rl_update, sft_update


def main(persistent: bool = False, device: torch.device | None = None, backend: str = "gloo") -> None:
    """Run rank 0's commands. One job's ranks (CPU, gloo) stop at "stop"; torchrun's
    (`persistent`, on `device` over `backend`) drop the job's models at "stop" and wait
    for the next job until "exit"."""
    device = device or torch.device("cpu")
    if persistent:
        data_parallel = join_torchrun_group(backend, device)
    else:  # started by Updater.start with RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set
        data_parallel = join_group(backend, device)
    model = reference = value_head = optimizer = None
    placement = Placement(device, "fp32")
    while True:
        command = receive_command()
        kind = command[0]
        if kind == "exit":
            print(f"trainer rank {data_parallel.rank} released by rank 0", file=sys.stderr, flush=True)
            break
        if kind == "stop" and not persistent:
            break
        if kind == "stop":
            model = reference = value_head = optimizer = None
        if kind == "begin":
            _, model_dir, learning_rate, with_reference, with_value_head, lora_spec, precision, sharded, resumed = (
                command
            )
            placement = Placement(device, precision)
            if not (sharded and model is not None and sharding.is_sharded(model)):  # else: the warm-up's shards
                model = load_model(model_dir, placement)
            if lora_spec is not None:
                model = lora.add_adapter(model, lora_spec)
            reference = load_model(model_dir, placement, frozen=True).requires_grad_(False) if with_reference else None
            value_head = (
                ValueHead(model.config.hidden_size).to(dtype=placement.weights_dtype) if with_value_head else None
            )
            optimizer, data_parallel = setup_phase(
                model, reference, value_head, learning_rate, None, data_parallel, sharded, resumed
            )
        elif kind == "gather":
            gather_state(model, value_head, optimizer, command[1])
        elif kind == "stream_weights":  # rank 0 sends each tensor as it is gathered (Updater.streamed_weights)
            finish_pass(gathered_tensors(model))
        elif kind == "rl_update":
            _, groups, params, pad_id, micro_batch_tokens = command
            params = ReinforcementParams(**params)
            with placement.autocast():
                rl_update(
                    model, reference, optimizer, groups, params, pad_id, value_head, data_parallel, micro_batch_tokens
                )
        elif kind == "sft_update":
            _, prompts, targets, pad_id, micro_batch_tokens = command
            with placement.autocast():
                sft_update(model, optimizer, prompts, targets, pad_id, data_parallel, micro_batch_tokens)
    leave_group()  # matches Updater.close / release_torchrun_ranks: every rank tears the group down together


def serve_ranks(device: torch.device | None = None, backend: str = "gloo") -> None:
    """A rank > 0 of a learner started by torchrun: serve rank 0's jobs until it exits,
    training on `device` (cuda:LOCAL_RANK on GPUs) over `backend`. SIGTERM is left to
    rank 0, which stops its jobs and then tells every rank to exit (torchrun delivers
    the signal to all ranks at once)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    main(persistent=True, device=device, backend=backend)


if __name__ == "__main__":
    main()
