"""Domain types of the grader core: samples, outcomes, error kinds and domain errors.

Nothing here knows about protobuf; the servicer translates at the edge.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from typing import Any


class ErrorKind(str, enum.Enum):
    """Why one sample has no score (mirrors rft.grader.v1.GradeErrorKind)."""

    EXCEPTION = "exception"
    TIMEOUT = "timeout"
    INVALID_SCORE = "invalid_score"
    RESOURCE_LIMIT = "resource_limit"
    CRASHED = "crashed"
    TEMPLATE = "template"
    MODEL_CALL = "model_call"
    INVALID_INPUT = "invalid_input"


@dataclasses.dataclass(frozen=True, slots=True)
class GradeError:
    """A per-sample failure: the sample has no reward (never a silent 0)."""

    kind: ErrorKind
    message: str


@dataclasses.dataclass(slots=True)
class Outcome:
    """Result for one (sample, item) pair; `score` is meaningless when `error` is set."""

    score: float = 0.0
    passed: bool = False
    sub_scores: dict[str, float] = dataclasses.field(default_factory=dict)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    error: GradeError | None = None

    @classmethod
    def failed(cls, kind: ErrorKind, message: str) -> Outcome:
        return cls(error=GradeError(kind, message))

    @property
    def outcome_label(self) -> str:
        """'ok' or the error kind: the `outcome` label of rft_grader_grades_total."""
        return "ok" if self.error is None else self.error.kind.value


class Sample:
    """The model's answer. `output_json` is the client's parsed JSON, or else the
    answer text parsed as a JSON object when it is one (computed on first use).
    `output_tools` and `output_messages` are an episode's tool calls and messages
    (empty for a single-turn sample)."""

    __slots__ = ("output_text", "_output_json", "_parsed", "output_tools", "output_messages")

    def __init__(
        self,
        output_text: str,
        output_json: dict[str, Any] | None = None,
        output_tools: list[Any] | None = None,
        output_messages: list[Any] | None = None,
    ) -> None:
        self.output_text = output_text
        self._output_json = output_json
        self._parsed = output_json is not None
        self.output_tools = output_tools or []
        self.output_messages = output_messages or []

    @property
    def output_json(self) -> dict[str, Any] | None:
        if not self._parsed:
            self._parsed = True
            text = self.output_text.strip()
            if text.startswith("{"):
                try:
                    value = json.loads(text)
                except (ValueError, RecursionError):
                    value = None
                self._output_json = value if isinstance(value, dict) else None
        return self._output_json

    def as_dict(self) -> dict[str, Any]:
        """The `sample` argument of a python grader: {"output_text", "output_json",
        "output_tools", "output_messages"}."""
        return {
            "output_text": self.output_text,
            "output_json": self.output_json,
            "output_tools": self.output_tools,
            "output_messages": self.output_messages,
        }


@dataclasses.dataclass(slots=True)
class Pair:
    """One (sample, item) pair; `item` is the dataset line without `messages`."""

    sample: Sample
    item: dict[str, Any]


def check_score(value: Any, low: float | None, high: float | None) -> str | None:
    """Why `value` is not a valid score (None when it is): finite real number in [low, high].

    bool is refused on purpose: True would silently become 1.0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"score must be a number, got {type(value).__name__}"
    try:
        number = float(value)
    except OverflowError:
        return "score is too large for a float"
    if not math.isfinite(number):
        return f"score must be finite, got {number!r}"
    if low is not None and number < low or high is not None and number > high:
        return f"score {number!r} is outside the grader's range [{low}, {high}]"
    return None


# --- domain errors: the servicer maps each to one gRPC status code ---------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Issue:
    """One problem of a spec: JSON path of the field and what is expected there."""

    field: str
    message: str


class GraderError(Exception):
    """Base of the errors a request can end in (the whole call fails, nothing changes)."""


class InvalidSpec(GraderError):
    """The spec has problems; `issues` lists every one of them."""

    def __init__(self, issues: list[Issue]) -> None:
        self.issues = issues
        super().__init__("; ".join(f"{i.field or '<spec>'}: {i.message}" for i in issues))


class InvalidRequest(GraderError):
    """A request field is wrong (oversized batch, bad page token, bad name...)."""


class NotFound(GraderError):
    """The id is unknown to this tenant (also for another tenant's ids)."""


class AlreadyExists(GraderError):
    """The tenant already has a grader of that name."""


class Disabled(GraderError):
    """The spec needs a grader type that is disabled on this server."""


class Busy(GraderError):
    """A capacity bound was reached and stayed reached for the whole wait; retrying later works."""
