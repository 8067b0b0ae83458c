"""Hand-checked tests of GSPO, CISPO, clip-higher, rollout correction and DAPO shaping in rft_learner.rl.

Every expected number is worked out in the comments.
"""

import math

import pytest
import torch
from rft_learner.rl import (
    PolicyLossConfig,
    informative_groups,
    overlong_penalty,
    policy_loss,
    rollout_correction,
)

LN2 = math.log(2.0)
NAN = float("nan")


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), expected, atol=atol, rtol=0)


# ---------------------------------------------------------------- GSPO


def _gspo_case():
    """Row 0: A = +1, token log-ratios ln0.9 + (0.2, -0.1, -0.1), so s_0 = exp(ln0.9) = 0.9.
    Row 1: A = -1, log-ratios ln0.5 + (0.3, -0.3) and a padded third token, so s_1 = 0.5.
    Old logprobs are -1, nan at the padding (the sampler reports nothing there)."""
    log_ratio = torch.tensor(
        [
            [math.log(0.9) + 0.2, math.log(0.9) - 0.1, math.log(0.9) - 0.1],
            [math.log(0.5) + 0.3, math.log(0.5) - 0.3, 0.0],
        ]
    )
    old = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, NAN]])
    logprobs = (torch.where(torch.isnan(old), 0.0, old) + log_ratio).requires_grad_()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    return logprobs, old, torch.tensor([1.0, -1.0]), mask


def test_gspo_value_and_gradient():
    logprobs, old, adv, mask = _gspo_case()
    cfg = PolicyLossConfig(clip_range=0.2, ratio_level="sequence")
    loss, metrics = policy_loss(logprobs, old, adv, mask, cfg)
    # band [0.8, 1.2]; every token of a sequence sees its sequence's ratio s_i:
    # row 0: s=0.9, A=+1 -> -min(0.9, 0.9) = -0.9 per token (inside the band)
    # row 1: s=0.5, A=-1 -> -min(-0.5, -0.8) = 0.8 per token (clipped at the low side)
    # token mean over N = 5 valid tokens: (3 * -0.9 + 2 * 0.8) / 5 = -1.1 / 5
    close(loss.item(), -1.1 / 5)
    close(metrics["clip_fraction"], 2 / 5)
    close(metrics["ratio_mean"], (0.9 + 0.5) / 2)  # over sequences, not tokens
    close(metrics["ratio_max"], 0.9)
    loss.backward()
    # unclipped token: d(-s_i,t * A)/d logp_t = -A * s_i (the sequence's ratio, not the token's), / N = 5:
    # row 0: -0.9 / 5 on each token (token-level PPO would give -0.9 * e^0.2 / 5 etc.);
    # row 1 is clipped -> 0; the padding -> 0 (and not nan despite the nan old logprob)
    close(logprobs.grad, [[-0.9 / 5, -0.9 / 5, -0.9 / 5], [0.0, 0.0, 0.0]])


def test_gspo_sequence_mean_matches_the_sequence_objective():
    logprobs, old, adv, mask = _gspo_case()
    cfg = PolicyLossConfig(clip_range=0.2, ratio_level="sequence", aggregation="sequence_mean")
    loss, _ = policy_loss(logprobs, old, adv, mask, cfg)
    # GSPO's own objective: mean over sequences of -min(s_i A_i, clip(s_i) A_i) = (-0.9 + 0.8) / 2
    close(loss.item(), -0.05)
    loss.backward()
    # d s_0 / d logp_t = s_0 / |y_0| = 0.9 / 3, times -A / B = -1/2 -> -0.15 per token of row 0
    close(logprobs.grad, [[-0.15, -0.15, -0.15], [0.0, 0.0, 0.0]])


