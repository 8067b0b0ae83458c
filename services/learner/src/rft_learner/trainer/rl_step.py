"""One RL step, as a pipeline of named stages:

    collect -> grade -> build batch -> update -> sync -> record

- **collect** (`Collector`): take the next prompts from the data cursor and sample a
  group of completions for each from the rollout pool, tagged with the policy version
  that produced them.
- **grade** (`grade_rollouts`): score every sample; a grading error drops the sample
  (it is not a zero reward), and too many fail the job.
- **build batch** (`build_batch`): DAPO's dynamic sampling (drop groups whose samples
  all score the same; the step collects again to refill) and overlong reward shaping.
- **update**: `ppo_epochs` x `num_minibatches` optimizer steps (trainer.updates), in a
  worker thread.
- **sync**: push the new weights to every rollout replica (a new policy version).
- **record** (`step_metrics`): the step's metrics, under the names of `METRIC_NAMES`.

`RLStepper.run_step` strings them together. With `max_staleness` N it keeps up to N
batches collected ahead of training (each sampled from one policy version, at most N
behind the one that trains on it; the update's rollout correction weighs them), and
waits for in-flight generation before pushing weights, so no sample spans two versions.

The rollout pool and the grader are reached through two small protocols, so the stages
run against in-process fakes in tests.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import torch
from rft.rollout.v1 import rollout_pb2
from rft_common.api_keys import DEFAULT_TENANT
from rft_common.episodes import episode_metrics
from rft_common.episodes import episode_params as shared_episode_params

from rft_learner.hparams import ReinforcementParams
from rft_learner.remote import GeneratedPrompt, grader_sample
from rft_learner.rl import informative_groups, overlong_penalty
from rft_learner.trainer.data import DataCursor, Example
from rft_learner.trainer.updates import Group


class JobFailure(Exception):
    """The job cannot go on; `code` and the message reach the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Sampler(Protocol):
    """What the pipeline needs from the rollout replicas (remote.RolloutPool)."""

    version: int

    async def generate(
        self,
        prompts: Sequence[list[dict[str, Any]]],
        sampling: rollout_pb2.SamplingParams,
        seeds: Sequence[int],
        episode: rollout_pb2.EpisodeParams | None = None,
    ) -> list[GeneratedPrompt]: ...

    async def push_weights(self) -> float: ...


class Scorer(Protocol):
    """What the pipeline needs from the grader (remote.GraderClient)."""

    async def grade(self, pairs: Sequence[tuple[Any, dict[str, Any]]]) -> list[Any]: ...


def episode_params(params: ReinforcementParams, tenant: str = "") -> rollout_pb2.EpisodeParams | None:
    """The job's episode settings for the rollout, acting for `tenant` (whose tool
    servers only it may use); None for single-turn jobs (rft_common.episodes, as evaluations
    from the CLI and the HTTP API build them)."""
    return shared_episode_params(params.max_turns, params.tool_servers, tenant, params.python_tools)


def job_tenant(request) -> str:
    """The tenant a job acts for (CreateJob set its grader's tenant to the acting tenant)."""
    return request.method.reinforcement.grader.tenant or DEFAULT_TENANT


def prompt_seed(job_seed: int, step: int, index: int) -> int:
    """The sampling seed of one prompt of one step: a resumed job samples the same."""
    return (job_seed * 1_000_003 + step * 10_007 + index) % (2**31 - 1)


# ---------------------------------------------------------------- collect


@dataclasses.dataclass
class Rollouts:
    """One round of generation: a group of samples for each of `indices`."""

    indices: list[int]
    prompts: list[GeneratedPrompt]
    seconds: float


class Collector:
    """Draws prompts and samples them. A step's first round comes from `cursor`, drawn
    when the round is started (in step order, however far ahead); refill rounds (dynamic
    sampling) come from `refill_cursor`, drawn when the step runs. So each step trains on
    the same prompts whatever max_staleness is, and both cursors checkpoint exactly."""

    def __init__(
        self,
        sampler: Sampler,
        examples: Sequence[Example],
        cursor: DataCursor,
        refill_cursor: DataCursor,
        params: ReinforcementParams,
        seed: int,
        tenant: str = "",
    ) -> None:
        self.sampler = sampler
        self.examples = examples
        self.cursor = cursor
        self.refill_cursor = refill_cursor
        self.batch_size = params.batch_size
        self.sampling = rollout_pb2.SamplingParams(
            n=params.samples_per_prompt, temperature=params.temperature, max_tokens=params.max_new_tokens
        )
        self.episode = episode_params(params, tenant)
        self.seed = seed

    def start(self, step: int, round_: int = 0) -> asyncio.Task[Rollouts]:
        """Draw round `round_` of global step `step` now and generate it in a task."""
        indices = (self.refill_cursor if round_ else self.cursor).next_batch(self.batch_size)
        seeds = [prompt_seed(self.seed, step, round_ * self.batch_size + i) for i in range(len(indices))]
        return asyncio.create_task(self._generate(indices, seeds))

    async def collect(self, step: int, round_: int = 0) -> Rollouts:
        return await self.start(step, round_)

    async def _generate(self, indices: list[int], seeds: list[int]) -> Rollouts:
        started = time.perf_counter()
        messages = [self.examples[i].messages for i in indices]
        if self.episode is None:  # (fakes of the Sampler protocol may not take `episode`)
            generated = await self.sampler.generate(messages, self.sampling, seeds)
        else:
            generated = await self.sampler.generate(messages, self.sampling, seeds, episode=self.episode)
        return Rollouts(indices, generated, time.perf_counter() - started)


