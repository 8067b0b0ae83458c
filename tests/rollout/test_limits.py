"""Requests beyond a configured limit or the contract get INVALID_ARGUMENT naming the
limit or field, and nothing is generated."""

from __future__ import annotations

import grpc
import pytest
from rft.rollout.v1 import rollout_pb2
from rollout_helpers import metric_value, token_prompt

# The shared server runs with max_prompts=16, max_n=8, max_tokens=256,
# max_prompt_tokens=300 and max_model_len=256 (conftest.LIMITS), so that both the prompt
# limit and the context length can be hit.
SHORT = token_prompt([5, 6, 7])

CASES = {
    "too many prompts": ([SHORT] * 17, {}, "max_prompts=16"),
    "n above max_n": ([SHORT], {"n": 9}, "max_n=8"),
    "max_tokens above the limit": ([SHORT], {"max_tokens": 257}, "max_tokens=256"),
    "prompt above max_prompt_tokens": ([token_prompt([5] * 301)], {}, "max_prompt_tokens=300"),
    "text prompt above max_prompt_tokens": ([rollout_pb2.Prompt(text="x" * 301)], {}, "max_prompt_tokens=300"),
    "prompt filling the context": ([SHORT, token_prompt([5] * 256)], {}, "prompts[1]: 256 tokens leave no room"),
    "no prompts": ([], {}, "prompts: at least one prompt"),
    "prompt without input": ([rollout_pb2.Prompt()], {}, "prompts[0]: exactly one of chat, token_ids or text"),
    "empty token ids": ([token_prompt([])], {}, "prompts[0]: the prompt is empty"),
    "token id outside the vocabulary": ([SHORT, token_prompt([5, 259])], {}, "prompts[1].token_ids[1]: 259"),
    "negative token id": ([token_prompt([-1])], {}, "prompts[0].token_ids[0]: -1"),
    "chat without messages": ([rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt())], {}, "prompts[0].chat.messages"),
    "top_p above 1": ([SHORT], {"top_p": 1.5}, "sampling.top_p"),
    "top_p of 0": ([SHORT], {"top_p": 0.0}, "sampling.top_p"),
    "top_k of 0": ([SHORT], {"top_k": 0}, "sampling.top_k"),
    "negative temperature": ([SHORT], {"temperature": -0.5}, "sampling.temperature"),
    "negative n": ([SHORT], {"n": -1}, "sampling.n"),
    "empty stop string": ([SHORT], {"stop": [""]}, "sampling.stop"),
    "stop token outside the vocabulary": ([SHORT], {"stop_token_ids": [1000]}, "sampling.stop_token_ids[0]"),
}


def _call(rollout, rpc: str, prompts, sampling) -> None:
    params = rollout_pb2.SamplingParams(**sampling)
    if rpc == "Generate":
        rollout.stub.Generate(rollout_pb2.GenerateRequest(prompts=prompts, sampling=params), timeout=30)
    else:
        request = rollout_pb2.StreamGenerateRequest(prompts=prompts, sampling=params)
        list(rollout.stub.StreamGenerate(request, timeout=30))


@pytest.mark.parametrize("rpc", ["Generate", "StreamGenerate"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_request_is_refused_naming_the_limit(rollout, case: str, rpc: str) -> None:
    prompts, sampling, expected = CASES[case]
    before = rollout.proc.metrics()
    with pytest.raises(grpc.RpcError) as error:
        _call(rollout, rpc, prompts, sampling)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in error.value.details()
    after = rollout.proc.metrics()
    for name in ("rft_rollout_generated_tokens_total", "rft_rollout_prompt_tokens_total"):
        assert metric_value(after, name) == metric_value(before, name), name


def test_a_prompt_that_fits_generates_until_the_context_is_full(rollout) -> None:
    response = rollout.stub.Generate(
        rollout_pb2.GenerateRequest(
            prompts=[token_prompt([5] * 250)], sampling=rollout_pb2.SamplingParams(max_tokens=200, temperature=1.0)
        ),
        timeout=60,
    )
    sample = response.results[0].samples[0]
    assert len(sample.token_ids) <= 6
    if len(sample.token_ids) == 6:
        assert sample.finish_reason == rollout_pb2.FINISH_REASON_LENGTH
