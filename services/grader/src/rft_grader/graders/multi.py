"""multi: named sub-graders combined by `calculate_output`.

Every sub-grader grades the whole batch (concurrently); per sample, the output is the
expression over their scores. A sample on which any sub-grader failed gets that
error (kind of the first failing sub-grader by name; the message lists each failure as
"graders.<name>: ..."): a combined score built on a
missing part would be a silent wrong reward. sub_scores holds each sub-grader's
score; metrics holds theirs as "<name>.<metric>".

`passed`: output >= pass_threshold when set (our extension), else every sub-grader passed.

Limits: at most max_multi_graders sub-graders (checked with the spec), no multi inside a
multi, calculate_output within expression.py's bounds. Combining runs on a thread: a
512-token formula over 4096 samples is a noticeable amount of Python.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from rft_grader.domain import ErrorKind, GradeError, Outcome, Pair
from rft_grader.expression import Expression, ExpressionError
from rft_grader.graders.base import Grader, Runtime
from rft_grader.limits import clip
from rft_grader.spec import AnySpec, MultiSpec

_MIN_PART_CHARS = 100


class MultiGrader(Grader):
    spec: MultiSpec

    def __init__(self, spec: MultiSpec, runtime: Runtime, build: Callable[[AnySpec, Runtime], Grader]) -> None:
        super().__init__(spec, runtime)
        shared = dataclasses.replace(runtime, budget=self.budget)  # one render budget for every sub-grader
        self.graders = {name: build(sub, shared) for name, sub in spec.graders.items()}
        self.expression = Expression(spec.calculate_output, set(spec.graders))

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        names = list(self.graders)
        columns = await asyncio.gather(*(self.graders[name].grade(tenant, pairs) for name in names))
        return await asyncio.to_thread(self._combine, names, columns)

    def _combine(self, names: list[str], columns: list[list[Outcome]]) -> list[Outcome]:
        limit = self.runtime.limits.max_error_message_chars
        outcomes = []
        for row in zip(*columns, strict=True):
            parts = dict(zip(names, row, strict=True))
            sub_scores = {name: part.score for name, part in parts.items() if part.error is None}
            failed = sorted((name, part.error) for name, part in parts.items() if part.error is not None)
            if failed:
                share = max(_MIN_PART_CHARS, limit // len(failed))  # the joined message stays near the limit
                message = "; ".join(f"graders.{name}: {clip(error.message, share)}" for name, error in failed)
                outcomes.append(Outcome(sub_scores=sub_scores, error=GradeError(failed[0][1].kind, message)))
                continue
            metrics = {f"{name}.{key}": value for name, part in parts.items() for key, value in part.metrics.items()}
            try:
                score = self.expression.evaluate(sub_scores)
            except ExpressionError as exc:
                outcomes.append(Outcome.failed(ErrorKind.INVALID_SCORE, f"calculate_output: {exc}"))
                continue
            if self.spec.pass_threshold is not None:
                passed = score >= self.spec.pass_threshold
            else:
                passed = all(part.passed for part in parts.values())
            outcomes.append(Outcome(score=score, passed=passed, sub_scores=sub_scores, metrics=metrics))
        return outcomes
