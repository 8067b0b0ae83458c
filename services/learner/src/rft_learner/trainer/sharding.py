"""FSDP2 for models that do not fit one device: every decoder layer, the model around
them, the KL reference and the value head become `fully_shard` units over the
data-parallel group. Each rank holds 1/world of every weight, gradient and optimizer
state; FSDP all-gathers a layer's weights for its forward and backward and
reduce-scatters (averages) its gradients, so the update functions run unchanged except
that every rank must take the same number of passes (micro_batches.aligned_runs).
gloo on CPU, NCCL on GPU: the mesh is made for the device the module's weights are on,
never FSDP's default (the machine's accelerator, CUDA even for a gloo group of CPU
ranks on a GPU machine).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
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


def mesh_for(module: torch.nn.Module) -> DeviceMesh:
    """The 1-D mesh of every rank of the default group, on the device type of `module`'s
    weights (cpu under gloo, cuda under NCCL; each rank's current CUDA device is its own)."""
    device_type = next(module.parameters()).device.type
    return init_device_mesh(device_type, (dist.get_world_size(),))


def shard_model(model: torch.nn.Module) -> torch.nn.Module:
    """Shard `model` in place, one FSDP unit per decoder layer plus the rest (embeddings,
    final norm and the tied lm_head stay together in the root unit)."""
    if hasattr(model, "peft_config"):
        raise ValueError("LoRA models are not sharded: their adapters are small; train them data-parallel")
    mesh = mesh_for(model)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def shard_value_head(value_head: torch.nn.Module) -> torch.nn.Module:
    fully_shard(value_head, mesh=mesh_for(value_head))
    return value_head


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every rank's shards gathered into whole tensors in host memory (a collective: every
    rank calls it; each gets the full dict)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
