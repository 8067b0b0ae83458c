"""Resolved hyperparameters of a job: the protobuf's optional fields with defaults
filled in and bounds checked. One docstring per field is the reference for users."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pydantic
from google.protobuf import json_format
from rft.learner.v1 import fine_tuning_pb2

BASE_LEARNING_RATE = 1e-3
"""learning_rate_multiplier scales this. Tuned for the small models this suite ships;
large models want multipliers around 0.01-0.05."""


class _Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(use_attribute_docstrings=True, extra="forbid", frozen=True)


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """Shape of a job's LoRA adapters."""

    rank: int
    alpha: float


class _LoraParams(_Strict):
    lora_rank: int = pydantic.Field(0, ge=0, le=512)
    """LoRA rank; 0 trains every weight, a rank trains only adapters on the linear layers."""
    lora_alpha: float = pydantic.Field(0.0, ge=0, le=4096)
    """LoRA scaling numerator (the adapter is scaled by alpha / rank); 0 means 2 * lora_rank."""

    @property
    def lora(self) -> LoraSpec | None:
        if not self.lora_rank:
            return None
        return LoraSpec(self.lora_rank, self.lora_alpha or 2.0 * self.lora_rank)


class SupervisedParams(_LoraParams):
    """Supervised fine-tuning on a reference-answer field."""

    answer_field: str
    """Dataset field holding the reference answer."""
    n_epochs: int = pydantic.Field(3, ge=1, le=100)
    """Passes over the training file."""
    batch_size: int = pydantic.Field(16, ge=1, le=4096)
    """Examples per optimizer step."""
    learning_rate_multiplier: float = pydantic.Field(1.0, gt=0, le=100)
    """Multiplier of the base learning rate (1e-3)."""


class ReinforcementParams(_LoraParams):
    """Reinforcement fine-tuning with a grader."""

    n_epochs: int = pydantic.Field(1, ge=1, le=100)
    """Passes over the training prompts."""
    batch_size: int = pydantic.Field(16, ge=1, le=4096)
    """Prompts per RL step."""
    learning_rate_multiplier: float = pydantic.Field(1.0, gt=0, le=100)
    """Multiplier of the base learning rate (1e-3)."""
    compute_multiplier: float = pydantic.Field(1.0, gt=0, le=16)
    """Scales the samples per prompt (OpenAI's compute_multiplier)."""
    eval_interval: int = pydantic.Field(10, ge=0)
    """Steps between validation runs; 0 = only at start and end."""
    eval_samples: int = pydantic.Field(4, ge=1, le=64)
    """Samples per validation prompt (pass@k uses k = eval_samples)."""
    group_size: int = pydantic.Field(8, ge=1, le=256)
    """Samples per prompt before compute_multiplier."""
    kl_coef: float = pydantic.Field(0.02, ge=0, le=10)
    """KL penalty coefficient to the frozen reference model."""
    clip_range: float = pydantic.Field(0.2, gt=0, le=1)
    """PPO clip range epsilon."""
    max_new_tokens: int = pydantic.Field(64, ge=1, le=32768)
    """Maximum tokens per sample."""
    temperature: float = pydantic.Field(1.0, ge=0, le=2)
    """Sampling temperature of training rollouts."""
    sft_warmup_epochs: int = pydantic.Field(0, ge=0, le=100)
    """SFT epochs on sft_answer_field before RL (ReFT)."""
    sft_answer_field: str = ""
    """Dataset field with the reference answer for the SFT warm-up."""
    algorithm: Literal["grpo", "dr_grpo", "rloo", "ppo"] = "grpo"
    """Policy-gradient algorithm."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    """Per-token KL estimator."""
    max_staleness: int = pydantic.Field(0, ge=0, le=1)
    """Policy versions a sample may lag: 1 overlaps generation of the next batch with training."""
    max_grader_error_fraction: float = pydantic.Field(0.1, ge=0, le=1)
    """Fraction of a step's samples that may fail grading before the job fails."""

    @property
    def samples_per_prompt(self) -> int:
        return max(1, round(self.group_size * self.compute_multiplier))

    @pydantic.model_validator(mode="after")
    def _warmup_needs_field(self) -> ReinforcementParams:
        if self.sft_warmup_epochs and not self.sft_answer_field:
            raise ValueError("sft_warmup_epochs > 0 needs sft_answer_field (the dataset field with the answer)")
        if self.algorithm in ("grpo", "dr_grpo", "rloo") and self.samples_per_prompt < 2:
            raise ValueError(f"{self.algorithm} needs at least 2 samples per prompt (group_size)")
        return self


ALGORITHMS = {
    fine_tuning_pb2.RL_ALGORITHM_UNSPECIFIED: "grpo",
    fine_tuning_pb2.RL_ALGORITHM_GRPO: "grpo",
    fine_tuning_pb2.RL_ALGORITHM_DR_GRPO: "dr_grpo",
    fine_tuning_pb2.RL_ALGORITHM_RLOO: "rloo",
    fine_tuning_pb2.RL_ALGORITHM_PPO: "ppo",
}
KL_ESTIMATORS = {
    fine_tuning_pb2.KL_ESTIMATOR_UNSPECIFIED: "k3",
    fine_tuning_pb2.KL_ESTIMATOR_K1: "k1",
    fine_tuning_pb2.KL_ESTIMATOR_K3: "k3",
}


def _set_fields(message) -> dict:
    """Fields the user set (optional scalars included), by proto name."""
    return {field.name: value for field, value in message.ListFields()}


def supervised_params(method: fine_tuning_pb2.SupervisedMethod) -> SupervisedParams:
    return SupervisedParams(answer_field=method.answer_field, **_set_fields(method.hyperparameters))


def reinforcement_params(method: fine_tuning_pb2.ReinforcementMethod) -> ReinforcementParams:
    values = _set_fields(method.hyperparameters)
    values["algorithm"] = ALGORITHMS[method.hyperparameters.algorithm]
    values["kl_estimator"] = KL_ESTIMATORS[method.hyperparameters.kl_estimator]
    return ReinforcementParams(**values)


def describe_validation_error(exc: pydantic.ValidationError, prefix: str) -> str:
    """'method.reinforcement.hyperparameters.group_size: ...' lines for a status message."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{prefix}{'.' + where if where else ''}: {error['msg']}")
    return "; ".join(lines)


def method_to_dict(method: fine_tuning_pb2.Method) -> dict:
    return json_format.MessageToDict(method, preserving_proto_field_name=True)
