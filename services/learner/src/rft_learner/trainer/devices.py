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
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

PRECISIONS = ("fp32", "bf16", "bf16-mixed")


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


def resolve_placement(device: str = "auto", precision: str = "auto") -> Placement:
    """The learner's --device and --precision; ValueError naming the flag when the
    machine cannot do what they ask."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: this machine has no CUDA GPU torch can use; use --device cpu")
        index = resolved.index or 0
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
