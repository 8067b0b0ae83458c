"""Grader specs: OpenAI's grader JSON, field for field, plus our own types, parsed into
typed objects. `parse_spec(raw)` returns one of the *Spec classes or raises InvalidSpec
listing every problem with its JSON path ("graders.exact.operation").

Unknown fields are problems too (a typo such as "refrence" must not be ignored).
docs/graders.md maps every field to its behaviour.
"""

from __future__ import annotations

import ast
from typing import Annotated, Any, Literal

import jsonschema
import pydantic
from pydantic import Field

from rft_grader.domain import InvalidSpec, Issue
from rft_grader.expression import Expression, ExpressionSyntaxError
from rft_grader.limits import Limits, excerpt
from rft_grader.templates import template_problems

MAX_PYTHON_SOURCE_BYTES = 256 * 1024
MAX_SUB_GRADER_NAME_CHARS = 64
"""Longest name of a multi's sub-grader (it is a key of every result's sub_scores and metrics)."""
MAX_LISTED_ISSUES = 100
"""Issues listed for one spec; the rest are counted in a last issue."""
ROUGE_METRICS = ("rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
RANKED_METRICS = ("top@1", "top@5", "top@max", "reciprocal_rank")


class _Spec(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=256)
    """Name of the grader (required, as in OpenAI's schema)."""

    def templates(self) -> dict[str, str]:
        """Template strings of this spec by field path, for syntax checks."""
        return {}

    def problems(self) -> list[Issue]:
        """Checks beyond field types (templates, expressions, code)."""
        issues = []
        for path, text in self.templates().items():
            issues.extend(Issue(path, problem) for problem in template_problems(text))
        return issues

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        """Declared [low, high] of the score; None means unbounded."""
        return (0.0, 1.0)


class StringCheckSpec(_Spec):
    type: Literal["string_check"]
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]

    def templates(self) -> dict[str, str]:
        return {"input": self.input, "reference": self.reference}


class TextSimilaritySpec(_Spec):
    type: Literal["text_similarity"]
    input: str
    reference: str
    evaluation_metric: Literal[
        "fuzzy_match",
        "bleu",
        "gleu",
        "meteor",
        "cosine",
        "rouge_1",
        "rouge_2",
        "rouge_3",
        "rouge_4",
        "rouge_5",
        "rouge_l",
    ]
    pass_threshold: float | None = None

    def templates(self) -> dict[str, str]:
        return {"input": self.input, "reference": self.reference}

    def problems(self) -> list[Issue]:
        issues = super().problems()
        if self.evaluation_metric == "cosine":
            issues.append(
                Issue(
                    "evaluation_metric",
                    "cosine needs an embedding model, which this server does not run (OpenAI offers it for evals "
                    "only); use fuzzy_match, bleu, gleu, meteor or rouge_*",
                )
            )
        return issues


class PythonSpec(_Spec):
    type: Literal["python"]
    source: str
    image_tag: str | None = None
    """Accepted for compatibility and ignored: the sandbox has one fixed image."""
    pass_threshold: float | None = None
    range: tuple[float, float] = (0.0, 1.0)
    """Our extension: allowed score range; default [0, 1]."""

    def problems(self) -> list[Issue]:
        issues = super().problems()
        size = len(self.source.encode("utf-8", "surrogatepass"))
        if size > MAX_PYTHON_SOURCE_BYTES:
            return [Issue("source", f"source is {size} bytes; at most {MAX_PYTHON_SOURCE_BYTES} are allowed")]
        try:
            tree = ast.parse(self.source, "<grader>")
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            return [*issues, Issue("source", f"source does not parse{where}: {exc}")]
        grade = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "grade"]
        if not grade:
            issues.append(Issue("source", "source must define a top-level function grade(sample, item)"))
        elif isinstance(grade[-1], ast.AsyncFunctionDef):
            issues.append(Issue("source", "grade must be a plain function, not async"))
        issues.extend(_range_problems(self.range, self.pass_threshold))
        return issues

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        return self.range


