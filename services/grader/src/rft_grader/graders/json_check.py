"""json_check (ours): structured-output checks.

The rendered `input` is parsed as JSON (text that is not JSON scores 0 with metric
valid_json = 0: a wrong answer, not a grader error). Then the checks: the JSON Schema
in `schema`, and each entry of `fields` (JSON path -> expected value; a template that
is exactly one {{...}} compares with the raw value, so numbers compare as numbers).
`scoring: all` gives 1.0 only when every check passes; `fraction` the share passed.
Metrics: valid_json, schema_valid, fields_matched (share of fields that matched).
"""

from __future__ import annotations

import asyncio
from typing import Any

from rft_grader.domain import Outcome, Pair
from rft_grader.graders.base import Grader, Runtime, run_on_lanes
from rft_grader.lanes import LaneResult
from rft_grader.spec import JsonCheckSpec
from rft_grader.templates import Template


class JsonCheckGrader(Grader):
    spec: JsonCheckSpec

    def __init__(self, spec: JsonCheckSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        expected = (spec.fields or {}).items()
        # Rendered per sample: `input`, then every templated expected value (raw when it is one {{...}}).
        self.templates = [("input", Template(spec.input))] + [
            (f"fields.{path}", Template(value)) for path, value in expected if isinstance(value, str)
        ]
        self.raw = {name for name, _ in self.templates[1:]}
        self.fields: list[tuple[str, Any]] = list(expected)

    def _job(self, pair: Pair) -> tuple | Outcome:
        rendered = self.render(pair, self.templates, self.raw)
        if isinstance(rendered, Outcome):
            return rendered
        text, values = rendered[0], iter(rendered[1:])
        expected = [(path, next(values) if isinstance(value, str) else value) for path, value in self.fields]
        return (text, self.spec.json_schema, expected, self.spec.scoring)

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        jobs: list[tuple | Outcome] = await asyncio.to_thread(lambda: [self._job(pair) for pair in pairs])

        def outcome(answer: LaneResult) -> Outcome:
            return Outcome(score=answer.score, passed=answer.score == 1.0, metrics=answer.metrics)

        return await run_on_lanes(self.runtime, "json_check", jobs, outcome)
