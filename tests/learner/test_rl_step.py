"""The stages of one RL step (trainer.rl_step) against in-process fakes of the rollout
pool and the grader: what reaches the update, when weights are pushed, staleness,
dynamic sampling, reward shaping, grader errors, and evaluation's pass/fail."""

from __future__ import annotations

import asyncio

import pytest
from rft.grader.v1 import grader_pb2
from rft_learner.hparams import ReinforcementParams
from rft_learner.remote import GeneratedPrompt, GeneratedSample
from rft_learner.trainer.data import DataCursor, Example
from rft_learner.trainer.evaluate import evaluate
from rft_learner.trainer.rl_step import Collector, JobFailure, RLStepper, metric_is_documented


class FakeSampler:
    """Prompt #i samples text 'i' (or, for the prompts in `varied`, 'i' and 'x'
    alternately), as tokens 100 + i. Generation yields to the event
    loop, so overlapping work really overlaps."""

    def __init__(self, varied: set[int] | None = None, length: int = 2) -> None:
        self.version = 0
        self.varied = varied
        self.length = length
        self.in_flight = 0
        self.pushes_during_generation = 0
        self.generated: list[tuple[int, list[int]]] = []  # (version, prompt numbers)

    async def generate(self, prompts, sampling, seeds=None):
        self.in_flight += 1
        numbers = [int(p[0]["content"]) for p in prompts]
        self.generated.append((self.version, numbers))
        version = self.version
        await asyncio.sleep(0.03)  # slower than an update: generation ahead is still running at push time
        out = []
        for index, number in enumerate(numbers):
            samples = []
            for k in range(sampling.n):
                vary = self.varied is None or number in self.varied
                text = "x" if vary and k % 2 else str(number)
                samples.append(
                    GeneratedSample(index, text, [100 + number] * self.length, [-0.5] * self.length, 1, version)
                )
            out.append(GeneratedPrompt([1, 2, 3], samples))
        self.in_flight -= 1
        return out

    async def push_weights(self) -> float:
        if self.in_flight:
            self.pushes_during_generation += 1
        self.version += 1
        return 0.0


class FakeScorer:
    """Score 1 when the sample's text is the item's answer; 'error' items fail."""

    async def grade(self, pairs):
        results = []
        for text, item in pairs:
            if item.get("answer") == "error":
                results.append(grader_pb2.GradeResult(error=grader_pb2.GradeError(message="boom")))
            else:
                ok = text == item["answer"]
                results.append(grader_pb2.GradeResult(score=1.0 if ok else 0.0, passed=ok))
        return results


def examples(n: int, answer=lambda i: str(i)) -> list[Example]:
    return [Example([{"role": "user", "content": str(i)}], {"answer": answer(i)}) for i in range(n)]


def stepper(train, params, sampler, seen: list, last_step: int = 100) -> RLStepper:
    async def update(groups):
        seen.append(groups)
        await asyncio.sleep(0.01)
        return {"loss": 0.0}

    collector = Collector(sampler, train, DataCursor(len(train), 5), DataCursor(len(train), 6), params, seed=1)
    return RLStepper(collector, FakeScorer(), train, params, update, last_step)


def run(coro):
    return asyncio.run(coro)


def params(**overrides) -> ReinforcementParams:
    return ReinforcementParams(**{"batch_size": 2, "group_size": 4, "max_new_tokens": 8, **overrides})


def test_a_step_trains_on_graded_groups_then_pushes_and_reports_documented_metrics() -> None:
    train, sampler, seen = examples(8), FakeSampler(), []
    metrics = run(stepper(train, params(), sampler, seen).run_step(1))
    (groups,) = seen
    assert len(groups) == 2 and all(len(g.rewards) == 4 for g in groups)
    # Alternating right/wrong answers: rewards 1, 0, 1, 0 in each group.
    assert [g.rewards for g in groups] == [[1.0, 0.0, 1.0, 0.0]] * 2
    assert sampler.version == 1  # pushed once, after the update
    assert metrics["train_reward_mean"] == 0.5 and metrics["policy_version_lag"] == 0
    for name in ("generate_seconds", "grade_seconds", "train_seconds", "weight_sync_seconds", "step_seconds"):
        assert name in metrics
    undocumented = [name for name in metrics if not metric_is_documented(name)]
    assert not undocumented


def test_a_grading_error_drops_the_sample_and_too_many_fail_the_job() -> None:
    train = examples(4, answer=lambda i: "error" if i == 0 else str(i))
    seen: list = []
    # One failing prompt of 4 is 25% of the samples: under a 30% limit the step runs.
    run(stepper(train, params(batch_size=4, max_grader_error_fraction=0.3), FakeSampler(), seen).run_step(1))
    rewards = [r for g in seen[0] for r in g.rewards]
    assert rewards.count(None) == 4 and 0.0 in rewards  # errors are None, never a zero reward
    with pytest.raises(JobFailure, match="4 of 16 samples failed grading at step 1"):
        run(stepper(train, params(batch_size=4, max_grader_error_fraction=0.2), FakeSampler(), []).run_step(1))


