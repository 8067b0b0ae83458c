"""Hand-checked tests of rft_learner.rl: every expected number is worked out in the comments."""

import math

import pytest
import torch
from rft_learner.rl import (
    PolicyLossConfig,
    chunked_entropy,
    chunked_token_logprobs,
    entropy_from_logits,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    masked_sum,
    mean_pass_at_k,
    pass_at_k,
    policy_loss,
    rloo_advantages,
    sft_loss,
    sft_loss_from_logprobs,
    terminal_rewards,
    token_logprobs,
    value_loss,
    whiten,
)
from rft_learner.rl.losses import logit_blocks

LN2 = math.log(2.0)


def close(actual, expected, atol=1e-6):
    expected = torch.as_tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), expected, atol=atol, rtol=0)


# ---------------------------------------------------------------- advantages


REWARDS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 2.0]])


def test_group_advantages_grpo_population_std():
    # group 0: mean 1/3, deviations (2/3, -1/3, -1/3), population var (4/9 + 1/9 + 1/9) / 3 = 2/9,
    #          std sqrt(2)/3 -> advantages (2/3)/(sqrt2/3) = sqrt2, and -1/sqrt2 twice
    # group 1: mean 1, deviations (-1, 0, 1), population var 2/3 -> advantages -sqrt(3/2), 0, sqrt(3/2)
    s2, s32 = math.sqrt(2.0), math.sqrt(1.5)
    close(group_advantages(REWARDS, eps=0.0), [[s2, -1 / s2, -1 / s2], [-s32, 0.0, s32]], atol=1e-6)
    # eps enters the denominator: group 1 with eps = 0.1 -> 1 / (sqrt(2/3) + 0.1)
    close(group_advantages(REWARDS, eps=0.1)[1, 2], 1.0 / (math.sqrt(2.0 / 3.0) + 0.1))


def test_group_advantages_dr_grpo_only_centres():
    close(group_advantages(REWARDS, scale_by_std=False), [[2 / 3, -1 / 3, -1 / 3], [-1.0, 0.0, 1.0]])


def test_group_advantages_degenerate_groups_are_zero():
    singletons = torch.tensor([[3.0], [5.0]])
    close(group_advantages(singletons), [[0.0], [0.0]], atol=0)
    close(group_advantages(singletons, scale_by_std=False), [[0.0], [0.0]], atol=0)
    close(group_advantages(torch.tensor([[1.0, 1.0, 1.0, 1.0]])), [[0.0] * 4], atol=0)


def test_rloo_advantages():
    # group 0: 1 - (0+0)/2 = 1;  0 - (1+0)/2 = -0.5 (twice)
    # group 1: 0 - (1+2)/2 = -1.5;  1 - (0+2)/2 = 0;  2 - (0+1)/2 = 1.5
    close(rloo_advantages(REWARDS), [[1.0, -0.5, -0.5], [-1.5, 0.0, 1.5]])
    close(rloo_advantages(torch.tensor([[4.0], [7.0]])), [[0.0], [0.0]], atol=0)


def test_terminal_rewards_on_last_valid_token():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    out = terminal_rewards(torch.tensor([1.0, 0.5, 2.0]), mask)
    close(out, [[0.0, 0.0, 1.0], [0.0, 0.5, 0.0], [0.0, 0.0, 0.0]], atol=0)


def test_gae_gamma_lambda_one_gives_suffix_sums():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 2.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    close(ret, [[1 + 2 + 3, 2 + 3, 3]])  # suffix sums
    close(adv, [[6 - 0.5, 5 - 1.0, 3 - 2.0]])  # returns - values


def test_gae_half_discount_by_hand():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 1.0, 2.0]])
    adv, ret = gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=0.5)
    # delta_2 = 3 + 0.5*0 - 2 = 1        A_2 = 1
    # delta_1 = 2 + 0.5*2 - 1 = 2        A_1 = 2 + 0.25*1 = 2.25
    # delta_0 = 1 + 0.5*1 - 0.5 = 1      A_0 = 1 + 0.25*2.25 = 1.5625
    close(adv, [[1.5625, 2.25, 1.0]])
    close(ret, [[1.5625 + 0.5, 2.25 + 1.0, 1.0 + 2.0]])


