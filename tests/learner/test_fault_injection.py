"""Fault injection: SIGKILL the learner, the grader and the rollout at seeded random points
while several short jobs run, restart each on its ports, and check that every job still
succeeds with each step trained exactly once (no step skipped, none recorded twice)."""

from __future__ import annotations

import random
import time

import grpc
import pytest
from jobs_client import HAS_SEVEN, jobs_stub, learner_args, metrics_points, reinforcement_request, upload, wait_for
from jobs_client import write_jsonl as write_rows
from rft.learner.v1 import fine_tuning_pb2 as ft
from service_process import ServiceProcess

SEED = 20261126
JOBS = 3
DONE = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}
HYPER = dict(n_epochs=2, batch_size=8, group_size=4, max_new_tokens=6, kl_coef=0.0, eval_interval=0, eval_samples=1)


def job_states(channel: grpc.Channel, job_ids: list[str]) -> list[ft.Job] | None:
    try:
        return [jobs_stub(channel).GetJob(ft.GetJobRequest(job_id=job_id), timeout=10).job for job_id in job_ids]
    except grpc.RpcError:
        return None  # the learner is restarting


def wait_for_progress(
    services: dict[str, ServiceProcess], job_ids: list[str], target: int, timeout: float = 900
) -> None:
    """Wait until the jobs have trained `target` steps in all; fail at once, with the services'
    logs, if a job ends early, and with the same logs on timeout (a hang needs them to be found)."""
    deadline = time.monotonic() + timeout
    jobs = None
    while time.monotonic() < deadline:
        with services["learner"].channel() as channel:
            jobs = job_states(channel, job_ids) or jobs
        if jobs is not None:
            ended = [job for job in jobs if job.status in DONE and job.status != ft.JOB_STATUS_SUCCEEDED]
            if ended:
                raise AssertionError(
                    f"a job ended early: {[(j.id, j.status, j.error) for j in ended]}\n{log_tails(services)}"
                )
            if sum(job.trained_steps for job in jobs) >= target:
                return
        time.sleep(0.2)
    progress = [(job.id, job.status, job.trained_steps) for job in jobs or []]
    raise TimeoutError(f"the jobs did not reach {target} trained steps in all: {progress}\n{log_tails(services)}")


def log_tails(services: dict[str, ServiceProcess], lines: int = 60) -> str:
    return "\n".join(
        f"--- {name} (last {lines} lines)\n" + "\n".join(service.logs().splitlines()[-lines:])
        for name, service in services.items()
    )


@pytest.mark.timeout(2400)  # four restarts, three of them of vLLM on a busy CPU
def test_seeded_kills_of_every_service_leave_every_job_succeeded(tiny_model, tmp_path) -> None:
    rng = random.Random(SEED)
    victims = ["learner", "grader", "rollout"]
    rng.shuffle(victims)
    victims.append(rng.choice(["learner", "grader"]))  # each service once, then one more
    gaps = [rng.randint(1, 4) for _ in victims]  # trained steps between kills
    print(f"fault plan (seed {SEED}): {list(zip(victims, gaps, strict=True))}")

    staging = tmp_path / "staging"  # its own: a killed update leaves nothing in the shared /dev/shm
    staging.mkdir()
    services = {
        "grader": ServiceProcess("rft-grader", ["--data-dir", str(tmp_path / "grader")]),
        "rollout": ServiceProcess(
            "rft-rollout", ["--model", str(tiny_model), "--staging-dir", str(staging)], ready_timeout=300
        ),
    }
    try:
        for service in services.values():
            service.__enter__()
        args = learner_args(tmp_path / "learner", services["rollout"], services["grader"], checkpoint_interval=2)
        services["learner"] = ServiceProcess("rft-learner", [*args, "--remote-patience-seconds", "600"]).__enter__()
        rows = [{"messages": [{"role": "user", "content": f"Write #{i}"}], "digit": "7"} for i in range(32)]
        train_path = write_rows(tmp_path / "train.jsonl", rows)
        with services["learner"].channel() as channel:
            train = upload(channel, train_path)
            job_ids = [
                jobs_stub(channel)
                .CreateJob(
                    reinforcement_request(str(tiny_model), train.id, "", HAS_SEVEN, seed=s, **HYPER), timeout=120
                )
                .job.id
                for s in range(JOBS)
            ]
        progress = 0
        for victim, gap in zip(victims, gaps, strict=True):
            progress += gap
            wait_for_progress(services, job_ids, progress)
            services[victim].kill()
            services[victim] = services[victim].restarted().__enter__()

        with services["learner"].channel() as channel:
            for job_id in job_ids:
                job = wait_for(channel, job_id, DONE, timeout=1200)
                assert job.status == ft.JOB_STATUS_SUCCEEDED, (job_id, job.error)
                assert job.trained_steps == job.total_steps == 8
                trained = [p.step for p in metrics_points(channel, job_id) if "train_reward_mean" in p.values]
                assert sorted(trained) == list(range(1, 9)), (job_id, trained)
    finally:
        for service in services.values():
            service.stop()
