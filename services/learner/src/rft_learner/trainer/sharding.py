"""FSDP2 for models that do not fit one device: every decoder layer, the model around
them, the KL reference and the value head become `fully_shard` units over the
data-parallel group. Each rank holds 1/world of every weight, gradient and optimizer
state; FSDP all-gathers a layer's weights for its forward and backward and
reduce-scatters (averages) its gradients, so the update functions run unchanged except
that every rank must take the same number of passes (micro_batches.aligned_runs).
gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a Hugging Face causal LM (`model.model.layers`)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__} has no model.layers to shard")
    return list(layers)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(parameter, DTensor) for parameter in module.parameters())


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard `model` in place, one FSDP unit per decoder layer plus the rest (embeddings,
    final norm and the tied lm_head stay together in the root unit)."""
    if hasattr(model, "peft_config"):
        raise ValueError("LoRA models are not sharded: their adapters are small; train them data-parallel")
    for layer in decoder_layers(model):
        fully_shard(layer)
    fully_shard(model)
    return model


def shard_value_head(value_head: torch.nn.Module) -> torch.nn.Module:
    fully_shard(value_head)
    return value_head


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank's shards gathered into whole tensors in host memory (a collective: every
    rank calls it; each gets the full dict)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
