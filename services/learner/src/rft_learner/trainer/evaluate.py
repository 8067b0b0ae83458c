"""Validation: sample, grade, and summarise as reward, pass@1 / pass@k and top@k."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rft.rollout.v1 import rollout_pb2

from rft_learner.remote import GraderClient, RolloutPool, grader_sample
from rft_learner.rl import mean_pass_at_k
from rft_learner.trainer.data import Example
from rft_learner.trainer.rl_step import episode_metrics


def is_pass(result) -> bool:
    """A sample passes when the grader says so (its pass_threshold), whatever the score's
    range: 7 of a score_model's [0, 10] can pass, 1.0 of a [0, 100] one does not."""
    return not result.HasField("error") and bool(result.passed)


async def evaluate(
    examples: Sequence[Example],
    pool: RolloutPool,
    grader: GraderClient,
    samples_per_prompt: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    episode: rollout_pb2.EpisodeParams | None = None,
) -> dict[str, float]:
    """Metrics over `examples`: sampled (k = samples_per_prompt) and greedy; with
    `episode`, every sample is a tool-using episode, graded with its tool calls."""
    prompts = [e.messages for e in examples]
    episodic = {"episode": episode} if episode is not None else {}
    sampled = await pool.generate(
        prompts,
        rollout_pb2.SamplingParams(n=samples_per_prompt, temperature=temperature, max_tokens=max_tokens),
        seeds=[seed * 1_000_003 + i for i in range(len(prompts))],
        **episodic,
    )
    greedy = await pool.generate(
        prompts, rollout_pb2.SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens), **episodic
    )
    pairs = [(grader_sample(s), e.item) for e, p in zip(examples, sampled, strict=True) for s in p.samples]
    pairs += [(grader_sample(p.samples[0]), e.item) for e, p in zip(examples, greedy, strict=True)]
    results = await grader.grade(pairs)
    sampled_results = results[: len(examples) * samples_per_prompt]
    greedy_results = results[len(examples) * samples_per_prompt :]

    ok = [r for r in sampled_results if not r.HasField("error")]
    greedy_ok = [r for r in greedy_results if not r.HasField("error")]
    metrics: dict[str, float] = {
        "valid_reward_mean": _mean(r.score for r in ok),
        "valid_greedy_reward_mean": _mean(r.score for r in greedy_ok),
        "valid_grader_errors": float(len(results) - len(ok) - len(greedy_ok)),
        "valid_prompts": float(len(examples)),
        "valid_response_length_mean": _mean(len(s.token_ids) for p in sampled for s in p.samples),
    }
    episodes = episode_metrics([s.episode for p in sampled for s in p.samples if s.episode is not None])
    for name in ("episode_turns_mean", "tool_calls_mean", "tool_error_rate"):
        if name in episodes:
            metrics[f"valid_{name}"] = episodes[name]
    correct = []
    for index in range(len(examples)):
        group = sampled_results[index * samples_per_prompt : (index + 1) * samples_per_prompt]
        correct.append(sum(1 for r in group if is_pass(r)))
    metrics["pass@1"] = mean_pass_at_k(correct, samples_per_prompt, 1)
    metrics[f"pass@{samples_per_prompt}"] = mean_pass_at_k(correct, samples_per_prompt, samples_per_prompt)
    metrics["greedy_pass@1"] = _mean(1.0 if is_pass(r) else 0.0 for r in greedy_ok)
    # Ranked-list graders report top@k per sample: average the greedy answers' values.
    names = sorted({name for r in greedy_ok for name in r.metrics})
    for name in names:
        metrics[name] = _mean(r.metrics[name] for r in greedy_ok if name in r.metrics)
    return metrics


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan
