"""One RL update step per algorithm on a real (tiny) model: rewarded completions become
more likely, unrewarded ones less, and the step's diagnostics are reported."""

from __future__ import annotations

import pytest
import torch
from rft_learner.hparams import ALGORITHM_DEFAULTS, ReinforcementParams
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
        # SGD: the one-pass step runs the shared-prompt forward (another summation order), and
        # AdamW's first step, g / |g|, would turn float noise in near-zero gradients into +-lr.
        optimizer = torch.optim.SGD(trainable, lr=1e-2)
        rollout = [[-1.0 - 0.1 * i] * len(c) for i, c in enumerate(completions)]  # off the trainer's: w != 1
        group = Group(prompt, completions, rollout, [1.0, 0.0, 1.0, 0.0])
        params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=0.0)
        metrics = rl_update(model, None, optimizer, [group], params, 0, value_head)
        return metrics, [p.detach().clone() for p in model.parameters()]

    shortcut, shortcut_weights = update()
    monkeypatch.setattr(updates, "reuses_training_forward", lambda *args: False)
    separate, separate_weights = update()
    for name in ("loss", "policy_loss", "is_weight_mean", "mismatch_kl", "clip_fraction", "grad_norm"):
        assert shortcut[name] == pytest.approx(separate[name], rel=1e-5, abs=1e-7), name
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(shortcut_weights, separate_weights, strict=True))


# ---------------------------------------------------------------- micro-batches

MICRO_PROMPTS = ([1, 60, 61, 62, 2, 1, 70], [1, 63, 2])
MICRO_COMPLETIONS = ([[40, 41, 42], [50], [43, 44, 45, 46, 47], [51, 52]], [[40, 41, 42, 43], [53, 54], [44] * 6, [55]])
MICRO_REWARDS = ([1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 0.0, 0.0])
# Whole-batch sequence lengths 10, 8, 12, 9 | 7, 5, 9, 4: a budget of 20 tokens (rows x longest)
# gives 5 micro-batches of 1-2 sequences, of different widths.
MICRO_BUDGET = 20
TOLERANCE = {"rtol": 0.0, "atol": 1e-5}
"""fp32 throughout: the two runs differ only in summation order and matmul shapes."""


def micro_groups() -> list[Group]:
    # Sampler log-probs near the trainer's (about -ln(vocabulary) = -6.4) but not equal, so the
    # rollout-correction weights differ from 1 (some capped) without vanishing.
    return [
        Group(prompt, completions, [[-6.0 - 0.3 * i] * len(c) for i, c in enumerate(completions)], rewards)
        for prompt, completions, rewards in zip(MICRO_PROMPTS, MICRO_COMPLETIONS, MICRO_REWARDS, strict=True)
    ]


@pytest.fixture(scope="module")
def base_models(tiny_model):
    """A policy and a reference that differs from it (so KL terms are not 0), loaded once."""
    torch.manual_seed(0)
    policy = load_model(tiny_model)
    reference = load_model(tiny_model).requires_grad_(False)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return policy, reference


def one_update(base_models, params: ReinforcementParams, budget: int) -> tuple[dict[str, float], dict, dict]:
    """rl_update from copies of the same models with plain SGD (Adam would magnify float noise
    on near-zero gradients); returns metrics, final gradients and final weights by name."""
    import copy

    policy, reference = base_models
    torch.manual_seed(0)
    model = copy.deepcopy(policy)
    value_head = ValueHead(model.config.hidden_size) if params.algorithm == "ppo" else None
    named = [*model.named_parameters(), *(value_head.named_parameters(prefix="value") if value_head else [])]
    optimizer = torch.optim.SGD([p for _, p in named], lr=0.1)
    ref = reference if params.kl_coef > 0 else None
    metrics = rl_update(model, ref, optimizer, micro_groups(), params, 0, value_head, None, budget)
    grads = {name: p.grad.clone() for name, p in named if p.grad is not None}
    return metrics, grads, {name: p.detach().clone() for name, p in named}


def assert_same_update(whole, split, metric_names, initial: torch.nn.Module) -> None:
    (whole_metrics, whole_grads, whole_weights), (split_metrics, split_grads, split_weights) = whole, split
    for name in metric_names:
        assert split_metrics[name] == pytest.approx(whole_metrics[name], rel=1e-5, abs=1e-6), name
    assert whole_grads.keys() == split_grads.keys() and whole_grads
    moved = max(float((whole_weights[name] - p.detach()).abs().max()) for name, p in initial.named_parameters())
    assert moved > 1e-3, "the update barely moved the weights: the comparison proves nothing"
    for name, grad in whole_grads.items():
        torch.testing.assert_close(split_grads[name], grad, **TOLERANCE, msg=name)
    for name, weight in whole_weights.items():
        torch.testing.assert_close(split_weights[name], weight, **TOLERANCE, msg=name)


