"""Helpers of the rollout tests: test weights, model directories, RPC shortcuts."""

from __future__ import annotations

import pathlib
import re
import shutil
import sys
import time

import grpc
import numpy as np
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import build_base_model  # noqa: E402

Weights = dict[str, np.ndarray]


def state_dict_shapes(model_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of the model and its shape (lm_head.weight included)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, std: float = 0.3) -> Weights:
    """Random float32 weights, larger than a fresh initialisation so that greedy
    outputs depend on the prompt and differ between seeds (top-2 logit gaps are wide).
    Norm weights are 1 and lm_head.weight is tied to the input embedding (the tiny
    model's tokenizer is assumed: see the end-of-sequence row below)."""
    rng = np.random.default_rng(seed)
    weights: Weights = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            weights[name] = (rng.standard_normal(shape) * std).astype(np.float32)
    # A zero embedding row gives the end-of-sequence token a logit of 0 among logits
    # of spread ~3, so samples practically never stop early: they run to max_tokens
    # unless a stop string or token is asked for (long, comparable outputs).
    weights["model.embed_tokens.weight"][build_base_model.vocabulary()[build_base_model.EOS_TOKEN]] = 0.0
    if "lm_head.weight" in weights:
        weights["lm_head.weight"] = weights["model.embed_tokens.weight"].copy()
    return weights


def save_safetensors(weights: Weights, path: pathlib.Path) -> pathlib.Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path))
    return path


def model_dir_with_weights(base_dir: pathlib.Path, weights: Weights, out_dir: pathlib.Path) -> pathlib.Path:
    """A copy of `base_dir` (config, tokenizer) whose checkpoint holds `weights`."""
    shutil.copytree(base_dir, out_dir, ignore=shutil.ignore_patterns("*.safetensors"), dirs_exist_ok=True)
    save_safetensors(weights, out_dir / "model.safetensors")
    return out_dir


def stub(channel: grpc.Channel) -> rollout_pb2_grpc.RolloutServiceStub:
    return rollout_pb2_grpc.RolloutServiceStub(channel)


def token_prompt(ids: list[int]) -> rollout_pb2.Prompt:
    return rollout_pb2.Prompt(token_ids=rollout_pb2.TokenIds(ids=ids))


def text_prompt(text: str) -> rollout_pb2.Prompt:
    return rollout_pb2.Prompt(text=text)


def greedy(
    service: rollout_pb2_grpc.RolloutServiceStub, prompts: list[list[int]], max_tokens: int = 24
) -> list[rollout_pb2.Sample]:
    """One greedy sample per token-id prompt."""
    response = service.Generate(
        rollout_pb2.GenerateRequest(
            prompts=[token_prompt(ids) for ids in prompts],
            sampling=rollout_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens),
        ),
        timeout=120,
    )
    return [result.samples[0] for result in response.results]


def current_version(service: rollout_pb2_grpc.RolloutServiceStub) -> int:
    return service.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10).policy_version


def metric_value(metrics: str, name: str, **labels: str) -> float | None:
    """Value of the first sample of `name` whose labels include `labels`."""
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        elif not labels and line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(condition, timeout: float = 60.0, interval: float = 0.1) -> bool:
    """Poll `condition()` until it is true or `timeout` passes (a liveness bound, not
    a performance one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return bool(condition())
