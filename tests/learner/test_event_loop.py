"""The learner keeps answering health checks while a job saves a large model: checkpoint
writes, loads and exports run in worker threads, never on the event loop (Kubernetes'
liveness probe would otherwise kill a learner that is only busy saving)."""

from __future__ import annotations

import threading
import time

from conftest import _build_model_module
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jobs_client import jobs_stub, supervised_request, upload, wait_for, write_jsonl
from rft.learner.v1 import fine_tuning_pb2 as ft
from service_process import ServiceProcess

DONE = {ft.JOB_STATUS_SUCCEEDED, ft.JOB_STATUS_FAILED, ft.JOB_STATUS_CANCELLED}


def test_health_checks_answer_within_a_second_while_checkpoints_of_a_large_model_are_saved(tmp_path) -> None:
    model = _build_model_module().build_model(tmp_path / "model-100m", preset="100m", seed=0)
    assert (model / "model.safetensors").stat().st_size > 300e6  # a few hundred MB per checkpoint
    rows = [{"messages": [{"role": "user", "content": f"Say 7 #{i}"}], "answer": "7"} for i in range(4)]
    args = ["--data-dir", str(tmp_path / "learner"), "--checkpoint-interval", "1", "--metrics-port", "0"]
    with ServiceProcess("rft-learner", args) as learner, learner.channel() as channel:
        train = upload(channel, write_jsonl(tmp_path / "sft.jsonl", rows))
        request = supervised_request(str(model), train.id, "answer", n_epochs=3, batch_size=2)
        latencies: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            health = health_pb2_grpc.HealthStub(channel)
            while not stop.is_set():
                started = time.perf_counter()
                response = health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                latencies.append(time.perf_counter() - started)
                assert response.status == health_pb2.HealthCheckResponse.SERVING
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            job_id = jobs_stub(channel).CreateJob(request, timeout=60).job.id
            job = wait_for(channel, job_id, DONE, timeout=600)
        finally:
            stop.set()
            poller.join(timeout=60)
        assert job.status == ft.JOB_STATUS_SUCCEEDED, job.error
        checkpoints = jobs_stub(channel).ListCheckpoints(ft.ListCheckpointsRequest(job_id=job_id), timeout=30)
        assert len(checkpoints.checkpoints) >= 5  # steps 1..5 saved (6 steps, the last one exports)
    assert len(latencies) > 20
    assert max(latencies) < 1.0, f"slowest health check {max(latencies):.2f}s; sorted: {sorted(latencies)[-5:]}"
