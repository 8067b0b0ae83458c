"""The rollout server as operators see it: health, reflection, metrics, model info."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import metric_value, token_prompt, wait_for

SERVICE = "rft.rollout.v1.RolloutService"


def list_services(channel: grpc.Channel) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    return {s.name for r in responses for s in r.list_services_response.service}


def test_service_serves_health_reflection_and_metrics(rollout) -> None:
    health = health_pb2_grpc.HealthStub(rollout.channel)
    for name in ("", SERVICE):
        status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= list_services(
        rollout.channel
    )

    labels = {"service": SERVICE, "method": "GetModelInfo", "code": "OK"}
    before = metric_value(rollout.proc.metrics(), "rft_rpc_requests_total", **labels) or 0.0
    rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    # The interceptor records a call as its handler returns, which may be just after
    # the client has the response.
    assert wait_for(lambda: metric_value(rollout.proc.metrics(), "rft_rpc_requests_total", **labels) == before + 1)
    metrics = rollout.proc.metrics()
    assert metric_value(metrics, "rft_rpc_duration_seconds_count", **labels) == before + 1

    # An error is counted under its status code.
    bad = {"service": SERVICE, "method": "Generate", "code": "INVALID_ARGUMENT"}
    before_bad = metric_value(metrics, "rft_rpc_requests_total", **bad) or 0.0
    with pytest.raises(grpc.RpcError) as error:
        rollout.stub.Generate(rollout_pb2.GenerateRequest(), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert wait_for(lambda: metric_value(rollout.proc.metrics(), "rft_rpc_requests_total", **bad) == before_bad + 1)


def test_health_is_not_serving_until_the_engine_is_ready(rollout) -> None:
    """While vLLM loaded, health answered NOT_SERVING and RPCs were UNAVAILABLE."""
    assert rollout.startup.health_statuses[0] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert rollout.startup.generate_codes and set(rollout.startup.generate_codes) == {grpc.StatusCode.UNAVAILABLE}


def test_model_info_lists_every_state_dict_tensor_and_the_limits(rollout, models) -> None:
    info = rollout.stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(), timeout=10)
    assert info.architecture == "Qwen2ForCausalLM"
    assert info.dtype == "float32"
    assert info.engine.startswith("vllm ")
    assert info.vocab_size == 259
    assert info.max_model_len == 256  # --max-model-len of the shared server
    assert info.eos_token_id == 2
    tensors = {t.name: (tuple(t.shape), t.dtype, t.size_bytes) for t in info.tensors}
    # The tied output layer is listed: an update that leaves it out is refused.
    assert "lm_head.weight" in tensors
    assert set(tensors) == set(models.shapes)
    for name, shape in models.shapes.items():
        elements = 1
        for dim in shape:
            elements *= dim
        assert tensors[name] == (shape, rollout_pb2.TENSOR_DTYPE_FLOAT32, 4 * elements)
    # Tied weights are counted once.
    embedding = models.shapes["model.embed_tokens.weight"]
    total = sum(_count(shape) for shape in models.shapes.values())
    assert info.num_parameters == total - _count(embedding)
    assert (info.limits.max_prompts, info.limits.max_n, info.limits.max_tokens, info.limits.max_prompt_tokens) == (
        16,
        8,
        256,
        300,
    )


def _count(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def test_generation_metrics_count_tokens_and_requests(rollout) -> None:
    before = rollout.proc.metrics()
    response = rollout.stub.Generate(
        rollout_pb2.GenerateRequest(
            prompts=[token_prompt([5, 6, 7]), token_prompt([8, 9])],
            sampling=rollout_pb2.SamplingParams(n=2, max_tokens=5, temperature=1.0, seed=3),
        ),
        timeout=60,
    )
    after = rollout.proc.metrics()

    def delta(name: str, **labels: str) -> float:
        return (metric_value(after, name, **labels) or 0.0) - (metric_value(before, name, **labels) or 0.0)

    assert delta("rft_rollout_requests_total", rpc="Generate") == 1
    assert delta("rft_rollout_prompt_tokens_total") == 5 == response.prompt_tokens
    assert delta("rft_rollout_generated_tokens_total") == response.completion_tokens > 0
    assert delta("rft_rollout_generation_seconds_count") == 1
    assert delta("rft_rollout_time_to_first_token_seconds_count") == 2  # one per prompt (engine request)
    assert metric_value(after, "rft_rollout_queue_depth") == 0
    assert metric_value(after, "rft_rollout_policy_version") is not None