def test_gae_variable_lengths_ignore_padding():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 99.0], [7.0, 7.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, 2.0], [0.5, 1.0, 99.0], [float("nan")] * 3])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    # row 1 ends after token 1, so V_2 = 0 is bootstrapped there:
    # delta_1 = 2 + 0 - 1 = 1            A_1 = 1
    # delta_0 = 1 + 0.5*1 - 0.5 = 1      A_0 = 1 + 0.25*1 = 1.25
    close(adv, [[1.5625, 2.25, 1.0], [1.25, 1.0, 0.0], [0.0, 0.0, 0.0]])
    close(ret, [[2.0625, 3.25, 3.0], [1.75, 2.0, 0.0], [0.0, 0.0, 0.0]])


def test_whiten_masked():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, population var (1 + 0 + 1)/3 = 2/3 -> (x - 2) / sqrt(2/3); padding -> 0
    s = math.sqrt(1.5)
    close(whiten(x, mask), [[-s, 0.0, s, 0.0]], atol=1e-5)
    close(whiten(x, mask, shift_mean=False), [[2 - s, 2.0, 2 + s, 0.0]], atol=1e-5)


def test_masked_reductions():
    x = torch.tensor([[1.0, 2.0, float("inf")], [4.0, float("nan"), 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]])
    close(masked_sum(x, mask), 1 + 2 + 4 + 6)
    close(masked_mean(x, mask), (1 + 2 + 4 + 6) / 4)
    close(masked_mean(x, mask, dim=-1), [(1 + 2) / 2, (4 + 6) / 2])
    close(masked_mean(x, torch.zeros_like(mask)), 0.0)


# ---------------------------------------------------------------- KL estimators


def test_kl_estimators_by_hand():
    logp = torch.log(torch.tensor([0.5, 0.25, 0.4]))
    ref = torch.log(torch.tensor([0.25, 0.5, 0.4]))
    # r = ref/policy = 0.5, 2, 1
    # k1 = -log r = ln2, -ln2, 0
    # k3 = r - 1 - log r = (0.5 - 1 + ln2), (2 - 1 - ln2), 0
    close(kl_estimate(logp, ref, "k1"), [LN2, -LN2, 0.0])
    close(kl_estimate(logp, ref, "k3"), [LN2 - 0.5, 1 - LN2, 0.0])


def test_k3_is_nonnegative():
    gen = torch.Generator().manual_seed(0)
    logp, ref = torch.randn(1000, generator=gen) * 3, torch.randn(1000, generator=gen) * 3
    assert (kl_estimate(logp, ref, "k3") >= 0).all()


def test_kl_estimators_are_unbiased_for_kl_policy_ref():
    # p = (1/2, 1/4, 1/4), q = (1/4, 1/4, 1/2):
    # KL(p || q) = 1/2 ln(2) + 1/4 ln(1) + 1/4 ln(1/2) = ln2 / 4 ~= 0.1733
    p = torch.tensor([0.5, 0.25, 0.25])
    q = torch.tensor([0.25, 0.25, 0.5])
    idx = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = torch.log(p)[idx], torch.log(q)[idx]
    assert abs(kl_estimate(logp, logq, "k1").mean().item() - LN2 / 4) < 0.01
    assert abs(kl_estimate(logp, logq, "k3").mean().item() - LN2 / 4) < 0.01


# ---------------------------------------------------------------- policy loss


def _ratios_case():
    """Row 0 has A = +1, row 1 has A = -1; both at ratios 0.5, 1.0, 1.5 (old logprobs 0)."""
    logprobs = torch.log(torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]])).requires_grad_()
    return logprobs, torch.zeros(2, 3), torch.tensor([1.0, -1.0]), torch.ones(2, 3)


