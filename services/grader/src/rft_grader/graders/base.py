"""What every grader shares: the runtime it may use, rendering within the call's budget,
and the final check every result passes (score finite and in range, message short)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any

from rft_grader.domain import ErrorKind, Outcome, Pair, check_score
from rft_grader.lanes import CpuLanes, LaneResult
from rft_grader.limits import Limits, RenderBudget, clip_messages
from rft_grader.model_client import ModelClient
from rft_grader.sandbox import SandboxPool
from rft_grader.spec import AnySpec
from rft_grader.templates import RenderTooLarge, Template, TemplateError

Field = tuple[str, Template]
"""A template and the spec field it came from ("input", "input.0.content", ...)."""


@dataclasses.dataclass
class Runtime:
    """What graders run on: resources owned by the app's lifespan, the server's limits
    and, in the copy `for_call` makes for one Grade call, that call's render budget."""

    lanes: CpuLanes
    models: ModelClient
    sandbox: SandboxPool
    limits: Limits = Limits()
    budget: RenderBudget | None = None

    def for_call(self) -> Runtime:
        """This runtime with a fresh render budget, shared by every grader of one call."""
        return dataclasses.replace(self, budget=RenderBudget.of(self.limits))


class Grader:
    """One grader built from a spec for one Grade call. Subclasses implement `_grade`;
    `grade` adds the checks every result passes through. Heavy per-batch work (rendering,
    parsing) runs on a thread, never on the event loop."""

    def __init__(self, spec: AnySpec, runtime: Runtime) -> None:
        self.spec = spec
        self.runtime = runtime
        self.budget = runtime.budget or RenderBudget.of(runtime.limits)

    async def grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        outcomes = await self._grade(tenant, pairs)
        low, high = self.spec.score_range
        for outcome in outcomes:
            if outcome.error is None and (problem := check_score(outcome.score, low, high)):
                outcome.error = Outcome.failed(ErrorKind.INVALID_SCORE, problem).error
        clip_messages(outcomes, self.runtime.limits.max_error_message_chars)
        return outcomes

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        raise NotImplementedError

    def passed(self, score: float) -> bool:
        """Pass threshold when the spec has one, else full marks (the top of the range)."""
        threshold = getattr(self.spec, "pass_threshold", None)
        if threshold is None:
            threshold = self.spec.score_range[1]
        return threshold is not None and score >= threshold

    def render(self, pair: Pair, fields: Sequence[Field], raw: Collection[str] = ()) -> list[Any] | Outcome:
        """The fields' values for one sample, or its error: TEMPLATE for a missing field,
        INVALID_INPUT naming the field and the limit past the render budget. A field named
        in `raw` whose template is one `{{...}}` gives the JSON value itself (no copy)."""
        grant = self.budget.reserve()
        used = 0
        values: list[Any] = []
        try:
            for name, template in fields:
                if name in raw and template.single:
                    values.append(template.value(pair.sample, pair.item))
                    continue
                text = template.render(pair.sample, pair.item, grant - used)
                used += len(text)
                values.append(text)
        except TemplateError as exc:
            return Outcome.failed(ErrorKind.TEMPLATE, str(exc))
        except RenderTooLarge:
            used = grant
            return Outcome.failed(ErrorKind.INVALID_INPUT, self.budget.too_large(name, grant))
        finally:
            self.budget.release(grant, used)
        return values

    def render_all(self, pairs: list[Pair], fields: Sequence[Field], raw: Collection[str] = ()) -> list[Any]:
        """`render` for every pair (call it on a thread: see asyncio.to_thread)."""
        return [self.render(pair, fields, raw) for pair in pairs]


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
