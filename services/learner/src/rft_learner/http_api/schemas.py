"""Request and response bodies of the HTTP API, in OpenAI's field names. Requests refuse
unknown fields (a typo is an error, not a silent default); hyperparameter objects also
accept our own hyperparameters by their rft.learner.v1 names (docs/openai-migration.md)."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class _Hyperparameters(BaseModel):
    # Extra keys are our own hyperparameters; convert.fill_hyperparameters checks each by name.
    model_config = ConfigDict(extra="allow", use_attribute_docstrings=True)

    n_epochs: Literal["auto"] | int | None = None
    """Passes over the training file."""
    batch_size: Literal["auto"] | int | None = None
    """Prompts per RL step / examples per SFT step."""
    learning_rate_multiplier: Literal["auto"] | float | None = None
    """Multiplier of the base learning rate (1e-3)."""


class SupervisedHyperparameters(_Hyperparameters):
    """OpenAI's supervised hyperparameters, plus lora_rank and lora_alpha."""


class ReinforcementHyperparameters(_Hyperparameters):
    """OpenAI's reinforcement hyperparameters, plus any field of rft.learner.v1's
    ReinforcementHyperparameters (algorithm, group_size, kl_coef, lora_rank, ...)."""

    compute_multiplier: Literal["auto"] | float | None = None
    """Scales the samples per prompt."""
    eval_interval: Literal["auto"] | int | None = None
    """Steps between validation runs."""
    eval_samples: Literal["auto"] | int | None = None
    """Samples per validation prompt (the k of pass@k)."""
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None
    """Accepted for compatibility; the suite's models have no reasoning-effort control."""


class SupervisedMethod(_Request):
    hyperparameters: SupervisedHyperparameters | None = None
    answer_field: str | None = None
    """Dataset field with the reference answer the model is trained to produce (required:
    the suite trains on an item field, not on a final assistant message)."""


class ReinforcementMethod(_Request):
    grader: dict[str, Any]
    """A grader in OpenAI's grader JSON (string_check, text_similarity, python, score_model,
    label_model, multi, ...)."""
    hyperparameters: ReinforcementHyperparameters | None = None


class Method(_Request):
    type: Literal["supervised", "reinforcement", "dpo"]
    supervised: SupervisedMethod | None = None
    reinforcement: ReinforcementMethod | None = None
    dpo: dict[str, Any] | None = None


class CreateJobBody(_Request):
    model: str = Field(min_length=1, max_length=512)
    """A model from GET /v1/models: a catalogue name or one of your fine-tuned models."""
    training_file: str = Field(min_length=1, max_length=128)
    validation_file: str | None = Field(None, max_length=128)
    suffix: str | None = Field(None, max_length=64, pattern=r"^[A-Za-z0-9_-]*$")
    """Up to 64 letters, digits, '_' or '-', added to the fine-tuned model's name."""
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    metadata: dict[str, str] | None = None
    """Up to 16 pairs; keys up to 64 characters, values up to 512."""
    method: Method | None = None
    hyperparameters: SupervisedHyperparameters | None = None
    """Deprecated by OpenAI in favour of method; means a supervised job's hyperparameters."""
    integrations: list[dict[str, Any]] | None = None

    @pydantic.field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        if len(value) > 16:
            raise ValueError(f"at most 16 pairs, got {len(value)}")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError(f"key {key[:64]!r}: keys may have 64 characters and values 512")
        return value


class ValidateMethodBody(_Request):
    """A job body's method alone, to check its hyperparameters."""

    method: Method


class GraderRunBody(_Request):
    grader: dict[str, Any]
    model_sample: str
    """The sample to grade; templates see it as sample.output_text (and sample.output_json
    when it is a JSON object)."""
    item: dict[str, Any] | None = None
    """The dataset item; templates see it as item.*."""
    reference_answer: Any = None
    """Accepted and ignored: an older form of the same endpoint."""


class GraderValidateBody(_Request):
    grader: dict[str, Any]


# -- responses ---------------------------------------------------------------------------


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class FileObject(_Response):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    expires_at: int | None = None


class FileDeleted(_Response):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


class JobError(_Response):
    code: str
    message: str
    param: str | None = None


class Job(_Response):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    method: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] = []
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    trained_steps: int = 0
    """Ours: optimizer steps done so far."""
    total_steps: int = 0
    """Ours: optimizer steps the job will take."""
    base_metrics: dict[str, float] = {}
    """Ours: validation metrics of the base model before training."""
    final_metrics: dict[str, float] = {}
    """Ours: validation metrics of the exported model."""


class JobEvent(_Response):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any] | None = None


class JobCheckpoint(_Response):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]


class Model(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class GraderRunResponse(_Response):
    reward: float
    sub_rewards: dict[str, float]
    metadata: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any] = {}


class GraderValidateResponse(_Response):
    grader: dict[str, Any]


class Page(_Response):
    """A cursor page: `after` the last id of this page fetches the next one."""

    object: Literal["list"] = "list"
    data: list[Any]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class FilePage(Page):
    data: list[FileObject]


class JobPage(Page):
    data: list[Job]


class EventPage(Page):
    data: list[JobEvent]


class CheckpointPage(Page):
    data: list[JobCheckpoint]


class ModelPage(_Response):
    object: Literal["list"] = "list"
    data: list[Model]


class MetricsRecord(_Response):
    seq: int
    step: int
    created_at: float
    values: dict[str, float]


class MetricsPage(_Response):
    object: Literal["list"] = "list"
    data: list[MetricsRecord]
    has_more: bool
    total_steps: int
    last_seq: int
