"""Where the trainer's tensors live and in which precision they train.

    fp32        fp32 weights, optimizer state and compute.
    bf16        bf16 weights and optimizer state: half the memory of fp32; updates
                smaller than bf16's resolution round away, so use a larger learning rate
                or bf16-mixed when that matters.
    bf16-mixed  fp32 master weights and optimizer state, forward and backward under
                bf16 autocast: bf16 speed on tensor cores, fp32 updates.

Log-probabilities, losses and advantages are always computed in fp32 (rl.losses
upcasts logits chunk by chunk). Weights go to the rollout cast to the dtype it serves
(weight_sync), whatever the training precision.

Trainer ranks (torchrun): each rank trains on its own device, `cuda:LOCAL_RANK` for
`--device auto` or `cuda`, and the ranks' collectives run over the torch.distributed
backend `resolve_dist_backend` picks (NCCL for CUDA tensors, gloo for CPU ones);
`learner_dist_backend` refuses `--dist-backend nccl` for a learner that runs alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch
import torch.distributed as dist

PRECISIONS = ("fp32", "bf16", "bf16-mixed")
DIST_BACKENDS = ("auto", "gloo", "nccl")


@dataclasses.dataclass(frozen=True)
class Placement:
    device: torch.device
    precision: str
    """One of PRECISIONS (resolved: never "auto")."""

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the trained weights (and AdamW's state) are held in."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def frozen_dtype(self) -> torch.dtype:
        """The dtype of models that are never trained (the KL reference): bf16 whenever
        compute is bf16, since no update needs fp32 master weights there."""
        return torch.float32 if self.precision == "fp32" else torch.bfloat16

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context forward and backward passes run in."""
        if self.precision == "bf16-mixed":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> str:
        return f"{self.device} in {self.precision}"


CPU_FP32 = Placement(torch.device("cpu"), "fp32")


def torchrun_local_rank() -> tuple[int, int] | None:
    """(LOCAL_RANK, LOCAL_WORLD_SIZE) of a process that torchrun started with several
    ranks (WORLD_SIZE > 1); None otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def resolve_placement(
    device: str = "auto", precision: str = "auto", local_rank: int | None = None, local_world_size: int = 1
) -> Placement:
    """The learner's --device and --precision; ValueError naming the flag when the
    machine cannot do what they ask.

    `local_rank` is this trainer rank's index among the `local_world_size` ranks on its
    machine (torchrun's LOCAL_RANK and LOCAL_WORLD_SIZE; None outside torchrun). Each
    rank then takes its own GPU: `auto` and `cuda` mean cuda:LOCAL_RANK. An explicit
    `cuda:N` would put every rank of the machine on one GPU, which NCCL refuses, so it is
    accepted only with one rank per machine."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this machine has no CUDA GPU torch can use; use --device cpu")
        if local_rank is not None and resolved.index is not None and local_world_size > 1:
            raise ValueError(
                f"--device {device}: torchrun started {local_world_size} ranks on this machine and each needs its "
                "own GPU; use --device auto or cuda (rank LOCAL_RANK takes cuda:LOCAL_RANK)"
            )
        index = resolved.index if resolved.index is not None else (local_rank or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: there are only {torch.cuda.device_count()} CUDA devices")
        resolved = torch.device("cuda", index)
    elif resolved.type != "cpu":
        raise ValueError(f"--device {device}: expected auto, cpu, cuda or cuda:N")
    if precision == "auto":
        precision = "bf16-mixed" if resolved.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision}: expected auto or one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and resolved.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--precision {precision}: {torch.cuda.get_device_name(resolved)} has no bf16; use fp32")
    return Placement(resolved, precision)


def resolve_dist_backend(requested: str, device: torch.device, nccl_available: bool | None = None) -> str:
    """The torch.distributed backend of the trainer ranks (the learner's --dist-backend).

    auto  nccl when the ranks train on CUDA devices, gloo on CPU.
    nccl  CUDA devices only: NCCL moves GPU tensors, never host ones.
    gloo  CPU devices only: FSDP2's reduce-scatter and the other collectives the trainer
          runs have no gloo implementation for CUDA tensors.

    Whatever the backend, the commands rank 0 sends its ranks (Python objects, and the
    idle wait between jobs) travel over a separate gloo group (trainer.ranks).
    `nccl_available` defaults to whether this torch build has NCCL (CPU builds do not).
    ValueError naming the flag when the choice cannot work."""
    if requested not in DIST_BACKENDS:
        raise ValueError(f"--dist-backend {requested}: expected one of {', '.join(DIST_BACKENDS)}")
    if nccl_available is None:
        nccl_available = dist.is_available() and dist.is_nccl_available()
    cuda = device.type == "cuda"
    backend = requested if requested != "auto" else ("nccl" if cuda else "gloo")
    if backend == "nccl" and not cuda:
        raise ValueError(
            f"--dist-backend nccl: the trainer runs on {device}; NCCL needs --device cuda (or auto on a GPU machine)"
        )
    if backend == "nccl" and not nccl_available:
        raise ValueError(
            "--dist-backend nccl: this torch build has no NCCL (a CPU build?); install a CUDA build of torch"
        )
    if backend == "gloo" and cuda:
        raise ValueError(
            f"--dist-backend gloo: the trainer runs on {device}, and gloo cannot run its collectives on CUDA tensors; use nccl (or auto), or --device cpu"
        )
    return backend


def learner_dist_backend(requested: str, device: torch.device, world: int, nccl_available: bool | None = None) -> str:
    """The backend `rft-learner serve` runs its trainer ranks over; `world` is torchrun's
    WORLD_SIZE (1 outside torchrun).

    Under torchrun with several ranks: resolve_dist_backend's choice. A learner alone has
    no NCCL group to form (the ranks --trainer-ranks starts are CPU processes over gloo),
    so an explicit `nccl` is refused rather than ignored: it asks for GPU ranks that this
    launch cannot give. ValueError naming the flag."""
    if world > 1:
        return resolve_dist_backend(requested, device, nccl_available)
    if requested not in DIST_BACKENDS:
        raise ValueError(f"--dist-backend {requested}: expected one of {', '.join(DIST_BACKENDS)}")
    if requested == "nccl":
        raise ValueError(
            "--dist-backend nccl: NCCL connects the ranks torchrun starts, and this learner runs as one process "
            "(WORLD_SIZE 1); start it with torchrun --nproc-per-node N --no-python rft-learner serve ..., "
            "or leave --dist-backend auto (the ranks --trainer-ranks starts use gloo on CPU)"
        )
    return "gloo"
