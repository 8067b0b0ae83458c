"""string_check: 1.0 when the check holds, else 0.0 (OpenAI semantics).

eq / ne: exact (case-sensitive) equality / inequality; like: input contains
reference (case-sensitive); ilike: input contains reference, ignoring case.
"""

from __future__ import annotations

from collections.abc import Callable

from rft_grader.domain import ErrorKind, Outcome, Pair
from rft_grader.graders.base import Grader, Runtime
from rft_grader.spec import StringCheckSpec
from rft_grader.templates import Template, TemplateError

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
        self.input = Template(spec.input)
        self.reference = Template(spec.reference)
        self.check = OPERATIONS[spec.operation]

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        # Linear string operations on texts bounded by max_text_chars: cheap enough
        # to run inline (a thread hop would cost more than the work).
        outcomes = []
        for pair in pairs:
            try:
                ok = self.check(
                    self.input.render(pair.sample, pair.item), self.reference.render(pair.sample, pair.item)
                )
            except TemplateError as exc:
                outcomes.append(Outcome.failed(ErrorKind.TEMPLATE, str(exc)))
                continue
            outcomes.append(Outcome(score=1.0 if ok else 0.0, passed=ok))
        return outcomes