# ---------------------------------------------------------------- grade


@dataclasses.dataclass
class Graded:
    """Graded rollouts: one Group per prompt, with the grader's scores (None: error)."""

    rollouts: Rollouts
    groups: list[Group]
    errors: int
    error_examples: list[str]
    seconds: float

    @property
    def samples(self) -> int:
        return sum(len(g.rewards) for g in self.groups)


async def grade_rollouts(scorer: Scorer, examples: Sequence[Example], rollouts: Rollouts) -> Graded:
    started = time.perf_counter()
    pairs = [
        (grader_sample(s), examples[i].item)
        for i, p in zip(rollouts.indices, rollouts.prompts, strict=True)
        for s in p.samples
    ]
    results = iter(await scorer.grade(pairs))
    groups, errors, reasons = [], 0, set()
    for prompt in rollouts.prompts:
        rewards: list[float | None] = []
        for _sample in prompt.samples:
            result = next(results)
            if result.HasField("error"):
                errors += 1
                reasons.add(result.error.message[:200])
                rewards.append(None)
            else:
                rewards.append(float(result.score))
        groups.append(
            Group(
                prompt.prompt_token_ids,
                [s.token_ids for s in prompt.samples],
                [s.logprobs for s in prompt.samples],
                rewards,
                [s.token_mask for s in prompt.samples] if any(s.episode is not None for s in prompt.samples) else None,
            )
        )
    return Graded(rollouts, groups, errors, sorted(reasons)[:3], time.perf_counter() - started)


def check_error_rate(graded: Graded, limit: float, step: int) -> None:
    """A grader error is not a zero reward; past `limit` of a round's samples, the job fails."""
    if graded.errors > limit * graded.samples:
        raise JobFailure(
            "grader_error_rate",
            f"{graded.errors} of {graded.samples} samples failed grading at step {step} "
            f"(limit {limit:.0%}); e.g. {graded.error_examples}",
        )


# ---------------------------------------------------------------- build batch


def shape_rewards(group: Group, params: ReinforcementParams) -> Group:
    """The group with DAPO's overlong penalty added to its graded rewards (if enabled)."""
    buffer = params.resolved_overlong_buffer
    if not buffer:
        return group
    lengths = torch.tensor([len(c) for c in group.completions], dtype=torch.float32)
    penalties = overlong_penalty(lengths, params.max_new_tokens, buffer, params.overlong_penalty).tolist()
    rewards = [None if r is None else r + p for r, p in zip(group.rewards, penalties, strict=True)]
    return dataclasses.replace(group, rewards=rewards)


def build_batch(rounds: Sequence[Graded], params: ReinforcementParams) -> tuple[list[Group], dict[str, float]]:
    """The groups to train on and the batch metrics. With dynamic sampling, groups whose
    samples all score the same (no learning signal under group advantages) give way to
    informative ones from later rounds, batch_size groups in all. Rewards are shaped
    after that choice, on the grader's scores."""
    groups = [g for graded in rounds for g in graded.groups]
    metrics: dict[str, float] = {}
    if params.resolved_dynamic_sampling:
        keep = informative_groups([g.rewards for g in groups])
        kept = [g for g, k in zip(groups, keep, strict=True) if k]
        metrics["dynamic_sampling_kept_fraction"] = len(kept) / len(groups) if groups else 0.0
        metrics["dynamic_sampling_rounds"] = float(len(rounds))
        # The batch keeps batch_size groups (data-parallel ranks each need their share):
        # short of informative ones after the last round, it is topped up with uniform
        # groups, whose advantages are 0.
        uniform = [g for g, k in zip(groups, keep, strict=True) if not k]
        groups = (kept + uniform)[: params.batch_size]
    return [shape_rewards(g, params) for g in groups], metrics


def needs_refill(rounds: Sequence[Graded], params: ReinforcementParams) -> bool:
    if not params.resolved_dynamic_sampling or len(rounds) >= params.dynamic_sampling_max_rounds:
        return False
    informative = sum(sum(informative_groups([g.rewards for g in r.groups])) for r in rounds)
    return informative < params.batch_size


