"""The learner's Prometheus metrics: job counts by status, and each step's metrics
mapped onto counters, gauges and histograms (names follow rft.learner.v1's metric list)."""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram
from rft.learner.v1 import fine_tuning_pb2

STEPS = Counter("rft_learner_steps_total", "Optimizer steps taken.", ["job_id"])
LAST_STEP = Gauge("rft_learner_last_step_timestamp_seconds", "Unix time of the last optimizer step.", ["job_id"])
JOBS = Gauge("rft_learner_jobs", "Jobs by status.", ["status"])
GRADER_ERRORS = Counter("rft_learner_grader_errors_total", "Samples whose grading failed.", ["job_id"])
PHASE_SECONDS = Histogram(
    "rft_learner_step_phase_seconds",
    "Seconds per RL step phase.",
    ["job_id", "phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WEIGHT_SYNC = Histogram(
    "rft_learner_weight_sync_seconds",
    "Seconds to push weights to every rollout replica.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
STEP_SECONDS = Histogram(
    "rft_learner_step_seconds",
    "Wall-clock seconds of a training step; for an RL step, from its start until its weights are live on every rollout"
    " replica.",
    ["job_id"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
GAUGES = {
    name: Gauge(f"rft_learner_{name}", help_text, ["job_id"])
    for name, help_text in (
        ("train_reward_mean", "Mean grader score of the last step's samples."),
        ("valid_reward_mean", "Mean grader score on the validation set at the last evaluation."),
        ("kl", "Mean per-token KL to the reference model at the last step."),
        ("entropy", "Mean per-token policy entropy at the last step."),
        ("clip_fraction", "Fraction of tokens whose ratio was clipped at the last step."),
        ("mismatch_kl", "KL between the rollout's and the trainer's token probabilities at the last step."),
        ("policy_version_lag", "Policy versions between sampling and training at the last step."),
        ("tokens_per_second", "Completion tokens generated per second at the last step."),
        ("episode_turns_mean", "Model turns per episode at the last step (tool-using jobs)."),
        ("tool_calls_mean", "Tool calls per episode at the last step."),
        ("tool_error_rate", "Share of tool calls that failed at the last step."),
        ("tool_seconds_mean", "Mean seconds of a tool call at the last step."),
        ("sampled_tokens_mean", "Tokens sampled per episode at the last step."),
        ("tool_tokens_mean", "Tool-result tokens inserted per episode at the last step."),
    )
}
PHASES = {
    "generate_seconds": "generate",
    "grade_seconds": "grade",
    "train_seconds": "train",
    "weight_sync_seconds": "sync",
    "eval_seconds": "eval",
}


def export_step(job_id: str, values: dict[str, float]) -> None:
    """Mirror one metrics point of a job (a training step or an evaluation) in Prometheus."""
    if "train_reward_mean" in values:
        STEPS.labels(job_id).inc()
        LAST_STEP.labels(job_id).set(time.time())
        GRADER_ERRORS.labels(job_id).inc(values.get("grader_errors", 0))
    for name, value in values.items():
        if name in GAUGES:
            GAUGES[name].labels(job_id).set(value)
        if name in PHASES:
            PHASE_SECONDS.labels(job_id, PHASES[name]).observe(value)
        if name == "weight_sync_seconds":
            WEIGHT_SYNC.observe(value)
        if name == "step_seconds":
            STEP_SECONDS.labels(job_id).observe(value)


def export_job_counts(counts: dict[int, int]) -> None:
    """rft_learner_jobs{status} for every status, 0 where no job has it."""
    for status in fine_tuning_pb2.JobStatus.values():
        if status:
            name = fine_tuning_pb2.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()
            JOBS.labels(name).set(counts.get(status, 0))
