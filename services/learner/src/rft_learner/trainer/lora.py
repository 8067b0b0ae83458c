"""LoRA fine-tuning with peft: only the adapters train, and only they go to the rollout.

A LoRA job's policy is a frozen base (the job's model, or the SFT warm-up merged into
it) plus one adapter on every linear layer of the decoder blocks. The base doubles as
the KL reference (the adapter switched off), so no second model copy is kept. What the
rollout service gets: the base once per replica (`base_state_dict`), then only the
adapter's lora_A / lora_B tensors under PEFT's names (`adapter_state_dict`), which vLLM
loads as a LoRA adapter. Checkpoints and exports hold the merged model, servable as
it is, next to the adapter in PEFT's format (`save_adapter`).
"""

from __future__ import annotations

import pathlib

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file

from rft_learner.hparams import LoraSpec

ADAPTER_NAME = "default"
ADAPTER_FILE = "adapter_model.safetensors"


def add_adapter(model: torch.nn.Module, spec: LoraSpec) -> PeftModel:
    """Freeze `model` and give every linear layer of its blocks (not lm_head) a fresh
    adapter: A random, B zero, so the policy starts equal to the base."""
    config = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules="all-linear", lora_dropout=0.0)
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def _lora_layers(model: PeftModel) -> dict[str, LoraLayer]:
    prefix = "base_model.model."
    return {
        name.removeprefix(prefix): module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and ADAPTER_NAME in module.lora_A
    }


def base_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The frozen base's tensors under the plain model's state-dict names."""
    out = {}
    for name, tensor in model.get_base_model().state_dict().items():
        if ".lora_" in name:
            continue
        out[name.replace(".base_layer.", ".")] = tensor
    return out


def merged_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """Base plus (alpha / rank) * B @ A on every adapted weight: the policy as a plain model."""
    merged = dict(base_state_dict(model))
    with torch.no_grad():
        for module_name, layer in _lora_layers(model).items():
            key = f"{module_name}.weight"
            merged[key] = merged[key] + layer.get_delta_weight(ADAPTER_NAME).to(merged[key].dtype)
    return merged


def adapter_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """The adapter as the rollout takes it: 'base_model.model.<module>.lora_{A,B}.weight'."""
    return get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)


def merge(model: PeftModel) -> torch.nn.Module:
    """The plain model with the adapter folded in (the adapter is gone)."""
    return model.merge_and_unload()


def save_adapter(model: PeftModel, directory: pathlib.Path) -> None:
    """adapter_config.json + adapter_model.safetensors, as peft and vLLM load them."""
    model.save_pretrained(str(directory), safe_serialization=True)


def load_adapter_weights(model: PeftModel, directory: pathlib.Path) -> None:
    """Put the adapter saved in `directory` into `model` (same rank and targets)."""
    result = set_peft_model_state_dict(model, load_file(str(directory / ADAPTER_FILE)), adapter_name=ADAPTER_NAME)
    missing = [key for key in result.missing_keys if ".lora_" in key]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"adapter in {directory} does not fit the model: missing {missing[:3]}, "
            f"unexpected {list(result.unexpected_keys)[:3]}"
        )
