"""A client that cancels its call aborts its engine requests."""

from __future__ import annotations

import grpc
import pytest
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import metric_value, token_prompt, wait_for

LONG = rollout_pb2.SamplingParams(n=4, max_tokens=250, temperature=1.0, seed=11)
PROMPTS = [token_prompt([5 + i, 6, 7]) for i in range(8)]


def queue_depth(rollout) -> float:
    return metric_value(rollout.proc.metrics(), "rft_rollout_queue_depth")


def engine_running_after_a_probe(rollout) -> float:
    """Run one short request, then read vLLM's own count of running requests, which
    the engine reported with that request's last step: anything the engine still
    runs besides the probe shows up there."""
    rollout.stub.Generate(
        rollout_pb2.GenerateRequest(
            prompts=[token_prompt([9, 9])], sampling=rollout_pb2.SamplingParams(max_tokens=2, temperature=1.0)
        ),
        timeout=60,
    )
    return metric_value(rollout.proc.metrics(), "vllm:num_requests_running")


@pytest.mark.parametrize("rpc", ["StreamGenerate", "Generate"])
def test_cancelled_call_aborts_its_engine_requests(rollout, rpc: str) -> None:
    if rpc == "StreamGenerate":
        call = rollout.stub.StreamGenerate(rollout_pb2.StreamGenerateRequest(prompts=PROMPTS, sampling=LONG))
    else:
        call = rollout.stub.Generate.future(rollout_pb2.GenerateRequest(prompts=PROMPTS, sampling=LONG))
    # 32 samples of up to 250 tokens are in the engine.
    assert wait_for(lambda: queue_depth(rollout) >= 16, timeout=60), queue_depth(rollout)
    call.cancel()
    if rpc == "StreamGenerate":
        with pytest.raises(grpc.RpcError) as error:
            list(call)
        assert error.value.code() == grpc.StatusCode.CANCELLED
    assert wait_for(lambda: queue_depth(rollout) == 0, timeout=60), queue_depth(rollout)
    assert engine_running_after_a_probe(rollout) <= 1
