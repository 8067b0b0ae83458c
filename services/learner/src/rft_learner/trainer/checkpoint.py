"""Checkpoints: the model as a Hugging Face directory plus the full trainer state
(optimizer, value head, RNG states, data cursor, step), written atomically. A LoRA
model is saved merged (servable as it is) with its adapter in `adapter/` next to it."""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

from rft_learner.trainer import lora

TRAINER_STATE = "trainer_state.pt"
ADAPTER_DIR = "adapter"


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_model_dir(model, tokenizer, directory: pathlib.Path, weights: dict[str, torch.Tensor] | None = None) -> None:
    """A Hugging Face model directory (safetensors + config + tokenizer) vLLM can serve;
    for a LoRA model, the merged weights plus the adapter alone in `adapter/`. `weights`:
    the whole state dict of a model sharded with FSDP (gathered by the caller)."""
    if weights is not None:
        model.save_pretrained(directory, state_dict=weights, safe_serialization=True)
    elif lora.is_lora(model):
        model.get_base_model().save_pretrained(
            directory, state_dict=lora.merged_state_dict(model), safe_serialization=True
        )
        lora.save_adapter(model, directory / ADAPTER_DIR)
    else:
        model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def checkpoint_dir(root: pathlib.Path, step: int) -> pathlib.Path:
    return root / f"step-{step:06d}"


def save_checkpoint(
    root: pathlib.Path,
    step: int,
    model,
    tokenizer,
    trainer_state: dict[str, Any],
    weights: dict[str, torch.Tensor] | None = None,
) -> pathlib.Path:
    """Write checkpoint `step` under `root`; a crash midway leaves no partial checkpoint."""
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".step-{step:06d}-", dir=root))
    try:
        save_model_dir(model, tokenizer, scratch / "model", weights)
        torch.save({**trainer_state, "rng": rng_state(), "step": step}, scratch / TRAINER_STATE)
        with open(scratch / TRAINER_STATE, "rb") as handle:
            os.fsync(handle.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return final


def load_trainer_state(checkpoint_dir: pathlib.Path) -> dict[str, Any]:
    # On the CPU: a checkpoint written on one device resumes on any other (the phase start places it).
    return torch.load(checkpoint_dir / TRAINER_STATE, weights_only=False, map_location="cpu")


CORRUPT_PREFIX = "corrupt-"


def _check_readable(directory: pathlib.Path) -> dict[str, Any]:
    """The trainer state, after checking every weights file's header and size: a torn or
    truncated file raises here, not halfway through loading a model."""
    from safetensors import safe_open

    state = load_trainer_state(directory)
    weights = sorted((directory / "model").rglob("*.safetensors"))
    if not weights:
        raise ValueError("no weights in model/")
    for path in weights:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    return state


def latest_readable(root: pathlib.Path) -> tuple[pathlib.Path | None, dict[str, Any], list[str]]:
    """The newest checkpoint that loads, its trainer state, and one note per newer checkpoint
    that did not (renamed to corrupt-step-N, so no later resume tries it again)."""
    notes: list[str] = []
    while (latest := latest_checkpoint(root)) is not None:
        try:
            return latest, _check_readable(latest), notes
        except Exception as exc:  # noqa: BLE001 - any failure to read it makes it unusable
            aside = latest.with_name(CORRUPT_PREFIX + latest.name)
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(latest, aside)
            notes.append(f"checkpoint {latest.name} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); set aside")
    return None, {}, notes


def latest_checkpoint(root: pathlib.Path) -> pathlib.Path | None:
    if not root.exists():
        return None
    done = sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / TRAINER_STATE).exists())
    return done[-1] if done else None
