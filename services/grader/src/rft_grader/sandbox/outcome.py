"""What one sandboxed grade produced, and the errors of the sandbox itself."""

from __future__ import annotations

import dataclasses
import math

ERROR_KINDS = frozenset({"exception", "timeout", "invalid_score", "resource_limit", "crashed"})
MAX_ABS_SCORE = 1e300
"""Scores larger than this in magnitude are rejected as invalid (they are not rewards)."""


@dataclasses.dataclass(frozen=True)
class PythonOutcome:
    """The result of one (sample, item) pair: exactly one of `score` and `error_kind` is set."""

    score: float | None
    error_kind: str | None
    message: str = ""

    def __post_init__(self) -> None:
        if (self.score is None) == (self.error_kind is None):
            raise ValueError("exactly one of score and error_kind must be set")
        if self.error_kind is not None and self.error_kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {self.error_kind!r}")
        if self.score is not None and (
            type(self.score) is not float or not math.isfinite(self.score) or abs(self.score) > MAX_ABS_SCORE
        ):
            raise ValueError("score must be a finite float")

    @classmethod
    def error(cls, kind: str, message: str) -> PythonOutcome:
        return cls(score=None, error_kind=kind, message=message)


class SandboxUnavailable(RuntimeError):
    """Python graders cannot run here (no bubblewrap and the weaker mode not chosen, or start-up failed)."""


class SandboxBusy(RuntimeError):
    """Every tenant slot (--sandbox-max-tenants) stayed busy for the whole wait: retry later."""
