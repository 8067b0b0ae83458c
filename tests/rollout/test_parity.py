"""Parity guards for the learner's importance ratios.

After a weight update the service must behave exactly like a fresh engine loaded from
the same weights (this catches, among others, a tied lm_head.weight left out of the
reload), and the logprobs it returns must be those of a transformers forward pass
over the same tokens in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
from rft.common.v1 import common_pb2
from rft.rollout.v1 import rollout_pb2
from rft_common.weights import weight_update_requests
from rollout_helpers import current_version, token_prompt

# Largest |vLLM logprob - transformers log-softmax| accepted for a sampled token, in
# nats. Both compute in float32 with different kernels; the observed difference on the
# tiny model is up to ~3e-5.
LOGPROB_BOUND = 1e-4

PROMPTS = [
    token_prompt([5, 6, 7]),
    token_prompt([40, 41, 42, 43, 44, 45]),
    rollout_pb2.Prompt(text="The quick brown fox"),
    rollout_pb2.Prompt(
        chat=rollout_pb2.ChatPrompt(messages=[common_pb2.ChatMessage(role="user", content="What is 6 times 7?")])
    ),
]


def generate(service, **sampling) -> rollout_pb2.GenerateResponse:
    return service.Generate(
        rollout_pb2.GenerateRequest(prompts=PROMPTS, sampling=rollout_pb2.SamplingParams(**sampling)), timeout=120
    )


@pytest.fixture(scope="module")
def updated_to_b(rollout, models):
    """The shared service, updated over the stream transport to weight set "B"."""
    version = current_version(rollout.stub) + 1
    weights = models.weight_sets["B"]
    rollout.stub.UpdateWeights(weight_update_requests(version, weights.items()), timeout=120)
    return rollout


def test_after_an_update_generation_equals_a_fresh_engine_on_the_same_weights(updated_to_b, reference) -> None:
    for sampling in (dict(temperature=0.0, max_tokens=64), dict(n=3, temperature=1.0, seed=21, max_tokens=32)):
        updated = generate(updated_to_b.stub, **sampling)
        fresh = generate(reference, **sampling)
        for ours, theirs in zip(updated.results, fresh.results, strict=True):
            assert list(ours.prompt_token_ids) == list(theirs.prompt_token_ids)
            for a, b in zip(ours.samples, theirs.samples, strict=True):
                assert list(a.token_ids) == list(b.token_ids)
                np.testing.assert_allclose(a.logprobs, b.logprobs, rtol=0, atol=1e-6)
            assert ours.samples[0].policy_version > 0 and theirs.samples[0].policy_version == 0


@pytest.fixture(scope="module")
def transformers_model(models):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(models.reference_dir, dtype=torch.float32)
    return model.eval()


def transformers_logprobs(model, prompt_ids: list[int], completion_ids: list[int]) -> np.ndarray:
    """log-softmax of the raw logits at each completion position, for the token taken."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(completion_ids) - 1)
    return logprobs[positions, torch.tensor(completion_ids)].numpy()


@pytest.mark.parametrize(
    "sampling",
    [
        dict(temperature=0.0, max_tokens=64),
        # Logprobs are raw (before temperature, top-p, top-k): the same numbers as an
        # untempered forward pass, whatever the sampling settings.
        dict(n=2, temperature=0.7, top_p=0.9, top_k=50, seed=5, max_tokens=64),
    ],
    ids=["greedy", "tempered"],
)
def test_logprobs_match_a_transformers_forward_pass(updated_to_b, transformers_model, sampling) -> None:
    response = generate(updated_to_b.stub, **sampling)
    worst = 0.0
    for result in response.results:
        for sample in result.samples:
            assert len(sample.token_ids) > 0
            expected = transformers_logprobs(transformers_model, list(result.prompt_token_ids), list(sample.token_ids))
            worst = max(worst, float(np.max(np.abs(np.asarray(sample.logprobs) - expected))))
    assert worst <= LOGPROB_BOUND, worst
