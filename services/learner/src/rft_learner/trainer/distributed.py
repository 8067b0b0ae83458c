"""Data parallelism for the update step under torch.distributed (torchrun; gloo on CPU,
nccl on GPU).

Each rank takes every world-th group of the batch, computes its loss, and the
gradients are averaged across ranks before the optimizer step. Losses are rescaled so
that the averaged gradient equals the gradient of the loss over the whole batch: for a
token mean, rank r's loss is multiplied by world * n_r / N (n_r its tokens, N all
tokens), so that (1/world) * sum_r grad(world * n_r / N * L_r) = grad(sum_r n_r L_r / N).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

T = TypeVar("T")

SERVICE_TIMEOUT = datetime.timedelta(days=30)
"""Collective timeout of a group that lives as long as the service (torchrun): ranks > 0
wait in a broadcast for the next job, however long the service idles."""


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel group."""

    rank: int
    world: int
    sharded: bool = False
    """The models are sharded with FSDP2 (trainer.sharding): gradients of their parameters
    are reduce-scattered by FSDP, and every rank must run the same number of forward and
    backward passes (FSDP gathers parameters collectively in each)."""
    device: torch.device = torch.device("cpu")
    """Where this rank's tensors live, and so the small tensors of its collectives
    (counts, loss scales): a CUDA device under NCCL, which moves no host tensors."""

    @classmethod
    def from_environment(cls, backend: str = "gloo", timeout: datetime.timedelta | None = None) -> DataParallel | None:
        """Join the group torchrun describes (RANK / WORLD_SIZE), or None when not under torchrun."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, timeout=timeout)
        return cls(dist.get_rank(), dist.get_world_size())

    def shard(self, items: Sequence[T]) -> list[T]:
        if len(items) < self.world:
            raise ValueError(f"a batch of {len(items)} groups cannot be split over {self.world} ranks")
        return list(items[self.rank :: self.world])

    def loss_scale(self, local_units: float) -> float:
        """world * local / total, for the unit the loss is averaged over (tokens or sequences)."""
        total = torch.tensor([float(local_units)], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return self.world * float(local_units) / max(float(total.item()), 1e-12)

    def agree_on_count(self, local: int) -> int:
        """The largest of every rank's `local` count."""
        return self._reduce(local, dist.ReduceOp.MAX)

    def agree_on_minimum(self, local: int) -> int:
        """The smallest of every rank's `local` count."""
        return self._reduce(local, dist.ReduceOp.MIN)

    def _reduce(self, local: int, op: dist.ReduceOp) -> int:
        count = torch.tensor([local], dtype=torch.int64, device=self.device)
        dist.all_reduce(count, op=op)
        return int(count.item())

    def average_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Average the gradients of replicated parameters; FSDP's (DTensors) already are."""
        for parameter in parameters:
            if isinstance(parameter, DTensor):
                continue
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            dist.all_reduce(parameter.grad)
            parameter.grad /= self.world
