"""Update steps on one process or on a data-parallel group of trainer ranks.

With `trainer_ranks` > 1 the job's thread in the learner service is rank 0: it starts
`trainer_ranks - 1` worker processes (`python -m rft_learner.trainer.rank_worker`),
joins them in a torch.distributed group (gloo on CPU), and before every update step
broadcasts the step's inputs. Every rank then runs the same update function on its
share of the batch (trainer.distributed); averaged gradients keep all replicas
identical, so only rank 0 talks to rollout and grader, checkpoints and exports.
"""

from __future__ import annotations

import datetime
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from rft_learner.hparams import LoraSpec, ReinforcementParams
from rft_learner.trainer.devices import CPU_FP32, Placement
from rft_learner.trainer.distributed import SERVICE_TIMEOUT, DataParallel
from rft_learner.trainer.policy import ValueHead
from rft_learner.trainer.updates import Group, rl_update, sft_update

TIMEOUT = datetime.timedelta(minutes=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def broadcast_module_state(modules: Sequence[torch.nn.Module | None], optimizer: torch.optim.Optimizer | None) -> None:
    """Make every rank's weights (and optimizer state) rank 0's."""
    for module in modules:
        if module is not None:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)
    if optimizer is not None:
        holder = [optimizer.state_dict() if dist.get_rank() == 0 else None]
        dist.broadcast_object_list(holder, src=0)
        if dist.get_rank() != 0:
            optimizer.load_state_dict(holder[0])


def join_torchrun_ranks() -> None:
    """Rank 0 of a learner started by torchrun joins the group its ranks wait in."""
    DataParallel.from_environment("gloo", timeout=SERVICE_TIMEOUT)


def release_torchrun_ranks() -> None:
    """Tell the torchrun ranks the service is gone, so that torchrun exits with it."""
    try:
        dist.broadcast_object_list([("exit",)], src=0)
        dist.barrier()
        dist.destroy_process_group()
    except Exception:  # noqa: BLE001 - a rank already gone: torchrun tears the rest down
        pass


class Updater:
    """Runs SFT / RL update steps here (world 1) or on every rank of a group.

    `micro_batch_tokens` bounds the padded tokens (rows x longest sequence) of each forward
    pass of every update on every rank (0: no bound; see trainer.updates)."""

    def __init__(self, world: int, micro_batch_tokens: int = 0, placement: Placement = CPU_FP32) -> None:
        if micro_batch_tokens < 0:
            raise ValueError(f"micro_batch_tokens must be >= 0, got {micro_batch_tokens}")
        if world > 1 and placement.device.type != "cpu":
            raise ValueError("several trainer ranks run on CPU (gloo) only; NCCL ranks are not wired yet")
        self.world = world
        self.micro_batch_tokens = micro_batch_tokens
        self.placement = placement
        self.data_parallel: DataParallel | None = None
        self._workers: list[subprocess.Popen] = []
        self._persistent = False

    def start(self) -> None:
        if self.world <= 1:
            return
        if dist.is_initialized():  # torchrun started the ranks with the service: they wait for commands
            self.data_parallel = DataParallel(dist.get_rank(), dist.get_world_size())
            self._persistent = True
            return
        port = _free_port()
        for rank in range(1, self.world):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                   "WORLD_SIZE": str(self.world)}  # fmt: skip
            command = [sys.executable, "-m", "rft_learner.trainer.rank_worker"]
            self._workers.append(subprocess.Popen(command, env=env))
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=self.world, timeout=TIMEOUT
        )
        self.data_parallel = DataParallel(0, self.world)

    def _send(self, command: tuple[Any, ...]) -> None:
        dist.broadcast_object_list([command], src=0)

    def begin_phase(
        self,
        model_dir: str,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        learning_rate: float,
        reference: torch.nn.Module | None = None,
        value_head: ValueHead | None = None,
        lora: LoraSpec | None = None,
    ) -> None:
        """Give every rank rank 0's model (with its LoRA adapter, when `lora`), reference,
        value head and optimizer state."""
        if self.data_parallel is None:
            return
        begin = (
            "begin",
            model_dir,
            learning_rate,
            reference is not None,
            value_head is not None,
            lora,
            self.placement.precision,
        )
        self._send(begin)
        broadcast_module_state([model, reference, value_head], optimizer)

    def train_rl(self, model, reference, optimizer, groups: Sequence[Group], params: ReinforcementParams, pad_id: int,
                 value_head: ValueHead | None) -> dict[str, float]:  # fmt: skip
        """updates.rl_update here, and on every other rank."""
        if self.data_parallel is not None:
            self._send(("rl_update", list(groups), params.model_dump(), pad_id, self.micro_batch_tokens))
        with self.placement.autocast():
            return rl_update(
                model, reference, optimizer, groups, params, pad_id, value_head, self.data_parallel,
                self.micro_batch_tokens,
            )  # fmt: skip

    def train_sft(self, model, optimizer, prompts, targets, pad_id: int) -> dict[str, float]:
        """updates.sft_update here, and on every other rank."""
        if self.data_parallel is not None:
            self._send(("sft_update", list(prompts), list(targets), pad_id, self.micro_batch_tokens))
        with self.placement.autocast():
            return sft_update(model, optimizer, prompts, targets, pad_id, self.data_parallel, self.micro_batch_tokens)

    def close(self) -> None:
        if self.data_parallel is not None and self._persistent:
            self._send(("stop",))  # the ranks drop this job's models and wait for the next
            self.data_parallel = None
        if self.data_parallel is not None:
            self._send(("stop",))
            dist.barrier()  # matches rank_worker's exit
            dist.destroy_process_group()
            self.data_parallel = None
        for worker in self._workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self._workers.clear()