def test_policy_loss_clip_band_and_gradients():
    logprobs, old, adv, mask = _ratios_case()
    loss, metrics = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(clip_range=0.2))
    # per token -min(r*A, clip(r, 0.8, 1.2)*A):
    # A=+1: r=0.5 -> -min(0.5, 0.8) = -0.5 | r=1 -> -1 | r=1.5 -> -min(1.5, 1.2) = -1.2 (clipped)
    # A=-1: r=0.5 -> -min(-0.5, -0.8) = 0.8 (clipped) | r=1 -> 1 | r=1.5 -> -min(-1.5, -1.2) = 1.5
    expected = (-0.5 - 1.0 - 1.2 + 0.8 + 1.0 + 1.5) / 6  # = 0.1
    close(loss.item(), expected)
    close(metrics["loss"], expected)
    close(metrics["policy_loss"], expected)
    close(metrics["clip_fraction"], 2 / 6)
    close(metrics["ratio_mean"], (0.5 + 1.0 + 1.5) * 2 / 6)
    close(metrics["ratio_max"], 1.5)
    # approx_kl = mean((r - 1) - ln r): r=0.5 -> -0.5 + ln2; r=1 -> 0; r=1.5 -> 0.5 - ln1.5
    close(metrics["approx_kl"], 2 * ((-0.5 + LN2) + 0.0 + (0.5 - math.log(1.5))) / 6)
    assert "kl" not in metrics
    loss.backward()
    # d/dlogp of -r*A is -A*r (dr/dlogp = r); divided by N = 6 tokens; 0 where the clip is active.
    # At r = 1 (on-policy) this is -A/N.
    close(logprobs.grad, [[-0.5 / 6, -1.0 / 6, 0.0], [0.0, 1.0 / 6, 1.5 / 6]])


def test_policy_loss_clip_higher():
    logprobs = torch.log(torch.tensor([[1.25, 1.5, 0.75]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0]])  # per-token advantages
    cfg = PolicyLossConfig(clip_range=0.2, clip_range_high=0.28)
    loss, metrics = policy_loss(logprobs, torch.zeros(1, 3), adv, torch.ones(1, 3), cfg)
    # band [0.8, 1.28]: A=+1 r=1.25 -> -1.25 (inside) | A=+1 r=1.5 -> -1.28 (clipped)
    #                   A=-1 r=0.75 -> -min(-0.75, -0.8) = 0.8 (clipped at the low side)
    close(loss.item(), (-1.25 - 1.28 + 0.8) / 3)
    close(metrics["clip_fraction"], 2 / 3)
    loss.backward()
    close(logprobs.grad, [[-1.25 / 3, 0.0, 0.0]])


def test_policy_loss_aggregations_on_ragged_mask():
    logprobs = torch.zeros(2, 3, requires_grad=True)  # ratio 1 everywhere -> per-token loss = -A
    adv = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    old = torch.zeros(2, 3)
    token, _ = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(aggregation="token_mean"))
    close(token.item(), -(1 + 2 + 3 + 4) / 4)  # -2.5
    seq, _ = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(aggregation="sequence_mean"))
    close(seq.item(), -((1 + 2 + 3) / 3 + 4 / 1) / 2)  # -3
    const, _ = policy_loss(logprobs, old, adv, mask, PolicyLossConfig(aggregation="constant", max_tokens=4))
    close(const.item(), -(1 + 2 + 3 + 4) / (2 * 4))  # -1.25
    const.backward()
    close(logprobs.grad, [[-1 / 8, -2 / 8, -3 / 8], [-4 / 8, 0.0, 0.0]])  # -A / (B * max_tokens)


def test_sequence_mean_skips_empty_rows():
    adv = torch.tensor([[1.0, 3.0], [5.0, 5.0]])
    mask = torch.tensor([[1, 1], [0, 0]])
    loss, _ = policy_loss(
        torch.zeros(2, 2), torch.zeros(2, 2), adv, mask, PolicyLossConfig(aggregation="sequence_mean")
    )
    close(loss.item(), -(1 + 3) / 2)


