"""What every grader shares: the runtime it may use, rendering helpers and the final
score check."""

from __future__ import annotations

import dataclasses
from typing import Any

from rft_grader.domain import ErrorKind, Outcome, Pair, check_score
from rft_grader.lanes import CpuLanes, LaneResult
from rft_grader.limits import Limits
from rft_grader.model_client import ModelClient
from rft_grader.sandbox import SandboxPool
from rft_grader.spec import AnySpec
from rft_grader.templates import Template, TemplateError


@dataclasses.dataclass
class Runtime:
    """Resources graders run on, all owned by the app's lifespan, and the server's limits."""

    lanes: CpuLanes
    models: ModelClient
    sandbox: SandboxPool
    limits: Limits = Limits()


class Grader:
    """One grader built from a spec. Subclasses implement `_grade`; `grade` adds the
    score check every result passes through (finite, inside the declared range)."""

    def __init__(self, spec: AnySpec, runtime: Runtime) -> None:
        self.spec = spec
        self.runtime = runtime

    async def grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        outcomes = await self._grade(tenant, pairs)
        low, high = self.spec.score_range
        for outcome in outcomes:
            if outcome.error is None and (problem := check_score(outcome.score, low, high)):
                outcome.error = Outcome.failed(ErrorKind.INVALID_SCORE, problem).error
        return outcomes

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        raise NotImplementedError

    def passed(self, score: float) -> bool:
        """Pass threshold when the spec has one, else full marks (the top of the range)."""
        threshold = getattr(self.spec, "pass_threshold", None)
        if threshold is None:
            threshold = self.spec.score_range[1]
        return threshold is not None and score >= threshold


def render_each(template: Template, pairs: list[Pair]) -> list[str | Outcome]:
    """The rendered template per pair, or a TEMPLATE error outcome."""
    rendered: list[str | Outcome] = []
    for pair in pairs:
        try:
            rendered.append(template.render(pair.sample, pair.item))
        except TemplateError as exc:
            rendered.append(Outcome.failed(ErrorKind.TEMPLATE, str(exc)))
    return rendered


def render_input_and_reference(
    input_template: Template, reference_template: Template, pairs: list[Pair]
) -> list[tuple[str, str] | Outcome]:
    """(input, reference) per pair, or the TEMPLATE error of whichever failed first."""
    out: list[tuple[str, str] | Outcome] = []
    for text, reference in zip(render_each(input_template, pairs), render_each(reference_template, pairs), strict=True):
        failed = text if isinstance(text, Outcome) else reference if isinstance(reference, Outcome) else None
        out.append(failed or (text, reference))
    return out


async def run_on_lanes(runtime: Runtime, task: str, jobs: list[tuple | Outcome], to_outcome: Any) -> list[Outcome]:
    """Send the jobs that are argument tuples to the worker lanes; keep error outcomes.

    `to_outcome(LaneResult) -> Outcome` turns a worker's answer into the outcome.
    """
    todo = [job for job in jobs if not isinstance(job, Outcome)]
    answers = iter(await runtime.lanes.run(task, todo))
    outcomes = []
    for job in jobs:
        if isinstance(job, Outcome):
            outcomes.append(job)
            continue
        answer: LaneResult = next(answers)
        outcomes.append(Outcome(error=answer.error) if answer.error else to_outcome(answer))
    return outcomes
