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


def test_ppo_epochs_and_minibatches_clip_against_the_policy_before_the_update(tiny_model) -> None:
    """Several passes over a batch move the policy away from the one that sampled it, so the
    policy and value clips fire; with one pass the ratio is exactly 1 and nothing clips."""
    prompt = [1, 60, 61, 62, 2, 1, 70]
    completions = [GOOD, BAD, GOOD, BAD, [43, 44], [53], GOOD, BAD]

    def run(**overrides) -> dict[str, float]:
        torch.manual_seed(0)
        model = load_model(tiny_model)
        value_head = ValueHead(model.config.hidden_size)
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(value_head.parameters()), lr=1e-2)
        old = [[completion_logprob(model, prompt, c) / len(c)] * len(c) for c in completions]
        group = Group(prompt, completions, old, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.0])
        params = ReinforcementParams(algorithm="ppo", group_size=8, batch_size=2, kl_coef=0.0, **overrides)
        return rl_update(model, None, optimizer, [group], params, 0, value_head)

    single = run()
    assert single["optimizer_steps"] == 1 and single["clip_fraction"] == 0.0 and single["ratio_max"] == 1.0
    assert single["value_clip_fraction"] == 0.0
    several = run(ppo_epochs=4, num_minibatches=2, value_clip_range=0.01)
    assert several["optimizer_steps"] == 8
    assert several["clip_fraction"] > 0 and several["value_clip_fraction"] > 0 and several["ratio_max"] > 1.2


def test_the_configured_kl_estimator_reaches_ppo_rewards_and_the_kl_metric(tiny_model) -> None:
    torch.manual_seed(0)
    prompt, completions = [1, 60, 61, 62, 2, 1, 70], [GOOD, BAD]
    reference = load_model(tiny_model).requires_grad_(False)
    with torch.no_grad():  # a reference that differs from the policy, so the estimators differ
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    kls = {}
    for estimator in ("k1", "k3"):
        model = load_model(tiny_model)
        value_head = ValueHead(model.config.hidden_size)
        optimizer = torch.optim.AdamW(list(model.parameters()) + list(value_head.parameters()), lr=1e-3)
        group = Group(prompt, completions, [[-1.0] * 3] * 2, [1.0, 0.0])
        params = ReinforcementParams(algorithm="ppo", group_size=2, kl_coef=0.1, kl_estimator=estimator)
        kls[estimator] = rl_update(model, reference, optimizer, [group], params, 0, value_head)["kl"]
    assert kls["k3"] > 0 and kls["k1"] != pytest.approx(kls["k3"], rel=1e-3)


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_one_pass_reuses_the_training_forward_and_matches_a_separate_old_pass(
    tiny_model, monkeypatch, algorithm
) -> None:
    """The shortcut (old log-probs = the training forward, detached) must give the same
    update as recording them in a pass of their own."""
    from rft_learner.trainer import updates

    prompt = [1, 60, 61, 62, 2, 1, 70]
    completions = [GOOD, BAD, [43, 44], [53]]

    def update() -> tuple[dict[str, float], list[torch.Tensor]]:
        torch.manual_seed(0)
        model = load_model(tiny_model)
        value_head = ValueHead(model.config.hidden_size) if algorithm == "ppo" else None
        trainable = list(model.parameters()) + (list(value_head.parameters()) if value_head else [])
        optimizer = torch.optim.AdamW(trainable, lr=1e-2)
        rollout = [[-1.0 - 0.1 * i] * len(c) for i, c in enumerate(completions)]  # off the trainer's: w != 1
        group = Group(prompt, completions, rollout, [1.0, 0.0, 1.0, 0.0])
        params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=0.0)
        metrics = rl_update(model, None, optimizer, [group], params, 0, value_head)
        return metrics, [p.detach().clone() for p in model.parameters()]

    shortcut, shortcut_weights = update()
    monkeypatch.setattr(updates, "reuses_training_forward", lambda params: False)
    separate, separate_weights = update()
    for name in ("loss", "policy_loss", "is_weight_mean", "mismatch_kl", "clip_fraction", "grad_norm"):
        assert shortcut[name] == pytest.approx(separate[name], rel=1e-5, abs=1e-7), name
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(shortcut_weights, separate_weights, strict=True))