def test_gspo_equals_token_ppo_with_one_token_per_sequence():
    # one valid token per row (at different positions), ratios 0.5, 1.0, 1.5; old nan at the padding
    lp = [[math.log(0.5), 0.0], [0.0, 0.0], [math.log(1.5), 0.0]]
    old = torch.tensor([[0.0, NAN], [NAN, 0.0], [0.0, NAN]])
    mask = torch.tensor([[1, 0], [0, 1], [1, 0]])
    adv = torch.tensor([1.0, -1.0, 1.0])
    results = []
    for level in ("token", "sequence"):
        logprobs = torch.tensor(lp, requires_grad=True)
        loss, metrics = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(clip_range=0.2, ratio_level=level))
        loss.backward()
        results.append((loss.item(), logprobs.grad, metrics))
        # r=0.5 A=+1 -> -0.5 | r=1 A=-1 -> 1 | r=1.5 A=+1 -> -1.2 (clipped); mean over 3
        close(loss.item(), (-0.5 + 1.0 - 1.2) / 3)
        # -A * r / 3 where unclipped: -0.5/3 | 1/3 | 0; padding 0
        close(logprobs.grad, [[-0.5 / 3, 0.0], [0.0, 1.0 / 3], [0.0, 0.0]])
        close(metrics["clip_fraction"], 1 / 3)
        close(metrics["ratio_mean"], (0.5 + 1.0 + 1.5) / 3)
        close(metrics["ratio_max"], 1.5)
    (_, _, token_metrics), (_, _, seq_metrics) = results
    close(seq_metrics["approx_kl"], token_metrics["approx_kl"])


# ---------------------------------------------------------------- clip-higher


def test_clip_higher_is_asymmetric():
    # token 0: A=+1 at ratio 1.25; token 1: A=-1 at ratio 0.75
    adv = torch.tensor([[1.0, -1.0]])
    for high, expected_loss, expected_grad, clip_fraction in [
        # band [0.8, 1.2]: -min(1.25, 1.2) = -1.2 (clipped, grad 0) | -min(-0.75, -0.8) = 0.8 (clipped, grad 0)
        (0.2, (-1.2 + 0.8) / 2, [[0.0, 0.0]], 1.0),
        # band [0.8, 1.28]: -1.25 inside, grad -A * r / N = -1.25 / 2 | the low side is unchanged: 0.8, clipped
        (0.28, (-1.25 + 0.8) / 2, [[-1.25 / 2, 0.0]], 0.5),
    ]:
        logprobs = torch.log(torch.tensor([[1.25, 0.75]])).requires_grad_()
        cfg = PolicyLossConfig(clip_range=0.2, clip_range_high=high)
        loss, metrics = policy_loss(logprobs, torch.zeros(1, 2), adv, torch.ones(1, 2), cfg)
        close(loss.item(), expected_loss)
        close(metrics["clip_fraction"], clip_fraction)
        loss.backward()
        close(logprobs.grad, expected_grad)


# ---------------------------------------------------------------- CISPO


def test_cispo_gradient_flows_through_clipped_tokens():
    # ratios 0.5, 1.0, 1.5 in both rows (old logprobs -1); A = +1 for row 0, -2 for row 1; eps_high = 0.2
    old = torch.full((2, 3), -1.0)
    logprobs = (old + torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]))).requires_grad_()
    adv = torch.tensor([1.0, -2.0])
    loss, metrics = policy_loss(logprobs, old, adv, torch.ones(2, 3), PolicyLossConfig(loss_type="cispo"))
    # weight sg(min(r, 1.2)) = 0.5, 1, 1.2; pg = -weight * A * logp with logp = ln r - 1:
    # row 0: -0.5(-ln2 - 1) - 1(-1) - 1.2(ln1.5 - 1) = 2.7 + 0.5 ln2 - 1.2 ln1.5
    # row 1: -2 times that = -5.4 - ln2 + 2.4 ln1.5; sum = -2.7 - 0.5 ln2 + 1.2 ln1.5, / 6
    close(loss.item(), (-2.7 - 0.5 * LN2 + 1.2 * math.log(1.5)) / 6)
    close(metrics["clip_fraction"], 2 / 6)  # the two tokens with r = 1.5 > 1.2
    close(metrics["ratio_mean"], 1.0)
    loss.backward()
    # -weight * A / N everywhere, no token zeroed: row 0 r=1.5 gets -(1 + eps_high) * A / N = -1.2/6 (PPO: 0);
    # row 1 r=0.5 with A < 0 gets +2 * 0.5/6 (PPO: 0, clipped low); row 1 r=1.5 gets 2 * 1.2/6 (PPO: 2 * 1.5/6)
    close(logprobs.grad, [[-0.5 / 6, -1.0 / 6, -1.2 / 6], [1.0 / 6, 2.0 / 6, 2.4 / 6]])


