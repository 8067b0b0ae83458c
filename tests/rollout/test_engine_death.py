"""When the vLLM engine dies, the replica says so: health turns NOT_SERVING (so an
orchestrator replaces it) and RPCs fail with UNAVAILABLE instead of hanging."""

from __future__ import annotations

import signal

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import stub, token_prompt, wait_for
from service_process import ServiceProcess


def test_a_dead_engine_turns_health_not_serving(models) -> None:
    args = ["--model", str(models.served_dir), "--warmup-requests", "0"]
    with ServiceProcess("rft-rollout", args, ready_timeout=240) as proc, proc.channel() as channel:
        service = stub(channel)
        request = rollout_pb2.GenerateRequest(prompts=[token_prompt([5, 6])])
        assert service.Generate(request, timeout=60).results[0].samples

        # The engine core is a child process of the server; kill it as the OOM killer would.
        children = psutil.Process(proc.proc.pid).children(recursive=True)
        engine_cores = [child for child in children if "EngineCore" in " ".join(child.cmdline() + [child.name()])]
        assert engine_cores, [child.cmdline() for child in children]
        for child in engine_cores:
            child.send_signal(signal.SIGKILL)

        health = health_pb2_grpc.HealthStub(channel)

        def not_serving() -> bool:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            except grpc.RpcError:  # a slow answer while the service handles the death: ask again
                return False
            return status == health_pb2.HealthCheckResponse.NOT_SERVING

        assert wait_for(not_serving, timeout=60)
        with pytest.raises(grpc.RpcError) as error:
            service.Generate(request, timeout=60)
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
