"""A trainer rank > 0: holds a model replica and runs the update steps rank 0 broadcasts
(see trainer.ranks). Started by the learner for one job (`--trainer-ranks`), or by
torchrun for the life of the service (`torchrun ... rft-learner serve`: every rank but
0 runs `serve_ranks`); not a user-facing command."""

from __future__ import annotations

import signal
import sys

import torch
import torch.distributed as dist

from rft_learner.hparams import ReinforcementParams
from rft_learner.trainer import lora, sharding
from rft_learner.trainer.devices import Placement
from rft_learner.trainer.distributed import SERVICE_TIMEOUT, DataParallel
from rft_learner.trainer.policy import ValueHead, load_model
from rft_learner.trainer.ranks import gather_state, setup_phase
from rft_learner.trainer.updates import rl_update, sft_update


def main(persistent: bool = False) -> None:
    """Run rank 0's commands. One job's ranks stop at "stop"; torchrun's (`persistent`)
    drop the job's models at "stop" and wait for the next job until "exit"."""
    data_parallel = DataParallel.from_environment("gloo", timeout=SERVICE_TIMEOUT if persistent else None)
    assert data_parallel is not None, "run by the learner with RANK / WORLD_SIZE set"
    model = reference = value_head = optimizer = None
    placement = Placement(torch.device("cpu"), "fp32")
    while True:
        holder = [None]
        dist.broadcast_object_list(holder, src=0)
        command = holder[0]
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
            placement = Placement(torch.device("cpu"), precision)
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
    dist.barrier()  # matches Updater.close in ranks.py: both sides tear the gloo group down together
    dist.destroy_process_group()


def serve_ranks() -> None:
    """A rank > 0 of a learner started by torchrun: serve rank 0's jobs until it exits.
    SIGTERM is left to rank 0, which stops its jobs and then tells every rank to exit
    (torchrun delivers the signal to all ranks at once)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    main(persistent=True)


if __name__ == "__main__":
    main()