def test_cispo_ignores_nan_at_padding():
    logprobs = torch.tensor([[math.log(0.5), NAN]], requires_grad=True)
    old = torch.tensor([[0.0, NAN]])
    loss, _ = policy_loss(
        logprobs, old, torch.tensor([1.0]), torch.tensor([[1, 0]]), PolicyLossConfig(loss_type="cispo")
    )
    # one token: -0.5 * 1 * ln0.5 = 0.5 ln2; gradient -0.5 * A / 1
    close(loss.item(), 0.5 * LN2)
    loss.backward()
    close(logprobs.grad, [[-0.5, 0.0]])


# ---------------------------------------------------------------- importance weights


def _ratios_case():
    """Row 0 has A = +1, row 1 has A = -1; both at ratios 0.5, 1.0, 1.5 (old logprobs 0)."""
    logprobs = torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]])).requires_grad_()
    return logprobs, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.ones(2, 3)


def test_is_weights_scale_the_policy_gradient():
    logprobs, old, adv, mask = _ratios_case()
    w = torch.tensor([[2.0, 0.5, 3.0], [1.0, 0.0, 0.5]])
    loss, metrics = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(clip_range=0.2), is_weights=w)
    # unweighted pg (test_rl_math): row 0 -0.5, -1, -1.2 | row 1 0.8, 1, 1.5
    # weighted: -1, -0.5, -3.6 | 0.8, 0, 0.75 -> sum -3.55, / 6
    close(loss.item(), -3.55 / 6)
    close(metrics["policy_loss"], -3.55 / 6)
    loss.backward()
    # unweighted grads -0.5/6, -1/6, 0 | 0, 1/6, 1.5/6, each times its weight
    close(logprobs.grad, [[-1.0 / 6, -0.5 / 6, 0.0], [0.0, 0.0, 0.75 / 6]])


def test_is_weights_per_sequence_broadcast():
    logprobs, old, adv, mask = _ratios_case()
    loss, _ = policy_loss(
        logprobs, old, adv, mask, PolicyLossConfig(clip_range=0.2), is_weights=torch.tensor([2.0, 0.5])
    )
    # row sums -2.7 and 3.3 -> 2 * -2.7 + 0.5 * 3.3 = -3.75, / 6
    close(loss.item(), -3.75 / 6)


def test_is_weights_leave_the_kl_term_alone():
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.5]])).requires_grad_()
    old = logprobs.detach().clone()  # ratio 1
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.5]]))
    mask = torch.tensor([[1, 1, 0]])
    w = torch.tensor([[0.0, 0.0, NAN]])  # weight 0 removes the policy gradient; nan at the padding is ignored
    cfg = PolicyLossConfig(kl_coef=0.1, kl_estimator="k3")
    loss, metrics = policy_loss(logprobs, old, torch.tensor([1.0]), mask, cfg, ref_logprobs=ref, is_weights=w)
    # pg = 0; k3 = (ln2 - 0.5, 1 - ln2), mean 0.25 -> loss 0.1 * 0.25
    close(metrics["policy_loss"], 0.0)
    close(loss.item(), 0.025)
    loss.backward()
    # only the KL gradient: d k3 / d logp = 1 - ref/policy = (0.5, -1), times 0.1 / N = 2
    close(logprobs.grad, [[0.1 * 0.5 / 2, 0.1 * -1.0 / 2, 0.0]])