class ContentPart(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    type: Literal["input_text", "output_text"]
    text: str


class Message(pydantic.BaseModel):
    """A chat message of score_model / label_model `input`; text content only."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | ContentPart | list[ContentPart]
    type: Literal["message"] = "message"

    @pydantic.field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        parts = value if isinstance(value, list) else [value]
        for part in parts:
            if isinstance(part, dict) and part.get("type") not in ("input_text", "output_text"):
                raise ValueError(
                    f"content part of type {part.get('type')!r} is not supported; "
                    "use a string or {type: input_text|output_text, text}"
                )
        return value

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "".join(part.text for part in parts)


class SamplingParams(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    seed: int | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    temperature: float | None = Field(None, ge=0, le=2)
    max_completions_tokens: int | None = Field(None, ge=1)
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class _ModelSpec(_Spec):
    model: str = Field(min_length=1)
    input: list[Message] = Field(min_length=1)
    base_url: str | None = None
    """Our extension: the OpenAI-compatible endpoint for this grader (server must allow it)."""

    def templates(self) -> dict[str, str]:
        return {f"input.{i}.content": message.text for i, message in enumerate(self.input)}


class ScoreModelSpec(_ModelSpec):
    type: Literal["score_model"]
    range: tuple[float, float] = (0.0, 1.0)
    pass_threshold: float | None = None
    sampling_params: SamplingParams | None = None

    def problems(self) -> list[Issue]:
        return [*super().problems(), *_range_problems(self.range, self.pass_threshold)]

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        return self.range


class LabelModelSpec(_ModelSpec):
    type: Literal["label_model"]
    labels: list[str] = Field(min_length=1)
    passing_labels: list[str] = Field(min_length=1)
    sampling_params: SamplingParams | None = None

    def problems(self) -> list[Issue]:
        issues = super().problems()
        if len(set(self.labels)) != len(self.labels):
            issues.append(Issue("labels", "labels must be distinct"))
        for i, label in enumerate(self.passing_labels):
            if label not in self.labels:
                issues.append(Issue(f"passing_labels.{i}", f"{excerpt(label)} is not one of `labels`"))
        return issues


class MathEquivalenceSpec(_Spec):
    type: Literal["math_equivalence"]
    input: str
    reference: str
    float_rounding: int = Field(6, ge=0, le=15)
    """Decimal places numbers are rounded to before comparing."""

    def templates(self) -> dict[str, str]:
        return {"input": self.input, "reference": self.reference}


class RankedListSpec(_Spec):
    type: Literal["ranked_list"]
    input: str
    """The model's ranked list: a JSON list, or one entry per line, or comma separated."""
    reference: str
    """The correct answer(s): one value, or a list in the same formats."""
    score_metric: Literal["top@1", "top@5", "top@max", "reciprocal_rank"] = "top@1"
    case_sensitive: bool = False
    max_items: int = Field(100, ge=1, le=10_000)
    """Entries after the first max_items are ignored (bounds top@max)."""

    def templates(self) -> dict[str, str]:
        return {"input": self.input, "reference": self.reference}


class JsonCheckSpec(_Spec):
    type: Literal["json_check"]
    input: str
    """Template of the JSON text to check, e.g. "{{sample.output_text}}"."""
    json_schema: dict[str, Any] | None = Field(None, alias="schema")
    fields: dict[str, Any] | None = None
    """JSON path in the answer (dots, digits index lists) -> expected value or template."""
    scoring: Literal["all", "fraction"] = "all"

    def templates(self) -> dict[str, str]:
        found = {"input": self.input}
        for path, expected in (self.fields or {}).items():
            if isinstance(expected, str):
                found[f"fields.{path}"] = expected
        return found

    def problems(self) -> list[Issue]:
        issues = super().problems()
        if self.json_schema is None and not self.fields:
            issues.append(Issue("schema", "set schema, fields, or both"))
        if self.json_schema is not None:
            try:
                jsonschema.validators.validator_for(self.json_schema).check_schema(self.json_schema)
            except jsonschema.SchemaError as exc:
                issues.append(Issue("schema", f"not a valid JSON Schema: {exc.message}"))
        for path in self.fields or {}:
            if not path or any(not part for part in path.split(".")):
                issues.append(Issue(f"fields.{path}", "path must be dot-separated field names, e.g. answer.value"))
        return issues


LeafSpec = Annotated[
    StringCheckSpec
    | TextSimilaritySpec
    | PythonSpec
    | ScoreModelSpec
    | LabelModelSpec
    | MathEquivalenceSpec
    | RankedListSpec
    | JsonCheckSpec,
    Field(discriminator="type"),
]


class MultiSpec(_Spec):
    type: Literal["multi"]
    graders: dict[str, LeafSpec] = Field(min_length=1)
    calculate_output: str
    range: tuple[float, float] | None = None
    """Our extension: allowed range of the output; default: any finite number."""
    pass_threshold: float | None = None
    """Our extension: `passed` is output >= pass_threshold."""

    def problems(self) -> list[Issue]:
        # Sub-graders and calculate_output are checked by parse_spec, part by part.
        return _range_problems(self.range, self.pass_threshold) if self.range is not None else []

    @property
    def score_range(self) -> tuple[float | None, float | None]:
        return self.range if self.range is not None else (None, None)


AnySpec = (
    StringCheckSpec
    | TextSimilaritySpec
    | PythonSpec
    | ScoreModelSpec
    | LabelModelSpec
    | MultiSpec
    | MathEquivalenceSpec
    | RankedListSpec
    | JsonCheckSpec
)

SPEC_CLASSES: dict[str, type[_Spec]] = {
    "string_check": StringCheckSpec,
    "text_similarity": TextSimilaritySpec,
    "python": PythonSpec,
    "score_model": ScoreModelSpec,
    "label_model": LabelModelSpec,
    "multi": MultiSpec,
    "math_equivalence": MathEquivalenceSpec,
    "ranked_list": RankedListSpec,
    "json_check": JsonCheckSpec,
}


def _range_problems(range_: tuple[float, float], pass_threshold: float | None) -> list[Issue]:
    low, high = range_
    issues = []
    if not low < high:
        issues.append(Issue("range", f"range must be [low, high] with low < high, got [{low}, {high}]"))
    elif pass_threshold is not None and not low <= pass_threshold <= high:
        issues.append(Issue("pass_threshold", f"pass_threshold {pass_threshold} is outside range [{low}, {high}]"))
    return issues


_MESSAGES = {
    "missing": "required field is missing",
    "extra_forbidden": "unknown field",
}


def _issues_from(error: pydantic.ValidationError, prefix: str) -> list[Issue]:
    issues = []
    for entry in error.errors(include_url=False):
        loc = [str(part) for part in entry["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc)
        message = _MESSAGES.get(entry["type"], entry["msg"])
        if entry["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        issues.append(Issue(path, message))
    return issues


def _join(prefix: str, field: str) -> str:
    return ".".join(part for part in (prefix, field) if part)


def _raw_template_issues(raw: dict[str, Any], prefix: str, taken: set[str]) -> list[Issue]:
    """Template problems in the raw input / reference / messages, for a spec whose
    fields failed to validate (so every problem is listed in one answer)."""
    found = {}
    for key in ("input", "reference"):
        if isinstance(raw.get(key), str):
            found[key] = raw[key]
    if isinstance(raw.get("input"), list):
        for i, message in enumerate(raw["input"]):
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                found[f"input.{i}.content"] = message["content"]
    issues = []
    for field, text in found.items():
        path = _join(prefix, field)
        if path not in taken:
            issues.extend(Issue(path, problem) for problem in template_problems(text))
    return issues


def _parse_leaf(raw: Any, prefix: str) -> tuple[_Spec | None, list[Issue]]:
    if not isinstance(raw, dict):
        return None, [Issue(prefix, "a grader spec must be a JSON object")]
    kind = raw.get("type")
    if kind == "multi" and prefix:
        return None, [Issue(_join(prefix, "type"), "a multi grader cannot contain another multi")]
    if not isinstance(kind, str) or kind not in SPEC_CLASSES:
        found = "is missing" if kind is None else f"{kind!r} is unknown"
        return None, [Issue(_join(prefix, "type"), f"grader type {found}; expected one of {', '.join(SPEC_CLASSES)}")]
    try:
        spec = SPEC_CLASSES[kind].model_validate(raw)
    except pydantic.ValidationError as exc:
        issues = _issues_from(exc, prefix)
        return None, issues + _raw_template_issues(raw, prefix, {i.field for i in issues})
    return spec, [Issue(_join(prefix, i.field), i.message) for i in spec.problems()]


class _MultiFields(MultiSpec):
    """MultiSpec with sub-graders left raw, to check the multi's own fields alone."""

    graders: dict[str, Any] = Field(min_length=1)


def _invalid(issues: list[Issue]) -> InvalidSpec:
    """InvalidSpec listing the first MAX_LISTED_ISSUES issues and counting the rest."""
    if len(issues) > MAX_LISTED_ISSUES:
        more = len(issues) - MAX_LISTED_ISSUES
        issues = [*issues[:MAX_LISTED_ISSUES], Issue("", f"… and {more} more issues")]
    return InvalidSpec(issues)


def _sub_grader_issues(graders: dict[str, Any], max_graders: int) -> list[Issue]:
    issues = []
    if len(graders) > max_graders:
        issues.append(Issue("graders", f"{len(graders)} sub-graders; at most {max_graders} (max_multi_graders)"))
    for name in graders:
        if len(name) > MAX_SUB_GRADER_NAME_CHARS:
            message = f"sub-grader name {excerpt(name)} is longer than {MAX_SUB_GRADER_NAME_CHARS} characters"
            issues.append(Issue("graders", message))
    return issues


def parse_spec(raw: Any, max_graders: int = Limits.max_multi_graders) -> AnySpec:
    """The typed spec for a grader JSON object, or InvalidSpec listing every problem.

    `max_graders`: the most sub-graders a multi may have (more is an issue on `graders`)."""
    if not isinstance(raw, dict) or raw.get("type") != "multi":
        spec, issues = _parse_leaf(raw, "")
        if issues:
            raise _invalid(issues)
        return spec
    issues = []
    try:
        _MultiFields.model_validate(raw)
    except pydantic.ValidationError as exc:
        issues.extend(_issues_from(exc, ""))
    graders = raw.get("graders") if isinstance(raw.get("graders"), dict) else {}
    if names_issues := _sub_grader_issues(graders, max_graders):
        issues.extend(names_issues)  # the sub-graders themselves are not parsed: the spec is refused anyway
    else:
        for name, sub in graders.items():
            issues.extend(_parse_leaf(sub, f"graders.{name}")[1])
    if isinstance(raw.get("calculate_output"), str):
        try:
            Expression(raw["calculate_output"], set(graders))
        except ExpressionSyntaxError as exc:
            issues.append(Issue("calculate_output", str(exc)))
    if issues:
        raise _invalid(issues)
    spec = MultiSpec.model_validate(raw)
    if issues := spec.problems():
        raise _invalid(issues)
    return spec


def spec_type(raw: Any) -> str:
    """The spec's `type` when it names a known type, else ''."""
    kind = raw.get("type") if isinstance(raw, dict) else None
    return kind if isinstance(kind, str) and kind in SPEC_CLASSES else ""