def test_dynamic_sampling_drops_uniform_groups_and_refills_the_batch() -> None:
    # Only even prompts get differing scores; odd ones are all right (uniform, no signal).
    train, sampler, seen = examples(16), FakeSampler(varied={0, 2, 4, 6, 8, 10, 12, 14}), []
    metrics = run(stepper(train, params(batch_size=4, algorithm="dapo"), sampler, seen).run_step(1))
    (groups,) = seen
    assert len(groups) == 4
    assert all(len(set(g.rewards)) > 1 for g in groups)
    assert metrics["dynamic_sampling_rounds"] >= 2 and len(sampler.generated) == metrics["dynamic_sampling_rounds"]
    # Without it, the uniform groups are trained on as they come.
    seen_plain: list = []
    run(stepper(train, params(batch_size=4), FakeSampler(varied={0, 2, 4, 6, 8, 10, 12, 14}), seen_plain).run_step(1))
    assert any(len(set(g.rewards)) == 1 for g in seen_plain[0])


def test_overlong_shaping_lowers_the_trained_reward_not_the_reported_one() -> None:
    train, seen = examples(4), []
    # 8 of max 8 tokens with a 4-token buffer: the full penalty (1.0).
    metrics = run(
        stepper(train, params(overlong_buffer=4, overlong_penalty=1.0), FakeSampler(length=8), seen).run_step(1)
    )
    assert [g.rewards for g in seen[0]] == [[0.0, -1.0, 0.0, -1.0]] * 2
    assert metrics["train_reward_mean"] == 0.5


def trained_prompts(staleness: int, steps: int = 6, **overrides) -> tuple[list[list[int]], list[float], FakeSampler]:
    """The prompt numbers each step trained on, the steps' version lags, and the sampler."""
    train = examples(64)
    sampler = FakeSampler(varied=set(range(0, 64, 3)))  # a third of the prompts are informative
    seen: list = []
    pipeline = stepper(train, params(max_staleness=staleness, **overrides), sampler, seen, last_step=steps)

    async def run_steps():
        return [(await pipeline.run_step(step))["policy_version_lag"] for step in range(1, steps + 1)]

    lags = run(run_steps())
    # FakeSampler's tokens carry the prompt's number: recover which prompts each step trained on.
    prompts = [sorted({c[0] - 100 for g in groups for c in g.completions}) for groups in seen]
    return prompts, lags, sampler


@pytest.mark.parametrize("staleness", [1, 3])
def test_generation_runs_ahead_by_at_most_max_staleness_versions(staleness: int) -> None:
    prompts, lags, sampler = trained_prompts(staleness)
    assert sampler.pushes_during_generation == 0  # weights never change under in-flight generation
    assert max(lags) == staleness and all(lag <= staleness for lag in lags)
    assert len(sampler.generated) == 6  # nothing collected past the last step
    # Each step trains on the same prompts as in a job without staleness.
    assert prompts == trained_prompts(0)[0]


@pytest.mark.parametrize("staleness", [1, 2])
def test_with_dynamic_sampling_each_step_trains_on_the_same_prompts_whatever_the_staleness(staleness: int) -> None:
    plain, _, plain_sampler = trained_prompts(0, algorithm="dapo")
    assert len(plain_sampler.generated) > 6  # refill rounds happened
    assert trained_prompts(staleness, algorithm="dapo")[0] == plain


def test_the_checkpointed_cursor_is_before_batches_collected_ahead() -> None:
    train, sampler = examples(64), FakeSampler()
    pipeline = stepper(train, params(max_staleness=2), sampler, [], last_step=10)

    async def three_steps():
        positions = []
        for step in (1, 2, 3):
            await pipeline.run_step(step)
            positions.append((pipeline.resume_cursor()["position"], pipeline.collector.cursor.state_dict()["position"]))
        return positions

    # After step s (2 prompts each), steps s+1 and s+2 are collected ahead: the checkpoint
    # resumes at step s+1's prompts, 2s, while the cursor itself has drawn up to 2(s+2).
    assert run(three_steps()) == [(2, 6), (4, 8), (6, 10)]


def test_evaluation_counts_a_pass_by_the_graders_verdict_not_the_score() -> None:
    """A score_model grader with range [0, 10] and pass_threshold 7: score 8 passes."""

    class RangeScorer:
        async def grade(self, pairs):
            return [grader_pb2.GradeResult(score=8.0, passed=True) if t == "0" else grader_pb2.GradeResult(score=1.0)
                    for t, _ in pairs]  # fmt: skip

    metrics = run(evaluate(examples(1), FakeSampler(varied={0}), RangeScorer(), 4, 1.0, 8, seed=0))
    # Samples alternate '0' (8 / 10, passed) and 'x' (1 / 10, not passed: a full 1.0 on this scale is a fail).
    assert metrics["pass@1"] == 0.5 and metrics["pass@4"] == 1.0
    assert metrics["greedy_pass@1"] == 1.0  # the greedy (first) sample is '0'
