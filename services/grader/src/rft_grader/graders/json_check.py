"""json_check (ours): structured-output checks.

The rendered `input` is parsed as JSON (text that is not JSON scores 0 with metric
valid_json = 0: a wrong answer, not a grader error). Then the checks: the JSON Schema
in `schema`, and each entry of `fields` (JSON path -> expected value; a template that
is exactly one {{...}} compares with the raw value, so numbers compare as numbers).
`scoring: all` gives 1.0 only when every check passes; `fraction` the share passed.
Metrics: valid_json, schema_valid, fields_matched (share of fields that matched).
"""

from __future__ import annotations

from typing import Any

from rft_grader.domain import ErrorKind, Outcome, Pair
from rft_grader.graders.base import Grader, Runtime, render_each, run_on_lanes
from rft_grader.lanes import LaneResult
from rft_grader.spec import JsonCheckSpec
from rft_grader.templates import Template, TemplateError


class JsonCheckGrader(Grader):
    spec: JsonCheckSpec

    def __init__(self, spec: JsonCheckSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.input = Template(spec.input)
        self.fields: list[tuple[str, Template | Any]] = [
            (path, Template(expected) if isinstance(expected, str) else expected)
            for path, expected in (spec.fields or {}).items()
        ]

    def _expected(self, pair: Pair) -> list[tuple[str, Any]]:
        return [
            (path, expected.value(pair.sample, pair.item) if isinstance(expected, Template) else expected)
            for path, expected in self.fields
        ]

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        jobs: list[tuple | Outcome] = []
        for pair, text in zip(pairs, render_each(self.input, pairs), strict=True):
            if isinstance(text, Outcome):
                jobs.append(text)
                continue
            try:
                expected = self._expected(pair)
            except TemplateError as exc:
                jobs.append(Outcome.failed(ErrorKind.TEMPLATE, str(exc)))
                continue
            jobs.append((text, self.spec.json_schema, expected, self.spec.scoring))

        def outcome(answer: LaneResult) -> Outcome:
            return Outcome(score=answer.score, passed=answer.score == 1.0, metrics=answer.metrics)

        return await run_on_lanes(self.runtime, "json_check", jobs, outcome)
