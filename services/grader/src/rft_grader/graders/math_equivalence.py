"""math_equivalence (ours): 1.0 when math-verify finds the answer mathematically equal
to the reference ("0.5", "1/2" and "\\frac{1}{2}" agree; a \\boxed{} answer inside prose
is found), else 0.0. A reference math-verify cannot read is INVALID_INPUT.
"""

from __future__ import annotations

import asyncio

from rft_grader.domain import Outcome, Pair
from rft_grader.graders.base import Grader, Runtime, run_on_lanes
from rft_grader.lanes import LaneResult
from rft_grader.spec import MathEquivalenceSpec
from rft_grader.templates import Template


class MathEquivalenceGrader(Grader):
    spec: MathEquivalenceSpec

    def __init__(self, spec: MathEquivalenceSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.fields = [("input", Template(spec.input)), ("reference", Template(spec.reference))]

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        rendered = await asyncio.to_thread(self.render_all, pairs, self.fields)
        jobs: list[tuple | Outcome] = [
            texts if isinstance(texts, Outcome) else (*texts, self.spec.float_rounding) for texts in rendered
        ]

        def outcome(answer: LaneResult) -> Outcome:
            return Outcome(score=answer.score, passed=answer.score == 1.0)

        return await run_on_lanes(self.runtime, "math_equivalence", jobs, outcome)
