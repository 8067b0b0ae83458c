"""Every service's real server: health, reflection, per-RPC metrics, graceful drain."""

from __future__ import annotations

import queue
import re
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.learner.v1 import files_pb2, files_pb2_grpc
from service_process import ServiceProcess

GOOD_LINE = b'{"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}\n'


def list_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for r in responses for s in r.list_services_response.service}


def metric_value(metrics: str, name: str, **labels: str) -> float | None:
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def eventually(read, timeout: float = 10.0):
    """The first non-None value `read()` returns within `timeout` seconds (else None)."""
    deadline = time.monotonic() + timeout
    while (value := read()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


def call_grader(channel: grpc.Channel) -> None:
    grader_pb2_grpc.GraderServiceStub(channel).ListGraderTypes(grader_pb2.ListGraderTypesRequest(), timeout=10)


def call_learner(channel: grpc.Channel) -> None:
    files_pb2_grpc.FilesServiceStub(channel).ListFiles(files_pb2.ListFilesRequest(), timeout=10)


SERVICES = {
    "rft-grader": ("rft.grader.v1.GraderService", "ListGraderTypes", call_grader),
    "rft-learner": ("rft.learner.v1.FilesService", "ListFiles", call_learner),
}


@pytest.mark.parametrize("command", sorted(SERVICES))
def test_service_serves_health_reflection_and_metrics(command: str, tmp_path) -> None:
    service, method, call = SERVICES[command]
    with ServiceProcess(command, ["--data-dir", str(tmp_path)]) as proc, proc.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING

        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= list_services(channel)

        call(channel)
        # The interceptor records a call when its handler returns, which may be just after
        # the client has the response: wait (bounded) for the count to appear.
        labels = {"service": service, "method": method, "code": "OK"}
        assert eventually(lambda: metric_value(proc.metrics(), "rft_rpc_requests_total", **labels)) == 1.0
        assert metric_value(proc.metrics(), "rft_rpc_duration_seconds_count", **labels) == 1.0

        # An error is counted under its status code.
        with pytest.raises(grpc.RpcError) as error:
            files_pb2_grpc.FilesServiceStub(channel).GetFile(files_pb2.GetFileRequest(file_id="nope"), timeout=5)
        expected = "NOT_FOUND" if command == "rft-learner" else "UNIMPLEMENTED"
        assert error.value.code().name == expected
        if command == "rft-learner":
            not_found = {"method": "GetFile", "code": "NOT_FOUND"}
            assert eventually(lambda: metric_value(proc.metrics(), "rft_rpc_requests_total", **not_found)) == 1.0


def test_sigterm_lets_an_in_flight_call_finish(tmp_path) -> None:
    """SIGTERM mid-upload: new calls are refused, the open stream completes, exit 0."""
    with ServiceProcess("rft-learner", ["--data-dir", str(tmp_path)]) as proc, proc.channel() as channel:
        stub = files_pb2_grpc.FilesServiceStub(channel)
        outgoing: queue.Queue = queue.Queue()

        def requests():
            while (item := outgoing.get()) is not None:
                yield item

        result: dict[str, object] = {}

        def upload() -> None:
            try:
                result["response"] = stub.UploadFile(requests(), timeout=60)
            except grpc.RpcError as exc:
                result["error"] = exc

        thread = threading.Thread(target=upload)
        thread.start()
        outgoing.put(files_pb2.UploadFileRequest(header=files_pb2.UploadFileHeader(filename="a.jsonl", purpose=1)))
        outgoing.put(files_pb2.UploadFileRequest(chunk=GOOD_LINE))

        # Terminate only once the server handles the call (a slow connect would otherwise
        # let it drain with nothing in flight).
        def upload_in_flight() -> float | None:
            return metric_value(proc.metrics(), "rft_rpc_in_flight", method="UploadFile") or None

        assert eventually(upload_in_flight, timeout=30) == 1.0

        proc.terminate()
        # New calls are refused once the server drains (health first turns NOT_SERVING).
        deadline = time.monotonic() + 10
        refused = False
        while time.monotonic() < deadline and not refused:
            try:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
                refused = status == health_pb2.HealthCheckResponse.NOT_SERVING
            except grpc.RpcError:
                refused = True
            time.sleep(0.05)
        assert refused, "server kept reporting SERVING after SIGTERM"
        assert proc.proc.poll() is None, "server exited while a call was in flight"

        outgoing.put(files_pb2.UploadFileRequest(chunk=GOOD_LINE))
        outgoing.put(None)
        thread.join(timeout=30)
        assert "error" not in result, result.get("error")
        assert result["response"].file.line_count == 2
        assert proc.wait(timeout=30) == 0
