"""Small synchronous helpers to drive the learner's API from tests."""

from __future__ import annotations

import json
import pathlib
import time

import grpc
from google.protobuf import struct_pb2
from rft.learner.v1 import files_pb2, files_pb2_grpc, fine_tuning_pb2_grpc
from rft.learner.v1 import fine_tuning_pb2 as ft

ENDED = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}


# The grader of the e2e jobs: a random-initialised character model emits a "7" now and
# then; this rewards it, and RL must make it more frequent.
HAS_SEVEN = {
    "type": "string_check",
    "name": "has_seven",
    "input": "{{sample.output_text}}",
    "reference": "{{item.digit}}",
    "operation": "like",
}


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def upload(channel: grpc.Channel, path: pathlib.Path) -> files_pb2.File:
    stub = files_pb2_grpc.FilesServiceStub(channel)
    data = path.read_bytes()

    def requests():
        yield files_pb2.UploadFileRequest(header=files_pb2.UploadFileHeader(filename=path.name, purpose=1))
        for i in range(0, len(data), 4096):
            yield files_pb2.UploadFileRequest(chunk=data[i : i + 4096])

    return stub.UploadFile(requests(), timeout=60).file


def struct(value: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def reinforcement_request(
    model: str, train_id: str, valid_id: str, spec: dict, seed: int = 7, **hyper
) -> ft.CreateJobRequest:
    return ft.CreateJobRequest(
        model=model,
        training_file=train_id,
        validation_file=valid_id,
        seed=seed,
        method=ft.Method(
            reinforcement=ft.ReinforcementMethod(
                grader=ft.GraderConfig(spec=struct(spec)),
                hyperparameters=ft.ReinforcementHyperparameters(**hyper),
            )
        ),
    )


def supervised_request(model: str, train_id: str, answer_field: str, **hyper) -> ft.CreateJobRequest:
    return ft.CreateJobRequest(
        model=model,
        training_file=train_id,
        method=ft.Method(
            supervised=ft.SupervisedMethod(
                answer_field=answer_field, hyperparameters=ft.SupervisedHyperparameters(**hyper)
            )
        ),
    )


def jobs_stub(channel: grpc.Channel) -> fine_tuning_pb2_grpc.FineTuningServiceStub:
    return fine_tuning_pb2_grpc.FineTuningServiceStub(channel)


def wait_for(channel: grpc.Channel, job_id: str, statuses: set[int], timeout: float = 600) -> ft.Job:
    stub = jobs_stub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = stub.GetJob(ft.GetJobRequest(job_id=job_id), timeout=10).job
        except grpc.RpcError:
            time.sleep(0.5)
            continue
        if job.status in statuses:
            return job
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} did not reach {statuses}; last status {job.status}: {job.error}")


def wait_for_steps(channel: grpc.Channel, job_id: str, steps: int, timeout: float = 600) -> None:
    """Wait until a running job has trained `steps` steps (fails if it ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = jobs_stub(channel).GetJob(ft.GetJobRequest(job_id=job_id), timeout=10).job
        assert job.status not in ENDED, job.error
        if job.trained_steps >= steps:
            return
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} did not reach step {steps}")


def metrics_points(channel: grpc.Channel, job_id: str) -> list[ft.MetricsPoint]:
    """Every metrics point of a job, as WatchJob replays them."""
    updates = jobs_stub(channel).WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=60)
    return [update.metrics for update in updates if update.HasField("metrics")]


def metrics_by_step(channel: grpc.Channel, job_id: str) -> dict[int, dict[str, float]]:
    """Every metrics point of a job (replayed through WatchJob), merged per step."""
    out: dict[int, dict[str, float]] = {}
    for point in metrics_points(channel, job_id):
        out.setdefault(point.step, {}).update(point.values)
    return out


def job_events(channel: grpc.Channel, job_id: str) -> list[str]:
    updates = jobs_stub(channel).WatchJob(ft.WatchJobRequest(job_id=job_id, replay=True), timeout=30)
    return [update.event.message for update in updates if update.HasField("event")]


def learner_args(data_dir: pathlib.Path, rollout=None, grader=None, checkpoint_interval: int = 2) -> list[str]:
    args = ["--data-dir", str(data_dir), "--checkpoint-interval", str(checkpoint_interval), "--torch-threads", "1"]
    if rollout is not None:
        args += ["--rollout-addresses", rollout.address]
    if grader is not None:
        args += ["--grader-address", grader.address]
    return args
