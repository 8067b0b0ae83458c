"""The rollout's read-only RPCs fuzzed from their request descriptors (rpc_fuzz): any
request gets a result or a clean status, never UNKNOWN or leaked internals, and the
service keeps serving. UpdateWeights is left out: this shared service's weights are what
the other rollout tests compare against (its refusals are covered by test_update_weights)."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rpc_fuzz import check_answer, messages

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