# ---------------------------------------------------------------- record

# Every metric a step or an evaluation can publish, with its meaning: the public
# contract of WatchJob's MetricsPoint.values, the API and Prometheus (documented in
# fine_tuning.proto and docs/learner.md; tests assert each published name is here).
METRIC_NAMES: dict[str, str] = {
    # RL step: rewards and samples
    "train_reward_mean": "mean grader score of the step's graded samples (before reward shaping)",
    "response_length_mean": "mean completion length in tokens",
    "grader_errors": "samples whose grading failed this step (dropped, not scored 0)",
    "policy_version_lag": "versions between the oldest sample's policy and the trained policy",
    "train_samples": "samples trained on",
    "train_tokens": "completion tokens trained on",
    "skipped_steps": "1 when no sample could be trained on",
    "dynamic_sampling_kept_fraction": "share of collected groups with differing scores (DAPO dynamic sampling)",
    "dynamic_sampling_rounds": "generation rounds the step needed to fill its batch",
    # RL step: the update
    "loss": "total loss, mean over the step's optimizer steps",
    "policy_loss": "policy-gradient term of the loss",
    "kl": "mean per-token KL(policy || reference) before the update (only with kl_coef > 0)",
    "entropy": "mean per-token policy entropy",
    "approx_kl": "mean k3 KL between the policy before and during the update",
    "clip_fraction": "share of tokens whose clip is active (PPO/GSPO) or whose weight is capped (CISPO)",
    "ratio_mean": "mean policy ratio against the policy before the update",
    "ratio_max": "largest policy ratio",
    "advantage_abs_mean": "mean absolute advantage",
    "grad_norm": "gradient norm before clipping, mean over optimizer steps",
    "optimizer_steps": "optimizer steps taken this step (ppo_epochs x num_minibatches)",
    "value_loss": "PPO value loss",
    "value_clip_fraction": "share of tokens where PPO's value clip is active",
    "explained_variance": "1 - Var(returns - values) / Var(returns)",
    "mismatch_kl": "k3 KL between the rollout's and the trainer's token probabilities",
    "is_weight_mean": "mean trainer/rollout importance weight before truncation",
    "is_truncated_fraction": "share of tokens whose importance weight was truncated (TIS)",
    "is_masked_fraction": "share of tokens dropped by masked importance sampling (MIS)",
    # RL step: timing
    "generate_seconds": "seconds spent sampling this step's batch",
    "grade_seconds": "seconds spent grading",
    "train_seconds": "seconds of the update",
    "weight_sync_seconds": "seconds to push the weights to every rollout replica",
    "step_seconds": "wall-clock seconds of the whole step: for RL, from its start until its weights are live on the rollouts",
    "tokens_per_second": "completion tokens generated per second of generation",
    # RL step: multi-turn episodes (jobs with max_turns > 1 or tool_servers)
    "episode_turns_mean": "model turns per episode",
    "tool_calls_mean": "tool calls per episode",
    "tool_error_rate": "share of tool calls that failed (unparsable, unknown tool, tool error, timeout)",
    "tool_seconds_mean": "mean seconds of a tool call",
    "sampled_tokens_mean": "tokens the model sampled per episode (trained on)",
    "tool_tokens_mean": "tokens inserted per episode (tool results and their template tokens; masked out)",
    # SFT step
    "sft_loss": "token cross-entropy on the reference answers",
    "num_tokens": "answer tokens in the SFT batch",
    # evaluation
    "valid_reward_mean": "mean grader score of sampled validation answers",
    "valid_greedy_reward_mean": "mean grader score of greedy validation answers",
    "valid_grader_errors": "validation samples whose grading failed",
    "valid_prompts": "validation prompts evaluated",
    "valid_response_length_mean": "mean sampled validation answer length",
    "pass@1": "chance one sample passes (the grader's pass_threshold), unbiased estimate",
    "pass@k": "chance one of k = eval_samples samples passes (published as pass@<k>)",
    "greedy_pass@1": "share of greedy answers that pass",
    "top@k": "ranked-list graders: share of greedy answers with the reference in the top k (top@1, top@5, top@max)",
    "eval_seconds": "seconds of the evaluation",
    "valid_episode_turns_mean": "model turns per sampled validation episode (tool-using jobs)",
    "valid_tool_calls_mean": "tool calls per sampled validation episode",
    "valid_tool_error_rate": "share of the sampled validation episodes' tool calls that failed",
}


def metric_is_documented(name: str) -> bool:
    """Published names are METRIC_NAMES keys; pass@<k> and top@<k> stand for their families."""
    if name in METRIC_NAMES:
        return True
    family, _, k = name.partition("@")
    return bool(k) and f"{family}@k" in METRIC_NAMES


