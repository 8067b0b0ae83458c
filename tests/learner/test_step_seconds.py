"""step_seconds, every RL step's wall time from its start until its weights are live on
the rollouts (issue #16): in the step's metrics (WatchJob, the HTTP API) with or
without generation collected ahead, and in Prometheus."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from rft_learner import job_metrics
from test_rl_step import FakeSampler, examples, params, stepper


@pytest.mark.parametrize("max_staleness", [0, 1, 2])
def test_every_rl_step_reports_its_wall_time_up_to_the_weight_push(max_staleness: int) -> None:
    train, sampler, seen = examples(16), FakeSampler(), []
    steps = stepper(train, params(max_staleness=max_staleness), sampler, seen, last_step=4)

    async def run_all():
        out = []
        for step in range(1, 5):
            out.append(await steps.run_step(step))
        await steps.close()
        return out

    started = time.perf_counter()
    metrics = asyncio.run(run_all())
    elapsed = time.perf_counter() - started
    assert len(metrics) == 4 and all("step_seconds" in m for m in metrics)
    for m in metrics:
        # The step holds its update and its weight push...
        assert m["step_seconds"] >= m["train_seconds"] + m["weight_sync_seconds"]
    # ...and steps do not overlap: generation collected ahead is not counted twice.
    assert sum(m["step_seconds"] for m in metrics) <= elapsed


def test_step_seconds_reaches_prometheus_as_a_histogram_per_job() -> None:
    job = "ftjob-step-seconds-test"
    job_metrics.export_step(job, {"train_reward_mean": 0.5, "step_seconds": 0.3, "train_seconds": 0.1})
    job_metrics.export_step(job, {"train_reward_mean": 0.6, "step_seconds": 0.7, "train_seconds": 0.2})
    assert REGISTRY.get_sample_value("rft_learner_step_seconds_count", {"job_id": job}) == 2
    assert REGISTRY.get_sample_value("rft_learner_step_seconds_sum", {"job_id": job}) == pytest.approx(1.0)
