"""One RL update step per algorithm on a real (tiny) model: rewarded completions become
more likely, unrewarded ones less, and the step's diagnostics are reported."""

from __future__ import annotations

import pytest
import torch
from rft_learner.hparams import ReinforcementParams
from rft_learner.trainer.policy import ValueHead, build_sequence_batch, forward, load_model, load_tokenizer
from rft_learner.trainer.updates import Group, group_relative_advantages, rl_update, sft_update

GOOD, BAD = [40, 41, 42], [50, 51, 52]


def completion_logprob(model, prompt: list[int], completion: list[int]) -> float:
    with torch.no_grad():
        out = forward(model, build_sequence_batch([prompt], [completion], None, 0), with_entropy=False)
    mask = build_sequence_batch([prompt], [completion], None, 0).action_mask
    return float((out.logprobs * mask).sum())


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "rloo", "ppo", "dapo", "gspo", "cispo"])
def test_each_algorithm_moves_probability_towards_rewarded_samples(tiny_model, algorithm: str) -> None:
    torch.manual_seed(0)
    model, reference = load_model(tiny_model), load_model(tiny_model)
    reference.requires_grad_(False)
    tokenizer = load_tokenizer(tiny_model)
    prompt = [1, 60, 61, 62, 2, 1, 70]
    params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=0.01)
    value_head = ValueHead(model.config.hidden_size) if algorithm == "ppo" else None
    trainable = list(model.parameters()) + (list(value_head.parameters()) if value_head else [])
    optimizer = torch.optim.AdamW(trainable, lr=3e-3)
    good_before = completion_logprob(model, prompt, GOOD)
    bad_before = completion_logprob(model, prompt, BAD)

    for _ in range(5):
        # Sampling-policy logprobs: the current model's (on-policy), as the rollout would return.
        old = [completion_logprob(model, prompt, c) / len(c) for c in (GOOD, BAD, GOOD, BAD)]
        group = Group(prompt, [GOOD, BAD, GOOD, BAD], [[o] * 3 for o in old], [1.0, 0.0, 1.0, None])
        metrics = rl_update(model, reference, optimizer, [group], params, tokenizer.pad_token_id, value_head)

    assert completion_logprob(model, prompt, GOOD) > good_before + 0.5
    assert completion_logprob(model, prompt, BAD) < bad_before
    assert metrics["train_samples"] == 3.0  # the ungraded sample was left out
    for name in ("loss", "kl", "entropy", "clip_fraction", "approx_kl", "grad_norm"):
        assert name in metrics, name
    if algorithm == "ppo":
        assert "value_loss" in metrics and "explained_variance" in metrics


def test_advantages_ignore_ungraded_samples_within_a_group() -> None:
    group = Group([1], [[5], [6], [7], [8]], [[0.0]] * 4, [1.0, None, 0.0, 1.0])
    grpo = group_relative_advantages([group], "group_std")
    assert grpo[1] is None
    # mean 2/3, population std sqrt(2)/3: (1 - 2/3) / (sqrt(2)/3) = 1/sqrt(2)
    assert grpo[0] == pytest.approx(2**-0.5, rel=1e-5) and grpo[2] == pytest.approx(-(2**0.5), rel=1e-5)
    rloo = group_relative_advantages([group], "leave_one_out")
    assert rloo == [pytest.approx(0.5), None, pytest.approx(-1.0), pytest.approx(0.5)]


def test_sft_step_lowers_the_loss_on_its_targets(tiny_model) -> None:
    torch.manual_seed(0)
    model = load_model(tiny_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    prompts, targets = [[1, 60, 61, 2]] * 2, [[40, 41, 2], [40, 42, 2]]
    first = sft_update(model, optimizer, prompts, targets, 0)["sft_loss"]
    for _ in range(10):
        last = sft_update(model, optimizer, prompts, targets, 0)["sft_loss"]
    assert last < first - 1.0