def step_metrics(rounds: Sequence[Graded], groups: Sequence[Group], trained_version: int) -> dict[str, float]:
    """What the samples of a step say, before the update adds its own metrics."""
    rewards = [r for graded in rounds for g in graded.groups for r in g.rewards if r is not None]
    samples = [s for graded in rounds for p in graded.rollouts.prompts for s in p.samples]
    tokens = sum(len(s.token_ids) for s in samples)
    generate_seconds = sum(g.rollouts.seconds for g in rounds)
    return {
        "train_reward_mean": sum(rewards) / len(rewards) if rewards else math.nan,
        "response_length_mean": tokens / max(1, len(samples)),
        "policy_version_lag": float(trained_version - min(s.policy_version for s in samples)),
        "grader_errors": float(sum(g.errors for g in rounds)),
        "generate_seconds": generate_seconds,
        "grade_seconds": sum(g.seconds for g in rounds),
        "tokens_per_second": tokens / generate_seconds if generate_seconds else 0.0,
        **episode_metrics([s.episode for s in samples if s.episode is not None]),
    }


# ---------------------------------------------------------------- the step


Update = Callable[[list[Group]], Awaitable[dict[str, float]]]


class RLStepper:
    """Runs RL steps one after another, collecting up to `max_staleness` batches ahead.

    `update` trains on a list of groups and returns its metrics (the caller runs it in a
    worker thread). Steps are numbered globally (after any SFT warm-up steps).
    """

    def __init__(
        self,
        collector: Collector,
        scorer: Scorer,
        examples: Sequence[Example],
        params: ReinforcementParams,
        update: Update,
        last_step: int,
    ) -> None:
        self.collector = collector
        self.sampler = collector.sampler
        self.scorer = scorer
        self.examples = examples
        self.params = params
        self.update = update
        self.last_step = last_step
        self._ahead: collections.deque[tuple[int, dict[str, int], asyncio.Task[Rollouts]]] = collections.deque()

    def resume_cursor(self) -> dict[str, int]:
        """The cursor to checkpoint: before the first batch collected ahead and not trained
        on yet, so a resumed job collects it again."""
        return dict(self._ahead[0][1]) if self._ahead else self.collector.cursor.state_dict()

    def refill_cursor(self) -> dict[str, int]:
        return self.collector.refill_cursor.state_dict()

    async def _first_round(self, step: int) -> Rollouts:
        if self._ahead:
            ahead_step, _, task = self._ahead.popleft()
            assert ahead_step == step, (ahead_step, step)
            return await task
        return await self.collector.collect(step)

    async def run_step(self, step: int) -> dict[str, float]:
        """Global step `step` (1-based: the step the update completes)."""
        started = time.perf_counter()
        params = self.params
        rounds = [await grade_rollouts(self.scorer, self.examples, await self._first_round(step))]
        check_error_rate(rounds[-1], params.max_grader_error_fraction, step)
        while needs_refill(rounds, params):
            more = await self.collector.collect(step, round_=len(rounds))
            rounds.append(await grade_rollouts(self.scorer, self.examples, more))
            check_error_rate(rounds[-1], params.max_grader_error_fraction, step)
        groups, batch_metrics = build_batch(rounds, params)
        trained_version = self.sampler.version
        if params.max_staleness:
            # Sampled now, these batches are trained on at most max_staleness versions later.
            self._collect_ahead(step + 1, step + params.max_staleness)

        train_started = time.perf_counter()
        metrics = await self.update(groups)
        train_seconds = time.perf_counter() - train_started
        if self._ahead:
            await asyncio.wait([task for _, _, task in self._ahead])  # never swap weights under generation
        sync_started = time.perf_counter()
        await self.sampler.push_weights()
        sync_seconds = time.perf_counter() - sync_started

        metrics.update(batch_metrics)
        metrics.update(step_metrics(rounds, groups, trained_version))
        metrics["train_seconds"] = train_seconds
        metrics["weight_sync_seconds"] = sync_seconds
        metrics["step_seconds"] = time.perf_counter() - started
        return metrics

    def _collect_ahead(self, first: int, last: int) -> None:
        """Start collecting steps first..last (not past the job's last step) not started yet."""
        start = self._ahead[-1][0] + 1 if self._ahead else first
        for step in range(start, min(last, self.last_step) + 1):
            before = self.collector.cursor.state_dict()
            self._ahead.append((step, before, self.collector.start(step)))

    async def close(self) -> None:
        """Cancel generation collected ahead (a pause or a failure)."""
        for _, _, task in self._ahead:
            task.cancel()
        for _, _, task in self._ahead:
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - it is being thrown away
                pass
        self._ahead.clear()
