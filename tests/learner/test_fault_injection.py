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


def trained_steps(channel: grpc.Channel, job_ids: list[str]) -> int:
    total = 0
    for job_id in job_ids:
        try:
            total += jobs_stub(channel).GetJob(ft.GetJobRequest(job_id=job_id), timeout=10).job.trained_steps
        except grpc.RpcError:
            return -1  # the learner is restarting
    return total


def wait_for_progress(learner: ServiceProcess, job_ids: list[str], target: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with learner.channel() as channel:
            if trained_steps(channel, job_ids) >= target:
                return
        time.sleep(0.2)
    raise TimeoutError(f"the jobs did not reach {target} trained steps in all")


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
            wait_for_progress(services["learner"], job_ids, progress)
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
