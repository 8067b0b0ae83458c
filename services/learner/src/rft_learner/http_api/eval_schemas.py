"""Bodies of the evals and saved-graders routes (http_api/evals.py), in OpenAI's field names
where OpenAI has the object; our extensions are marked "Ours"."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


def _metadata_limits(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is not None:
        if len(value) > 16:
            raise ValueError(f"at most 16 pairs, got {len(value)}")
        for key, item in value.items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError(f"key {key[:64]!r}: keys may have 64 characters and values 512")
    return value


Metadata = Annotated[dict[str, str] | None, AfterValidator(_metadata_limits)]
"""Up to 16 pairs; keys up to 64 characters, values up to 512."""


class CustomDataSourceConfig(_Request):
    type: Literal["custom"]
    """Only "custom": rows come from a file the tenant uploaded."""
    item_schema: dict[str, Any]
    """JSON schema of a row's fields (`item`); stored and returned as `schema.properties.item`."""
    include_sample_schema: bool = False
    """Whether the schema returned also describes `sample` (the model's answer)."""


class CreateEvalBody(_Request):
    name: str | None = Field(None, max_length=256)
    data_source_config: CustomDataSourceConfig
    testing_criteria: list[dict[str, Any]] = Field(min_length=1)
    """Exactly one grader in our grader JSON (string_check, text_similarity, python,
    score_model, label_model, multi, ...); combine several with a multi grader."""
    metadata: Metadata = None


class UpdateEvalBody(_Request):
    name: str | None = Field(None, max_length=256)
    metadata: Metadata = None


class FileIdSource(_Request):
    type: Literal["file_id"]
    """Only "file_id" (a file uploaded with purpose fine-tune)."""
    id: str = Field(min_length=1, max_length=128)


class ItemReference(_Request):
    type: Literal["item_reference"]
    item_reference: Literal["item.messages"]
    """Only the row's own `messages` (templates are not supported)."""


class EvalSamplingParams(_Request):
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    """Temperature of the K sampled answers (the greedy answer uses 0)."""
    max_completion_tokens: int = Field(256, ge=1, le=32768)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(42, ge=0, le=2**31 - 1)
    """Row i's samples use seeds seed + i*n ... seed + i*n + n - 1; null samples unseeded."""
    n: int = Field(1, ge=1, le=64)
    """Ours: K, the sampled answers per row (pass@K); every row also gets one greedy answer."""
    max_turns: int = Field(0, ge=0, le=1024)
    """Ours: run every answer as a tool-using episode of up to this many model turns, as a
    job with this max_turns (0 or 1 without tool_servers: single-turn answers);
    max_completion_tokens then bounds the whole episode."""
    tool_servers: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=16)
    """Ours: the tool servers the episodes may use, by name (as a job's tool_servers): those
    the operator configured for evaluation runs that the tenant may use."""


class CompletionsDataSource(_Request):
    type: Literal["completions"]
    source: FileIdSource
    model: str = Field(min_length=1, max_length=512)
    """A catalogue base model, or one of the tenant's `ft:...` models or checkpoints."""
    input_messages: ItemReference | None = None
    """The prompt: each row's `messages` (the default, and the only choice)."""
    sampling_params: EvalSamplingParams = EvalSamplingParams()


class CreateRunBody(_Request):
    name: str | None = Field(None, max_length=256)
    data_source: CompletionsDataSource
    metadata: Metadata = None


class SaveGraderBody(_Request):
    name: str = Field(min_length=1, max_length=256)
    grader: dict[str, Any]
    """A grader spec, as for /v1/fine_tuning/alpha/graders/validate."""


# -- responses ---------------------------------------------------------------------------
class Eval(_Response):
    id: str
    object: Literal["eval"] = "eval"
    created_at: int
    name: str
    data_source_config: dict[str, Any]
    testing_criteria: list[dict[str, Any]]
    metadata: dict[str, str] | None = None


class EvalDeleted(_Response):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool
    eval_id: str


class RunError(_Response):
    code: str
    message: str


class EvalRun(_Response):
    id: str
    object: Literal["eval.run"] = "eval.run"
    eval_id: str
    name: str
    model: str
    status: Literal["queued", "in_progress", "completed", "failed", "canceled"]
    created_at: int
    data_source: dict[str, Any]
    error: RunError | None = None
    metadata: dict[str, str] | None = None
    result_counts: dict[str, int]
    per_testing_criteria_results: list[dict[str, Any]]
    per_model_usage: list[dict[str, Any]]
    report_url: str = ""
    metrics: dict[str, float | None]
    """Ours: reward_mean, greedy_reward_mean, pass@1, pass@K, greedy_pass@1, grader_errors,
    the grader's own metrics (top@1, ...) and sub_score.<name>; for tool-using runs also
    episode_turns_mean, tool_calls_mean, tool_error_rate and episode_end.<reason> (counts)
    over the sampled episodes."""
    progress: dict[str, int]
    """Ours: items_done and items_total."""
    finished_at: int | None = None
    """Ours."""


class EvalRunDeleted(_Response):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool
    run_id: str


class OutputItem(_Response):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    created_at: int
    eval_id: str
    run_id: str
    datasource_item_id: int
    datasource_item: dict[str, Any]
    status: Literal["pass", "fail", "error"]
    results: list[dict[str, Any]]
    sample: dict[str, Any]
    greedy: dict[str, Any]
    """Ours: the greedy answer, graded."""
    samples: list[dict[str, Any]]
    """Ours: the K sampled answers, graded."""


class SavedGrader(_Response):
    id: str
    object: Literal["grader"] = "grader"
    name: str
    grader: dict[str, Any]
    created_at: int


class SavedGraderDeleted(_Response):
    id: str
    object: Literal["grader.deleted"] = "grader.deleted"
    deleted: bool


class _Page(_Response):
    object: Literal["list"] = "list"
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class EvalPage(_Page):
    data: list[Eval]


class EvalRunPage(_Page):
    data: list[EvalRun]


class OutputItemPage(_Page):
    data: list[OutputItem]


class SavedGraderPage(_Page):
    data: list[SavedGrader]