def test_the_test_batch_makes_several_micro_batches_of_different_widths() -> None:
    from rft_learner.trainer.micro_batches import micro_batches

    lengths = [len(p) + len(c) for p, cs in zip(MICRO_PROMPTS, MICRO_COMPLETIONS, strict=True) for c in cs]
    runs = micro_batches(lengths, MICRO_BUDGET)
    assert len(runs) >= 3 and len({max(lengths[run]) for run in runs}) >= 3


RL_METRICS = ("loss", "policy_loss", "clip_fraction", "approx_kl", "ratio_mean", "ratio_max", "entropy", "grad_norm",
              "is_weight_mean", "mismatch_kl", "advantage_abs_mean")  # fmt: skip
PPO_METRICS = ("value_loss", "value_clip_fraction", "explained_variance")


@pytest.mark.parametrize(
    ("algorithm", "kl_coef"),
    [(name, 0.0) for name in ALGORITHM_DEFAULTS] + [("grpo", 0.05), ("ppo", 0.05)],
)
def test_micro_batches_give_the_same_update_as_the_whole_batch(base_models, monkeypatch, algorithm, kl_coef) -> None:
    """One step, every algorithm: the micro-batched step (5 micro-batches, and log-softmax in
    blocks of 3 positions) has the whole batch's metrics, gradients and weights."""
    from rft_learner.trainer import policy

    params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=kl_coef, max_new_tokens=8)
    whole = one_update(base_models, params, budget=0)
    monkeypatch.setattr(policy, "LOGIT_BLOCK_ELEMENTS", 3 * base_models[0].config.vocab_size)
    split = one_update(base_models, params, budget=MICRO_BUDGET)
    names = RL_METRICS + (PPO_METRICS if algorithm == "ppo" else ()) + (("kl",) if kl_coef else ())
    assert_same_update(whole, split, names, base_models[0])


@pytest.mark.parametrize("algorithm", ["ppo", "grpo", "gspo"])
def test_micro_batches_with_several_minibatches_and_epochs(base_models, algorithm) -> None:
    """4 optimizer steps over shuffled minibatches of 4 sequences, each in micro-batches of
    at most 12 tokens (1 or 2 sequences). After the first step the ratios move off 1, so the
    ratio and clip metrics (GSPO's per sequence) are weighed by their own units."""
    params = ReinforcementParams(algorithm=algorithm, group_size=4, kl_coef=0.0, ppo_epochs=2, num_minibatches=2)
    whole = one_update(base_models, params, budget=0)
    split = one_update(base_models, params, budget=12)
    assert whole[0]["optimizer_steps"] == split[0]["optimizer_steps"] == 4
    names = RL_METRICS + (PPO_METRICS if algorithm == "ppo" else ())
    assert_same_update(whole, split, names, base_models[0])


def test_sft_micro_batches_give_the_same_step_as_the_whole_batch(base_models) -> None:
    import copy

    prompts = [[1, 60, 61, 2], [1, 62, 2], [1, 63, 64, 65, 66, 2], [1, 2]]
    targets = [[40, 41, 2], [40, 42, 43, 44, 45, 2], [46, 2], [47, 48, 2]]  # lengths 7, 9, 8, 5

    def step(budget: int) -> tuple[dict[str, float], dict, dict]:
        model = copy.deepcopy(base_models[0])
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        metrics = sft_update(model, optimizer, prompts, targets, 0, None, budget)
        named = list(model.named_parameters())
        return metrics, {n: p.grad.clone() for n, p in named}, {n: p.detach().clone() for n, p in named}

    whole, split = step(0), step(10)  # 10 tokens: one sequence per micro-batch, 4 of them
    assert split[0]["num_tokens"] == whole[0]["num_tokens"] == 14.0
    assert_same_update(whole, split, ("sft_loss", "loss"), base_models[0])


def test_the_updater_gives_its_micro_batch_budget_to_every_update(monkeypatch) -> None:
    from rft_learner.trainer import ranks

    budgets = []
    monkeypatch.setattr(ranks, "rl_update", lambda *args: budgets.append(args[-1]) or {})
    monkeypatch.setattr(ranks, "sft_update", lambda *args: budgets.append(args[-1]) or {})
    updater = ranks.Updater(1, micro_batch_tokens=512)
    updater.train_rl(None, None, None, [], ReinforcementParams(), 0, None)
    updater.train_sft(None, None, [], [], 0)
    assert budgets == [512, 512]
    with pytest.raises(ValueError, match="micro_batch_tokens"):
        ranks.Updater(1, micro_batch_tokens=-1)
