"""string_check: 1.0 when the check holds, else 0.0 (OpenAI semantics).

eq / ne: exact (case-sensitive) equality / inequality; like: input contains
reference (case-sensitive); ilike: input contains reference, ignoring case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rft_grader.domain import Outcome, Pair
from rft_grader.graders.base import Grader, Runtime
from rft_grader.spec import StringCheckSpec
from rft_grader.templates import Template

OPERATIONS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda text, reference: text == reference,
    "ne": lambda text, reference: text != reference,
    "like": lambda text, reference: reference in text,
    "ilike": lambda text, reference: reference.casefold() in text.casefold(),
}


class StringCheckGrader(Grader):
    spec: StringCheckSpec

    def __init__(self, spec: StringCheckSpec, runtime: Runtime) -> None:
        super().__init__(spec, runtime)
        self.fields = [("input", Template(spec.input)), ("reference", Template(spec.reference))]
        self.check = OPERATIONS[spec.operation]

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        # Linear string operations, but on up to max_call_rendered_chars of rendered text
        # per call: on a thread, one sample's strings at a time.
        return await asyncio.to_thread(self._grade_all, pairs)

    def _grade_all(self, pairs: list[Pair]) -> list[Outcome]:
        outcomes = []
        for pair in pairs:
            rendered = self.render(pair, self.fields)
            if isinstance(rendered, Outcome):
                outcomes.append(rendered)
                continue
            ok = self.check(*rendered)
            outcomes.append(Outcome(score=1.0 if ok else 0.0, passed=ok))
        return outcomes
