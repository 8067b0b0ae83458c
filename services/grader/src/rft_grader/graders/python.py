"""python: the user's `grade(sample, item) -> float`, run in the sandbox.

The sandbox (rft_grader.sandbox, built separately) isolates the code; this module
only adapts its outcomes and re-checks every score (finite, inside `range`): the
sandbox checks too, but a score is a reward, so we do not trust one layer alone.
`image_tag` is accepted and ignored: the sandbox has one fixed image (stdlib, numpy,
scipy, sympy, rapidfuzz).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from rft_grader.domain import Busy, Disabled, ErrorKind, Outcome, Pair, check_score
from rft_grader.graders.base import Grader
from rft_grader.sandbox import SandboxBusy, SandboxPool, SandboxSettings, SandboxUnavailable
from rft_grader.spec import PythonSpec

_KINDS = {kind.value: kind for kind in ErrorKind}


@contextlib.asynccontextmanager
async def open_sandbox(settings: SandboxSettings) -> AsyncIterator[SandboxPool]:
    """The sandbox pool for the app's lifespan (it may be unavailable: see its reason)."""
    async with SandboxPool(settings) as pool:
        yield pool


def sandbox_unavailable_reason(pool: SandboxPool) -> str:
    """Why python graders cannot run here ('' when they can)."""
    return "" if pool.available else (pool.unavailable_reason or "the python sandbox is unavailable")


class PythonGrader(Grader):
    spec: PythonSpec

    async def _grade(self, tenant: str, pairs: list[Pair]) -> list[Outcome]:
        pool = self.runtime.sandbox
        if reason := sandbox_unavailable_reason(pool):
            raise Disabled(f"python graders are disabled on this server: {reason}")
        # as_dict parses each answer that is a JSON object: up to a whole request of JSON, on a thread.
        samples = await asyncio.to_thread(lambda: [(p.sample.as_dict(), p.item) for p in pairs])
        try:
            outcomes = await pool.grade(tenant, self.spec.source, samples)
        except SandboxUnavailable as exc:  # the pool failed after start-up
            raise Disabled(f"python graders are disabled on this server: {exc}") from None
        except SandboxBusy as exc:  # the whole call is refused, so the caller retries it (the learner does)
            raise Busy(str(exc)) from None
        if len(outcomes) != len(pairs):
            message = f"the sandbox returned {len(outcomes)} results for {len(pairs)} samples"
            return [Outcome.failed(ErrorKind.CRASHED, message) for _ in pairs]
        low, high = self.spec.range
        results = []
        for outcome in outcomes:
            if outcome.error_kind is not None:
                kind = _KINDS.get(outcome.error_kind, ErrorKind.EXCEPTION)
                results.append(Outcome.failed(kind, outcome.message or outcome.error_kind))
            elif problem := check_score(outcome.score, low, high):
                results.append(Outcome.failed(ErrorKind.INVALID_SCORE, problem))
            else:
                score = float(outcome.score)
                results.append(Outcome(score=score, passed=self.passed(score)))
        return results