# ---------------------------------------------------------------- rollout correction


def _mismatch_case():
    """Token ratios w = p_trainer / p_rollout; rows 1 and 2 have a padded third token (trainer nan there).

    row 0: 0.25, 1, 4    (product 1)
    row 1: 1.5, 3, -     (product 4.5)
    row 2: 0.6, 0.8, -   (product 0.48)
    """
    w = torch.tensor([[0.25, 1.0, 4.0], [1.5, 3.0, 1.0], [0.6, 0.8, 1.0]])
    rollout = torch.full((3, 3), -2.0)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 0]])
    trainer = torch.where(mask.bool(), rollout + torch.log(w), NAN)
    return trainer, rollout, mask


def test_rollout_correction_token_level():
    trainer, rollout, mask = _mismatch_case()
    # 7 valid tokens, raw mean (0.25 + 1 + 4 + 1.5 + 3 + 0.6 + 0.8) / 7 = 11.15 / 7
    # k3 per token (w - 1) - ln w; summed: (-0.75 + 0 + 3 + 0.5 + 2 - 0.4 - 0.2) + (ln4 - ln4)
    #   - ln1.5 - ln3 - ln0.6 - ln0.8 = 4.15 - ln(1.5 * 3 * 0.6 * 0.8) = 4.15 - ln2.16
    kl = (4.15 - math.log(2.16)) / 7

    weights, metrics = rollout_correction(trainer, rollout, mask, "tis", cap=2.0)
    close(weights, [[0.25, 1.0, 2.0], [1.5, 2.0, 0.0], [0.6, 0.8, 0.0]])  # min(w, 2); padding 0
    assert set(metrics) == {"mismatch_kl", "is_weight_mean", "is_truncated_fraction"}
    close(metrics["is_truncated_fraction"], 2 / 7)  # 4 and 3
    close(metrics["is_weight_mean"], 11.15 / 7)
    close(metrics["mismatch_kl"], kl)

    weights, metrics = rollout_correction(trainer, rollout, mask, "mis", cap=2.0)
    # kept where 0.5 <= w <= 2: 0.25, 4 and 3 drop out
    close(weights, [[0.0, 1.0, 0.0], [1.5, 0.0, 0.0], [0.6, 0.8, 0.0]])
    assert set(metrics) == {"mismatch_kl", "is_weight_mean", "is_masked_fraction"}
    close(metrics["is_masked_fraction"], 3 / 7)
    close(metrics["mismatch_kl"], kl)

    weights, metrics = rollout_correction(trainer, rollout, mask, "none")
    close(weights, [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert set(metrics) == {"mismatch_kl", "is_weight_mean"}
    close(metrics["mismatch_kl"], kl)


def test_rollout_correction_sequence_level():
    trainer, rollout, mask = _mismatch_case()
    # per sequence w_i = product of its token ratios: 1, 4.5, 0.48; mean over tokens (3 * 1 + 2 * 4.5 + 2 * 0.48) / 7
    weights, metrics = rollout_correction(trainer, rollout, mask, "tis", cap=2.0, level="sequence")
    close(weights, [[1.0, 1.0, 1.0], [2.0, 2.0, 0.0], [0.48, 0.48, 0.0]])  # row 0 is kept whole despite 0.25 and 4
    close(metrics["is_truncated_fraction"], 2 / 7)  # the two tokens of row 1
    close(metrics["is_weight_mean"], 12.96 / 7)

    weights, metrics = rollout_correction(trainer, rollout, mask, "mis", cap=2.0, level="sequence")
    # 4.5 > 2 and 0.48 < 0.5: rows 1 and 2 drop out whole (token level kept 1.5, 0.6, 0.8)
    close(weights, [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    close(metrics["is_masked_fraction"], 4 / 7)


def test_rollout_correction_without_mismatch():
    logp = torch.log(torch.tensor([[0.5, 0.25], [0.125, 0.9]])).requires_grad_()
    weights, metrics = rollout_correction(
        logp, logp.detach().clone(), torch.ones(2, 2), "tis", cap=2.0, level="sequence"
    )
    assert not weights.requires_grad
    close(weights, torch.ones(2, 2))
    close(metrics["mismatch_kl"], 0.0)
    close(metrics["is_weight_mean"], 1.0)
    close(metrics["is_truncated_fraction"], 0.0)


def test_rollout_correction_rejects_cap_at_most_one():
    trainer, rollout, mask = _mismatch_case()
    for cap in (1.0, 0.5):
        with pytest.raises(ValueError):
            rollout_correction(trainer, rollout, mask, "tis", cap=cap)


def test_truncated_weights_enter_the_policy_gradient():
    # the trainer (before the update) gives 0.5 to both tokens, the sampler 0.1 and 0.4: w = 5, 1.25
    old = torch.log(torch.tensor([[0.5, 0.5]]))
    rollout = torch.log(torch.tensor([[0.1, 0.4]]))
    weights, _ = rollout_correction(old, rollout, torch.ones(1, 2), "tis", cap=2.0)
    close(weights, [[2.0, 1.25]])
    logprobs = old.clone().requires_grad_()  # first step on the batch: ratio 1
    adv = torch.tensor([[-1.0, 1.0]])
    loss, _ = policy_loss(logprobs, old, adv, torch.ones(1, 2), PolicyLossConfig(), is_weights=weights)
    # pg = -A = (1, -1), weighted (2, -1.25): mean 0.375
    close(loss.item(), 0.375)
    loss.backward()
    # -A * ratio * w / N = (2 / 2, -1.25 / 2): the weight on the sampler's w = 5 is capped at 2
    close(logprobs.grad, [[1.0, -0.625]])


# ---------------------------------------------------------------- DAPO shaping


def test_overlong_penalty_regions_and_boundaries():
    # L_max = 10, L_cache = 4: the ramp runs over 6 < L <= 10
    lengths = torch.tensor([0, 6, 7, 8, 10, 11, 50])
    # 0 and 6 (boundary) -> 0 | 7 -> (6 - 7)/4 = -0.25 | 8 -> -0.5 | 10 (boundary) -> -4/4 = -1 | beyond -> -1
    out = overlong_penalty(lengths, max_tokens=10, buffer=4)
    assert out.dtype == torch.get_default_dtype()
    close(out, [0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    close(overlong_penalty(lengths, max_tokens=10, buffer=4, penalty=0.5), [0.0, 0.0, -0.125, -0.25, -0.5, -0.5, -0.5])
    # buffer = max_tokens: the ramp starts at 0, so 5 -> (0 - 5)/10 = -0.5
    close(overlong_penalty(torch.tensor([0, 5, 10]), max_tokens=10, buffer=10), [0.0, -0.5, -1.0])
    for buffer in (0, 11, -1):
        with pytest.raises(ValueError):
            overlong_penalty(lengths, max_tokens=10, buffer=buffer)


def test_informative_groups():
    groups = [
        [1.0, 0.0],  # differ
        [1.0, 1.0],  # all equal
        [1.0, None, 0.0],  # the ungraded one is skipped; 1 and 0 differ
        [None, 1.0],  # one graded
        [1.0],  # single sample
        [],
        [None, None],
        [0.5, 0.5 + 1e-12],  # within tol
        [0.5, 0.5 + 1e-6],
    ]
    assert informative_groups(groups) == [True, False, True, False, False, False, False, False, True]
    assert informative_groups([[0.0, 0.1]], tol=0.2) == [False]
