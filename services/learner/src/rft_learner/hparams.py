"""Resolved hyperparameters of a job: the protobuf's optional fields with defaults
filled in and bounds checked. One docstring per field is the reference for users."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import pydantic
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


Algorithm = Literal["grpo", "dr_grpo", "rloo", "ppo", "dapo", "gspo", "cispo"]
Aggregation = Literal["token_mean", "sequence_mean", "constant"]


@dataclasses.dataclass(frozen=True)
class AlgorithmDefaults:
    """What choosing an algorithm means: its advantage estimator and the defaults it
    gives the loss knobs a user leaves unset. The one table of algorithms."""

    advantage: Literal["group_std", "group_mean", "leave_one_out", "gae"]
    loss_type: Literal["ppo", "cispo"] = "ppo"
    ratio_level: Literal["token", "sequence"] = "token"
    aggregation: Aggregation = "token_mean"
    clip_range: float = 0.2
    clip_range_high: float | None = None
    kl_coef: float = 0.02
    """Default KL penalty; DAPO, GSPO and CISPO train without one, as their papers do."""
    dynamic_sampling: bool = False
    overlong_buffer_fraction: float = 0.0
    """Default overlong_buffer as a fraction of max_new_tokens."""
    paper: str = ""


ALGORITHM_DEFAULTS: dict[str, AlgorithmDefaults] = {
    "grpo": AlgorithmDefaults("group_std", paper="DeepSeekMath, arXiv 2402.03300"),
    "dr_grpo": AlgorithmDefaults("group_mean", aggregation="constant", paper="Dr. GRPO, arXiv 2503.20783"),
    "rloo": AlgorithmDefaults("leave_one_out", paper="RLOO, arXiv 2402.14740"),
    "ppo": AlgorithmDefaults("gae", paper="PPO arXiv 1707.06347 as in ReFT arXiv 2401.08967"),
    "dapo": AlgorithmDefaults(
        "group_std",
        clip_range_high=0.28,
        kl_coef=0.0,
        dynamic_sampling=True,
        overlong_buffer_fraction=0.25,
        paper="DAPO, arXiv 2503.14476",
    ),
    "gspo": AlgorithmDefaults(
        "group_std",
        ratio_level="sequence",
        aggregation="sequence_mean",
        clip_range=3e-4,
        clip_range_high=4e-4,
        kl_coef=0.0,
        paper="GSPO, arXiv 2507.18071",
    ),
    "cispo": AlgorithmDefaults(
        "group_std", loss_type="cispo", clip_range_high=0.28, kl_coef=0.0, paper="CISPO, arXiv 2506.13585"
    ),
}


class ReinforcementParams(_LoraParams):
    """Reinforcement fine-tuning with a grader. Fields left None take the algorithm's
    default (see ALGORITHM_DEFAULTS and the resolved properties below)."""

    n_epochs: int | None = pydantic.Field(None, ge=1, le=100)
    """Passes over the training prompts; auto (unset): enough for 128 RL steps, at most 50."""
    batch_size: int | None = pydantic.Field(None, ge=1, le=4096)
    """Prompts per RL step; auto: the power of two nearest n_train / 16, within 16..32 (at most n_train)."""
    learning_rate_multiplier: float | None = pydantic.Field(None, gt=0, le=100)
    """Multiplier of the base learning rate (1e-3); auto: 0.3 * sqrt(1M / parameters), within 0.005..0.3."""
    compute_multiplier: float = pydantic.Field(1.0, gt=0, le=16)
    """Scales the samples per prompt (OpenAI's compute_multiplier)."""
    eval_interval: int | None = pydantic.Field(None, ge=0)
    """Steps between validation runs; 0 = only at start and end; auto: a sixteenth of the RL steps."""
    eval_samples: int = pydantic.Field(4, ge=1, le=64)
    """Samples per validation prompt (pass@k uses k = eval_samples)."""
    group_size: int = pydantic.Field(8, ge=1, le=256)
    """Samples per prompt before compute_multiplier."""
    kl_coef: float = pydantic.Field(0.02, ge=0, le=10)
    """KL penalty coefficient to the frozen reference model; 0 keeps no reference at all.
    Default 0.02 (0 for dapo, gspo and cispo)."""
    clip_range: float | None = pydantic.Field(None, gt=0, le=1)
    """PPO clip range epsilon (the lower one when clip_range_high is set); default 0.2 (GSPO 3e-4)."""
    clip_range_high: float | None = pydantic.Field(None, gt=0, le=10)
    """Upper clip epsilon (DAPO clip-higher; CISPO's weight cap is 1 + this); default clip_range."""
    max_new_tokens: int = pydantic.Field(64, ge=1, le=32768)
    """Maximum tokens per sample."""
    temperature: float = pydantic.Field(1.0, ge=0, le=2)
    """Sampling temperature of training rollouts."""
    max_turns: int = pydantic.Field(1, ge=1, le=1024)
    """Model turns per episode (multi-turn, tool-using samples, docs/agents.md); 1 with no
    tool_servers: single-turn samples. max_new_tokens then bounds the whole trajectory."""
    tool_servers: list[str] = []
    """Tool servers (names configured on the rollout service) whose tools episodes may call."""
    python_tools: str = pydantic.Field("", max_length=65536)
    """Python tools: a module whose public top-level functions episodes may call as tools,
    run in the grader's sandbox for the job's tenant (docs/agents.md); needs a rollout
    tool server of kind grader_python. Empty: none."""
    sft_warmup_epochs: int = pydantic.Field(0, ge=0, le=100)
    """SFT epochs on sft_answer_field before RL (ReFT)."""
    sft_answer_field: str = ""
    """Dataset field with the reference answer for the SFT warm-up."""
    algorithm: Algorithm = "grpo"
    """Policy-gradient algorithm."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    """Per-token KL estimator (for the loss penalty, and for PPO's per-token reward)."""
    max_staleness: int = pydantic.Field(0, ge=0, le=8)
    """Policy versions a sample may lag: N lets generation run up to N steps ahead of training."""
    max_grader_error_fraction: float = pydantic.Field(0.1, ge=0, le=1)
    """Fraction of a step's samples that may fail grading before the job fails."""
    ppo_epochs: int = pydantic.Field(1, ge=1, le=16)
    """Passes over each batch (TRL's num_iterations); old log-probs and values are taken once before the first."""
    num_minibatches: int = pydantic.Field(1, ge=1, le=256)
    """Minibatches per pass; each is one optimizer step."""
    gae_gamma: float = pydantic.Field(1.0, ge=0, le=1)
    """PPO: discount of GAE."""
    gae_lambda: float = pydantic.Field(0.95, ge=0, le=1)
    """PPO: lambda of GAE."""
    value_clip_range: float = pydantic.Field(0.2, ge=0, le=10)
    """PPO: values are clipped to this distance from the values before the update; 0 = no clip."""
    value_loss_coef: float = pydantic.Field(0.1, ge=0, le=10)
    """PPO: weight of the value loss."""
    rollout_correction: Literal["none", "tis", "mis"] = "tis"
    """Trainer/rollout mismatch correction: truncated (tis) or masked (mis) importance sampling, or none."""
    rollout_correction_cap: float = pydantic.Field(2.0, gt=1, le=1000)
    """Cap of the rollout correction's importance weight."""
    rollout_correction_level: Literal["token", "sequence"] = "token"
    """One importance weight per token or per sequence."""
    dynamic_sampling: bool | None = None
    """Drop prompts whose samples all score the same and refill the batch (DAPO); default on for dapo only."""
    dynamic_sampling_max_rounds: int = pydantic.Field(3, ge=1, le=16)
    """Most generation rounds per step when dynamic sampling refills the batch."""
    overlong_buffer: int | None = pydantic.Field(None, ge=0)
    """Tokens before max_new_tokens where a length penalty ramps up (DAPO); 0 = off; default max_new_tokens/4 for dapo."""
    overlong_penalty: float = pydantic.Field(1.0, ge=0, le=100)
    """Penalty at max_new_tokens, subtracted from the reward."""
    loss_aggregation: Aggregation | None = None
    """How per-token losses are aggregated; default the algorithm's."""
    early_stopping_patience: int | None = pydantic.Field(None, ge=0, le=1000)
    """Stop when valid_reward_mean has not improved for this many evaluations; 0 = never;
    auto: 4 for files under AUTO_SMALL_FILE examples with a validation file, else never."""
    export_checkpoint: Literal["best", "last"] = "best"
    """Export the checkpoint with the best valid_reward_mean, or the last weights."""

    @pydantic.model_validator(mode="before")
    @classmethod
    def _algorithm_kl_default(cls, data):
        if isinstance(data, dict) and "kl_coef" not in data:
            data = {**data, "kl_coef": ALGORITHM_DEFAULTS[data.get("algorithm") or "grpo"].kl_coef}
        return data

    @property
    def samples_per_prompt(self) -> int:
        return max(1, round(self.group_size * self.compute_multiplier))

    @property
    def defaults(self) -> AlgorithmDefaults:
        return ALGORITHM_DEFAULTS[self.algorithm]

    @property
    def resolved_clip_range(self) -> float:
        return self.clip_range if self.clip_range is not None else self.defaults.clip_range

    @property
    def resolved_clip_range_high(self) -> float:
        """clip_range_high; else clip_range when the user set it (at least DAPO's and CISPO's
        0.28, the point of those); else the algorithm's default."""
        if self.clip_range_high is not None:
            return self.clip_range_high
        default_high = self.defaults.clip_range_high
        if self.clip_range is not None:
            return max(self.clip_range, default_high) if self.algorithm in ("dapo", "cispo") else self.clip_range
        return default_high if default_high is not None else self.resolved_clip_range

    @property
    def resolved_aggregation(self) -> Aggregation:
        return self.loss_aggregation or self.defaults.aggregation

    @property
    def resolved_dynamic_sampling(self) -> bool:
        return self.defaults.dynamic_sampling if self.dynamic_sampling is None else self.dynamic_sampling

    @property
    def resolved_overlong_buffer(self) -> int:
        if self.overlong_buffer is not None:
            return self.overlong_buffer
        return int(self.max_new_tokens * self.defaults.overlong_buffer_fraction)

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> ReinforcementParams:
        if self.sft_warmup_epochs and not self.sft_answer_field:
            raise ValueError("sft_warmup_epochs > 0 needs sft_answer_field (the dataset field with the answer)")
        if self.algorithm != "ppo" and self.samples_per_prompt < 2:
            raise ValueError(f"{self.algorithm} needs at least 2 samples per prompt (group_size)")
        if self.resolved_overlong_buffer > self.max_new_tokens:
            raise ValueError(f"overlong_buffer ({self.overlong_buffer}) must be at most max_new_tokens")
        if self.batch_size is not None and self.num_minibatches > self.batch_size:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must be at most batch_size")
        return self

    def resolve_auto(self, n_train: int, n_params: int, has_validation: bool) -> tuple[ReinforcementParams, list[str]]:
        """These parameters with every auto (unset) one chosen from the dataset and the
        model, as OpenAI's "auto" does, and warnings for settings unlikely to help."""
        chosen: dict[str, float | int] = {}
        if self.batch_size is None:
            nearest = 2 ** round(math.log2(max(n_train, 1) / 16))
            chosen["batch_size"] = min(32, max(16, nearest), 2 ** int(math.log2(max(n_train, 1))))
        batch_size = self.batch_size or int(chosen["batch_size"])
        steps_per_epoch = max(1, -(-n_train // batch_size))
        if self.n_epochs is None:
            chosen["n_epochs"] = min(AUTO_MAX_EPOCHS, max(1, -(-AUTO_MIN_RL_STEPS // steps_per_epoch)))
        rl_steps = steps_per_epoch * (self.n_epochs or int(chosen["n_epochs"]))
        auto_lr = auto_learning_rate_multiplier(n_params)
        if self.learning_rate_multiplier is None:
            chosen["learning_rate_multiplier"] = auto_lr
        if self.eval_interval is None:
            chosen["eval_interval"] = max(1, rl_steps // 16) if has_validation else 0
        if self.early_stopping_patience is None:
            chosen["early_stopping_patience"] = 4 if has_validation and n_train < AUTO_SMALL_FILE else 0
        resolved = self.model_copy(update=chosen)
        if resolved.num_minibatches > resolved.batch_size:
            raise ValueError(f"num_minibatches ({self.num_minibatches}) must be at most batch_size ({batch_size})")
        warnings = []
        if chosen:
            settings = ", ".join(f"{name} {value:g}" for name, value in chosen.items())
            warnings.append(
                f"auto hyperparameters for {n_train} examples and {n_params / 1e6:.1f}M parameters: {settings}"
            )
        if rl_steps < 10:
            warnings.append(
                f"only {rl_steps} RL steps ({n_train} examples, batch_size {batch_size}): likely too short to help; "
                "raise n_epochs or leave it auto"
            )
        lr_mult = resolved.learning_rate_multiplier
        if lr_mult > 3 * auto_lr:
            warnings.append(
                f"learning_rate_multiplier {lr_mult:g} is {lr_mult / auto_lr:.0f}x the auto value ({auto_lr:g}) for a "
                "model of this size: training may diverge or lose accuracy"
            )
        if not has_validation:
            warnings.append(
                "no validation file: progress is not measured, and the last weights are exported (no best checkpoint)"
            )
        return resolved, warnings


AUTO_FIELDS = ("batch_size", "n_epochs", "learning_rate_multiplier", "eval_interval", "early_stopping_patience")
"""The RL hyperparameters that are "auto" when unset."""
AUTO_MIN_RL_STEPS = 128
"""Auto n_epochs gives at least this many RL steps (at most AUTO_MAX_EPOCHS epochs)."""
AUTO_MAX_EPOCHS = 50
AUTO_SMALL_FILE = 200
"""Training files with fewer examples get early stopping by default."""


def auto_learning_rate_multiplier(n_params: int) -> float:
    """0.3 for the suite's ~1M-parameter models, shrinking with sqrt(size): 0.03 at 100M,
    0.005 (the floor, lr 5e-6) from ~3.6B parameters up."""
    return round(min(0.3, max(0.005, 0.3 * math.sqrt(1e6 / max(n_params, 1)))), 4)


def _choice(enum_type, value: int, prefix: str, default: str) -> str:
    """A proto enum value as the lower-case name hparams use ('RL_ALGORITHM_DR_GRPO' -> 'dr_grpo')."""
    return enum_type.Name(value).removeprefix(prefix).lower() if value else default


ENUM_FIELDS = {
    # field: (enum, prefix); unset (0) means the ReinforcementParams default
    "algorithm": (fine_tuning_pb2.RlAlgorithm, "RL_ALGORITHM_"),
    "kl_estimator": (fine_tuning_pb2.KlEstimator, "KL_ESTIMATOR_"),
    "rollout_correction": (fine_tuning_pb2.RolloutCorrection, "ROLLOUT_CORRECTION_"),
    "rollout_correction_level": (fine_tuning_pb2.ImportanceLevel, "IMPORTANCE_LEVEL_"),
    "loss_aggregation": (fine_tuning_pb2.LossAggregation, "LOSS_AGGREGATION_"),
    "export_checkpoint": (fine_tuning_pb2.ExportCheckpoint, "EXPORT_CHECKPOINT_"),
}


def _set_fields(message) -> dict:
    """Fields the user set (optional scalars included), by proto name; enums as names."""
    values = {}
    for field, value in message.ListFields():
        if field.name in ENUM_FIELDS:
            enum_type, prefix = ENUM_FIELDS[field.name]
            value = _choice(enum_type, value, prefix, "")
        if field.is_repeated:
            value = list(value)
        values[field.name] = value
    return values


def supervised_params(method: fine_tuning_pb2.SupervisedMethod) -> SupervisedParams:
    return SupervisedParams(answer_field=method.answer_field, **_set_fields(method.hyperparameters))


def reinforcement_params(method: fine_tuning_pb2.ReinforcementMethod) -> ReinforcementParams:
    return ReinforcementParams(**_set_fields(method.hyperparameters))


def describe_validation_error(exc: pydantic.ValidationError, prefix: str) -> str:
    """'method.reinforcement.hyperparameters.group_size: ...' lines for a status message."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"{prefix}{'.' + where if where else ''}: {error['msg']}")
    return "; ".join(lines)
