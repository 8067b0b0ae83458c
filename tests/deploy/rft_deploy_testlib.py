"""Helpers of the deploy tests: where things are, the real tools, rendering overlays,
and small queries over rendered Kubernetes objects."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = pathlib.Path(sys.executable).parent
OVERLAYS = ["cpu-dev", "gpu"]
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}

# The metric names the services export (the contract the dashboard and alerts use).
KNOWN_METRICS = {
    "rft_rpc_requests_total",
    "rft_rpc_duration_seconds",
    "rft_rpc_in_flight",
    "rft_service_serving",
    "rft_rollout_generated_tokens_total",
    "rft_rollout_prompt_tokens_total",
    "rft_rollout_queue_depth",
    "rft_rollout_time_to_first_token_seconds",
    "rft_rollout_generation_seconds",
    "rft_rollout_policy_version",
    "rft_rollout_weight_update_seconds",
    "rft_rollout_weight_update_bytes_total",
    "rft_rollout_weight_update_failures_total",
    "rft_grader_grades_total",
    "rft_grader_grade_seconds",
    "rft_grader_batch_size",
    "rft_grader_sandbox_kills_total",
    "rft_grader_sandbox_workers",
    "rft_learner_steps_total",
    "rft_learner_last_step_timestamp_seconds",
    "rft_learner_train_reward_mean",
    "rft_learner_valid_reward_mean",
    "rft_learner_kl",
    "rft_learner_entropy",
    "rft_learner_clip_fraction",
    "rft_learner_step_phase_seconds",
    "rft_learner_weight_sync_seconds",
    "rft_learner_step_seconds",
    "rft_learner_policy_version_lag",
    "rft_learner_tokens_per_second",
    "rft_learner_grader_errors_total",
    "rft_learner_jobs",
}
HISTOGRAMS = {name for name in KNOWN_METRICS if name.endswith("_seconds") and "timestamp" not in name} | {
    "rft_grader_batch_size"
}


def tool(name: str) -> str:
    """Path of a real tool: the venv's bin (wheels) first, then PATH (Debian packages)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed: `make install` installs it (deploy/apt-packages.txt, requirements/deploy.txt)"
        )
    return found


def render(kustomization_dir: pathlib.Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR`, parsed into a list of objects."""
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(kustomization_dir)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize failed for {kustomization_dir}:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = find(objects, kind, name)
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"].get("labels", {})


def workloads(objects: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (o for o in objects if o["kind"] in WORKLOAD_KINDS)


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())
