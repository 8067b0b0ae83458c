"""text_similarity: a similarity metric between input and reference, in [0, 1].

The metrics run in worker processes (see cpu_tasks.py for their exact definitions);
`passed` is score >= pass_threshold (full marks when no threshold is set).
"""

from __future__ import annotations

import asyncio

from rft_grader.domain import Outcome, Pair
from rft_grader.graders.base import Grader, Runtime, run_on_lanes
from rft_grader.lanes import LaneResult
from rft_grader.spec import TextSimilaritySpec
from rft_grader.templates import Template


class TextSimilarityGrader(Grader):
    spec: TextSimilaritySpec

    def __init__(self, spec: TextSimilaritySpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.fields = [("input", Template(spec.input)), ("reference", Template(spec.reference))]

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        rendered = await asyncio.to_thread(self.render_all, pairs, self.fields)
        jobs: list[tuple | Outcome] = [
            texts if isinstance(texts, Outcome) else (self.spec.evaluation_metric, *texts) for texts in rendered
        ]

        def outcome(answer: LaneResult) -> Outcome:
            return Outcome(score=answer.score, passed=self.passed(answer.score))

        return await run_on_lanes(self.runtime, "text_similarity", jobs, outcome)