def test_policy_loss_with_kl_penalty():
    logprobs = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    old = logprobs.detach().clone()  # ratio 1
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    adv = torch.tensor([1.0])
    cfg = PolicyLossConfig(kl_coef=0.1, kl_estimator="k3")
    loss, metrics = policy_loss(logprobs, old, adv, torch.ones(1, 2), cfg, ref_logprobs=ref)
    # pg = -1 per token; k3 = (ln2 - 0.5, 1 - ln2) as in test_kl_estimators_by_hand
    kl_mean = ((LN2 - 0.5) + (1 - LN2)) / 2  # = 0.25
    close(metrics["kl"], kl_mean)
    close(metrics["policy_loss"], -1.0)
    close(loss.item(), -1.0 + 0.1 * kl_mean)
    loss.backward()
    # d k3 / d logp = 1 - r with r = ref/policy = (0.5, 2): (0.5, -1); pg gives -1; N = 2
    close(logprobs.grad, [[(-1 + 0.1 * 0.5) / 2, (-1 + 0.1 * -1.0) / 2]])
    with pytest.raises(ValueError):
        policy_loss(logprobs, old, adv, torch.ones(1, 2), cfg)  # kl_coef > 0 without a reference


def test_policy_loss_config_validation():
    with pytest.raises(ValueError):
        PolicyLossConfig(aggregation="constant")
    with pytest.raises(ValueError):
        PolicyLossConfig(clip_range=0.0)
    with pytest.raises(ValueError):
        PolicyLossConfig(loss_type="cispo", ratio_level="sequence")  # CISPO's weight is per token


# ---------------------------------------------------------------- value loss


def test_value_loss_clipping():
    values = torch.tensor([[1.0, 2.0, 50.0]], requires_grad=True)
    old = torch.tensor([[1.5, 1.9, 0.0]])
    returns = torch.tensor([[0.0, 3.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    loss, metrics = value_loss(values, old, returns, mask, clip_range=0.2)
    # token 0: (1 - 0)^2 = 1; v_clip = 1.5 + clip(-0.5) = 1.3, (1.3 - 0)^2 = 1.69 -> 0.5 * 1.69 = 0.845
    # token 1: (2 - 3)^2 = 1; v_clip = 1.9 + 0.1 = 2.0 (inside), also 1  -> 0.5 * 1 = 0.5
    close(loss.item(), (0.845 + 0.5) / 2)
    close(metrics["value_loss"], (0.845 + 0.5) / 2)
    close(metrics["value_clip_fraction"], 0.5)
    # explained variance: R = (0, 3), V = (1, 2): Var(R - V) = Var(-1, 1) = 1, Var(R) = 2.25
    close(metrics["explained_variance"], 1 - 1 / 2.25)
    loss.backward()
    # token 0: the clipped term wins and v_clip does not depend on v -> 0; token 1: (v - R) / N = -1/2
    close(values.grad, [[0.0, -0.5, 0.0]])
    unclipped, _ = value_loss(values, old, returns, mask, clip_range=None)
    close(unclipped.item(), 0.5 * (1 + 1) / 2)


# ---------------------------------------------------------------- token-level helpers


def test_token_logprobs_and_sft_loss():
    logits = torch.log(torch.tensor([[[1.0, 1.0], [3.0, 1.0], [1.0, 1.0]]]))  # [B=1, T=3, V=2]
    # softmax rows: (1/2, 1/2), (3/4, 1/4), (1/2, 1/2)
    close(token_logprobs(logits, torch.tensor([[1, 0, 1]])), [[math.log(0.5), math.log(0.75), math.log(0.5)]])
    labels = torch.tensor([[1, 0, -100]])
    loss, metrics = sft_loss(logits, labels, torch.tensor([[1, 1, 0]]))
    close(loss.item(), (LN2 + math.log(4 / 3)) / 2)  # -ln(1/2), -ln(3/4); third position masked
    assert metrics["num_tokens"] == 2


def test_token_logprobs_upcasts_half_precision():
    logits = torch.tensor([[[0.0, math.log(3.0)]]], dtype=torch.bfloat16)
    out = token_logprobs(logits, torch.tensor([[1]]))
    assert out.dtype == torch.float32
    close(out, [[math.log(0.75)]], atol=1e-2)


def test_entropy_from_logits():
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # uniform over 4: ln 4
            [math.log(0.5), math.log(0.25), math.log(0.25), float("-inf")],  # 1/2 ln2 + 2 * 1/4 ln4 = 1.5 ln2
            [1000.0, 1000.0, -1000.0, -1000.0],  # two equal huge logits: ln 2, no overflow
            [5.0, float("-inf"), float("-inf"), float("-inf")],  # one-hot: 0
        ]
    )
    close(entropy_from_logits(logits), [2 * LN2, 1.5 * LN2, LN2, 0.0], atol=1e-5)


def test_logit_blocks_tile_the_grid() -> None:
    # Rows of 5 positions do not fit a block of 3: pieces of one row, the last one short.
    assert logit_blocks(2, 5, 3) == [
        (slice(0, 1), slice(0, 3)),
        (slice(0, 1), slice(3, 6)),
        (slice(1, 2), slice(0, 3)),
        (slice(1, 2), slice(3, 6)),
    ]
    # Rows of 2 positions: two whole rows (4 positions) per block of 5.
    assert logit_blocks(5, 2, 5) == [(slice(0, 2), slice(0, 2)), (slice(2, 4), slice(0, 2)), (slice(4, 6), slice(0, 2))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block", [1, 4, 7, 100])
def test_chunked_token_logprobs_and_entropy_equal_the_whole_computation(dtype, block) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, 50, generator=generator)).to(dtype)
    logits[0, 1, 5] = float("-inf")  # a token the model rules out: probability 0, no nan
    tokens = torch.randint(0, 50, (3, 7), generator=generator)
    upstream = torch.randn(3, 7, generator=generator)  # a loss's gradient w.r.t. each log-prob

    whole_logits = logits.clone().requires_grad_(True)
    whole = token_logprobs(whole_logits, tokens)
    (whole * upstream).sum().backward()
    chunked_logits = logits.clone().requires_grad_(True)
    chunked = chunked_token_logprobs(chunked_logits, tokens, block)
    (chunked * upstream).sum().backward()

    assert chunked.dtype == torch.float32
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)
    # bf16 gradients are rounded to bf16 (8 bits of mantissa) on the way out, by both paths.
    atol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(chunked_logits.grad, whole_logits.grad, rtol=0, atol=atol)
    torch.testing.assert_close(chunked_entropy(logits, block), entropy_from_logits(logits), rtol=0, atol=1e-5)


