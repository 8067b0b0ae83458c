"""The rollout's RPCs fuzzed from their request descriptors (rpc_fuzz): any request gets a
result or a clean status, never UNKNOWN or leaked internals, and the service keeps
serving. The read-only ones run against the shared rollout; UpdateWeights against a
rollout of its own, since the shared one's weights are what other tests compare against."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rpc_fuzz import check_answer, messages
from service_process import ServiceProcess

EXAMPLES = settings(
    max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)


@pytest.mark.parametrize("name", ["Generate", "StreamGenerate", "GetModelInfo"])
def test_rollout_rpcs_answer_any_request_cleanly(rollout, name) -> None:
    method = rollout_pb2.DESCRIPTOR.services_by_name["RolloutService"].methods_by_name[name]
    request_cls = getattr(rollout_pb2, method.input_type.name)
    call = getattr(rollout_pb2_grpc.RolloutServiceStub(rollout.channel), name)

    @EXAMPLES
    @given(messages(request_cls.DESCRIPTOR, request_cls))
    def fuzz(request) -> None:
        check_answer(call, request, timeout=60)

    fuzz()
    health = health_pb2_grpc.HealthStub(rollout.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_update_weights_streams_answer_any_sequence_cleanly(models, tmp_path) -> None:
    """UpdateWeights fuzzed on a rollout of its own (a stream the fuzzer makes valid would
    change the shared one's weights): headers and chunks in any order and content."""
    request_cls = rollout_pb2.UpdateWeightsRequest
    args = ["--model", str(models.served_dir), "--weights-dir", str(tmp_path), "--warmup-requests", "0"]
    with ServiceProcess("rft-rollout", args, ready_timeout=300) as own, own.channel() as channel:
        update = rollout_pb2_grpc.RolloutServiceStub(channel).UpdateWeights

        @EXAMPLES
        @given(st.lists(messages(request_cls.DESCRIPTOR, request_cls), max_size=5))
        def fuzz(stream) -> None:
            check_answer(lambda requests, **kw: update(iter(requests), **kw), stream, timeout=60)

        fuzz()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