def test_chunked_token_logprobs_gradient_by_hand() -> None:
    # softmax (3/4, 1/4): d log p_0 / dz = onehot(0) - softmax = (1/4, -1/4)
    logits = torch.log(torch.tensor([[[3.0, 1.0]]])).requires_grad_(True)
    out = chunked_token_logprobs(logits, torch.tensor([[0]]), 1)
    close(out, [[math.log(0.75)]])
    out.sum().backward()
    close(logits.grad, [[[0.25, -0.25]]])


def test_sft_loss_from_logprobs_and_explained_variance() -> None:
    loss, metrics = sft_loss_from_logprobs(
        torch.tensor([[math.log(0.5), math.log(0.75), 7.0]]), torch.tensor([[1, 1, 0]])
    )
    close(loss.item(), (LN2 + math.log(4 / 3)) / 2)
    assert metrics["num_tokens"] == 2
    # returns (1, 3), values (1, 2): Var(R) = 1, Var(R - V) = Var(0, 1) = 1/4 -> 3/4; the masked 9 is ignored
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert explained_variance(torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[1.0, 3.0, 9.0]]), mask) == pytest.approx(
        0.75
    )
    assert math.isnan(explained_variance(torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2)))


# ---------------------------------------------------------------- pass@k


def test_pass_at_k_table():
    # n=5, c=2: k=1 -> 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4;  k=2 -> 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    close(pass_at_k(5, 2, 1), 0.4, atol=1e-12)
    close(pass_at_k(5, 2, 2), 0.7, atol=1e-12)
    close(pass_at_k(5, 2, 4), 1.0, atol=1e-12)  # n - c = 3 < 4: every 4-subset has a correct one
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 5, 1) == 1.0
    # large n stays finite: n=1000, c=1, k=1 -> 1/1000
    close(pass_at_k(1000, 1, 1), 1e-3, atol=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(5, 2, 6)
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


def test_mean_pass_at_k():
    close(mean_pass_at_k([2, 0, 5], n=5, k=1), (0.4 + 0.0 + 1.0) / 3, atol=1e-12)
