"""Losses of the learner: PPO-clip / GSPO / CISPO policy loss with KL to a reference, clipped value loss, SFT.

Each loss is a pure function of tensors, ``fn(inputs, cfg) -> (loss, metrics)``; the metrics are
plain floats computed under ``no_grad``. Shapes: ``B`` sequences, ``T`` token positions, ``V``
vocabulary. A ``mask`` is 1 (or True) on the tokens that count and 0 elsewhere; values at masked-out
positions are ignored even when they are ``inf``/``nan`` (they are selected away, not multiplied by 0).

Alignment convention (causal LM): the logits at position ``t`` predict token ``t + 1``. Given
``input_ids`` [B, L] and the model's ``logits`` [B, L, V], the caller passes ``logits[:, :-1]``
with ``tokens = input_ids[:, 1:]`` and ``mask = completion_mask[:, 1:]`` (1 on generated tokens).
"""

import dataclasses
from typing import Literal

import torch
from torch import Tensor

# ---------------------------------------------------------------- masked reductions


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``x`` over the positions where ``mask`` is nonzero (over all elements, or along ``dim``)."""
    x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() if dim is None else x.sum(dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the positions where ``mask`` is nonzero; 0 where there are none.

    ``sum_i m_i x_i / sum_i m_i`` with a 0/1 mask.
    """
    count = masked_sum(torch.ones_like(x), mask, dim)
    return masked_sum(x, mask, dim) / count.clamp(min=1.0)


def _masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Population variance (divide by N, not N - 1) of ``x`` over the masked positions."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


# ---------------------------------------------------------------- config

Aggregation = Literal["token_mean", "sequence_mean", "constant"]


@dataclasses.dataclass(frozen=True)
class PolicyLossConfig:
    """Hyperparameters of :func:`policy_loss`."""

    loss_type: Literal["ppo", "cispo"] = "ppo"
    """"ppo": clipped surrogate (PPO, GRPO, DAPO, GSPO); "cispo": clipped IS-weight REINFORCE (CISPO)."""
    ratio_level: Literal["token", "sequence"] = "token"
    """"token": one ratio per token (PPO); "sequence": one length-normalised ratio per sequence (GSPO)."""
    clip_range: float = 0.2
    """PPO epsilon: the ratio is clipped to [1 - clip_range, 1 + clip_range_high]. Unused by CISPO."""
    clip_range_high: float | None = None
    """Upper epsilon ("clip-higher", DAPO arXiv 2503.14476); None means the same as clip_range."""
    kl_coef: float = 0.0
    """Weight of the per-token KL(policy || reference) penalty added to the loss; 0 disables it."""
    kl_estimator: Literal["k1", "k3"] = "k3"
    """Per-token KL estimator, see :func:`kl_estimate`."""
    aggregation: Aggregation = "token_mean"
    """How per-token losses become one number, see :func:`aggregate`."""
    max_tokens: int | None = None
    """Constant divisor per sequence for aggregation="constant" (Dr. GRPO), e.g. max_new_tokens."""

    def __post_init__(self) -> None:
        if self.loss_type not in ("ppo", "cispo"):
            raise ValueError(f"unknown loss_type {self.loss_type!r}")
        if self.ratio_level not in ("token", "sequence"):
            raise ValueError(f"unknown ratio_level {self.ratio_level!r}")
        if self.loss_type == "cispo" and self.ratio_level == "sequence":
            raise ValueError('loss_type="cispo" supports only ratio_level="token"')
        if self.clip_range <= 0 or (self.clip_range_high is not None and self.clip_range_high <= 0):
            raise ValueError("clip ranges must be > 0")
        if self.kl_coef < 0:
            raise ValueError("kl_coef must be >= 0")
        if self.aggregation == "constant" and (self.max_tokens is None or self.max_tokens < 1):
            raise ValueError('aggregation="constant" needs max_tokens >= 1')


def aggregate(per_token: Tensor, mask: Tensor, aggregation: Aggregation, max_tokens: int | None = None) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar.

    - ``token_mean``: sum over all valid tokens / number of valid tokens (DAPO, arXiv 2503.14476).
    - ``sequence_mean``: mean over each sequence's valid tokens, then mean over the sequences that
      have any (original GRPO, DeepSeekMath arXiv 2402.03300 eq. 3).
    - ``constant``: sum over valid tokens / (B * max_tokens) (Dr. GRPO, arXiv 2503.20783), which
      removes the length bias of the per-sequence mean.
    """
    if aggregation == "token_mean":
        return masked_mean(per_token, mask)
    if aggregation == "sequence_mean":
        has_tokens = mask.bool().any(dim=-1)
        per_seq = masked_mean(per_token, mask, dim=-1)
        return masked_sum(per_seq, has_tokens) / has_tokens.sum().clamp(min=1)
    if aggregation == "constant":
        if max_tokens is None:
            raise ValueError('aggregation="constant" needs max_tokens')
        return masked_sum(per_token, mask) / (per_token.shape[0] * max_tokens)
    raise ValueError(f"unknown aggregation {aggregation!r}")


# ---------------------------------------------------------------- the algorithm


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, estimator: Literal["k1", "k3"]) -> Tensor:
    """Per-token estimate of KL(policy || ref) from tokens sampled from the policy.

    With ``log r = ref_logprobs - logprobs`` (r = p_ref / p_policy at the sampled token):

    - ``k1 = -log r = logprobs - ref_logprobs``: unbiased, high variance, can be negative.
    - ``k3 = (r - 1) - log r``: unbiased, lower variance, always >= 0 (since log r <= r - 1).

    J. Schulman, "Approximating KL Divergence" (2020), http://joschu.net/blog/kl-approx.html;
    k3 is the GRPO penalty (DeepSeekMath, arXiv 2402.03300 eq. 4). k3 is computed as
    ``expm1(log r) - log r`` for precision near 0; it is not clamped, so a token far more likely
    under the reference than under the policy gives a large value (``r`` grows like ``exp``).
    """
    log_r = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_r
    if estimator == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown kl estimator {estimator!r}")


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cfg: PolicyLossConfig,
    ref_logprobs: Tensor | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Policy-gradient loss (PPO clip, GSPO or CISPO) with an optional KL penalty and IS weights.

    Per valid token, with ``ratio = exp(logprobs - old_logprobs)``, ``A`` the advantage, ``w`` the
    importance weights ``is_weights`` (1 when None) and ``sg`` = stop-gradient:

        PPO  (token,    arXiv 1707.06347):  pg = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
        GSPO (sequence, arXiv 2507.18071):  s_i   = exp(mean_{t in i} (logprobs - old_logprobs))
                                            s_i,t = sg(s_i) * exp(logprobs_t - sg(logprobs_t))
                                            pg = -min(s_i,t * A, clip(s_i,t, 1 - eps_low, 1 + eps_high) * A)
        CISPO (arXiv 2506.13585):           pg = -sg(min(ratio, 1 + eps_high)) * A * logprobs
        loss = aggregate(w * pg + kl_coef * kl_estimate(logprobs, ref_logprobs), mask, cfg.aggregation)

    ``old_logprobs`` are those of the policy that sampled the tokens, so the ratio is both PPO's
    trust-region ratio and the importance weight for stale samples. PPO: where the clip is inactive
    the gradient w.r.t. a token's logprob is ``-w * A * ratio / N`` (N from the aggregation); where
    it is active (A > 0 and ratio > 1 + eps_high, or A < 0 and ratio < 1 - eps_low) it is 0, so
    clipped tokens stop learning. GSPO clips whole sequences: s_i,t has the value s_i and the
    gradient ``s_i * grad logprobs_t``, so an unclipped token gets ``-w * A * s_i / N`` and every
    token of a clipped sequence gets 0 (with per-sequence A, the GSPO-token objective equals GSPO's
    with aggregation="sequence_mean"). CISPO clips the weight instead of the update: every token
    keeps the gradient ``-w * A * min(ratio, 1 + eps_high) / N`` (no lower clip), so rare tokens whose
    ratio jumps still learn, with a bounded step. DAPO's clip-higher is ``clip_range_high`` >
    ``clip_range``.

    ``is_weights`` (detached, [B, T] or [B]) scale the policy-gradient term only, not the KL; they
    carry the correction for the mismatch between the sampler and the trainer, see
    :func:`rft_learner.rl.correction.rollout_correction`.

    Args: logprobs [B, T] from the current policy (requires grad); old_logprobs [B, T]; advantages
    [B] (broadcast over tokens) or [B, T] (GSPO expects one per sequence); mask [B, T];
    ref_logprobs [B, T] from the frozen reference, required when cfg.kl_coef > 0.

    Metrics (token means over valid tokens): loss, policy_loss (aggregated ``w * pg`` term), kl (if
    a reference is given), approx_kl (k3 of the sampling policy vs the current one, per token:
    mean((ratio - 1) - log ratio)), clip_fraction (PPO: share of tokens whose gradient the clip
    zeroes, for GSPO the tokens of clipped sequences; CleanRL's clipfrac counts |ratio - 1| > eps
    instead; CISPO: share of tokens with ratio > 1 + eps_high), ratio_mean and ratio_max (per
    token; GSPO: of s_i over the sequences with valid tokens).
    """
    if cfg.kl_coef > 0 and ref_logprobs is None:
        raise ValueError("cfg.kl_coef > 0 needs ref_logprobs")
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    eps_low = cfg.clip_range
    eps_high = cfg.clip_range if cfg.clip_range_high is None else cfg.clip_range_high
    valid = mask.bool()
    zero = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)

    # selected, not subtracted: a nan old logprob at padding would otherwise reach the gradient through exp's backward
    log_ratio = torch.where(valid, logprobs - old_logprobs, zero)
    ratio = torch.exp(log_ratio)
    seq_ratio = None
    if cfg.loss_type == "cispo":
        weight = ratio.clamp(max=1.0 + eps_high).detach()
        # nan/inf logprobs at masked positions would survive the multiplication; select them away
        pg = -weight * advantages * torch.where(valid, logprobs, zero)
        clip_active = ratio > 1.0 + eps_high
    else:
        if cfg.ratio_level == "sequence":
            seq_ratio = torch.exp(masked_mean(log_ratio, mask, dim=-1)).detach()
            # value 1, gradient grad logprobs_t; where() keeps an inf at a masked position from giving inf - inf
            unit = torch.exp(torch.where(valid, logprobs - logprobs.detach(), zero))
            policy_ratio = seq_ratio.unsqueeze(-1) * unit
        else:
            policy_ratio = ratio
        unclipped = policy_ratio * advantages
        clipped = torch.clamp(policy_ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
        pg = -torch.minimum(unclipped, clipped)
        clip_active = clipped < unclipped
    if is_weights is not None:
        w = is_weights.detach()
        if w.dim() == 1:
            w = w.unsqueeze(-1)
        pg = pg * torch.where(valid, w, torch.ones((), dtype=w.dtype, device=w.device))
    per_token = pg
    kl = None
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, cfg.kl_estimator)
        if cfg.kl_coef > 0:
            per_token = pg + cfg.kl_coef * kl
    loss = aggregate(per_token, mask, cfg.aggregation, cfg.max_tokens)

    # ------------------------------------------------------------ diagnostics
    with torch.no_grad():
        if seq_ratio is None:
            reported, reported_mask = ratio, valid
        else:
            reported, reported_mask = seq_ratio, valid.any(dim=-1)
        metrics = {
            "loss": loss.item(),
            "policy_loss": aggregate(pg, mask, cfg.aggregation, cfg.max_tokens).item(),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask).item(),
            "clip_fraction": masked_mean(clip_active.to(ratio.dtype), mask).item(),
            "ratio_mean": masked_mean(reported, reported_mask).item(),
            "ratio_max": reported[reported_mask].max().item() if reported_mask.any() else 0.0,
        }
        if kl is not None:
            metrics["kl"] = masked_mean(kl, mask).item()
    return loss, metrics


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float | None
) -> tuple[Tensor, dict[str, float]]:
    """Clipped value loss, masked token mean (PPO, arXiv 1707.06347; as in CleanRL's ppo.py).

        v_clip = old_values + clip(values - old_values, -clip_range, clip_range)
        loss   = mean_valid 0.5 * max((values - R)^2, (v_clip - R)^2)      (clip_range=None: 0.5 (v - R)^2)

    Metrics: value_loss; value_clip_fraction (share of tokens where the clipped term is larger, so
    its gradient is 0); explained_variance = 1 - Var(R - V) / Var(R) over valid tokens, population
    variances, V = the ``values`` passed (the current predictions); nan when Var(R) = 0.
    """
    unclipped = (values - returns) ** 2
    if clip_range is None:
        per_token = 0.5 * unclipped
        clip_active = torch.zeros_like(unclipped, dtype=torch.bool)
    else:
        v_clip = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
        clipped = (v_clip - returns) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        clip_active = clipped > unclipped
    loss = masked_mean(per_token, mask)

    # ------------------------------------------------------------ diagnostics
    with torch.no_grad():
        metrics = {
            "value_loss": loss.item(),
            "value_clip_fraction": masked_mean(clip_active.to(values.dtype), mask).item(),
            "explained_variance": explained_variance(values, returns, mask),
        }
    return loss, metrics


@torch.no_grad()
def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """``1 - Var(R - V) / Var(R)`` over the masked positions, population variances; nan when Var(R) = 0.

    Not a mean of per-token terms, so a batch's value cannot be combined from its parts' values:
    callers that split a batch gather the valid values and returns and call this once.
    """
    var_returns = _masked_var(returns, mask).item()
    var_residual = _masked_var(returns - values, mask).item()
    return float("nan") if var_returns == 0 else 1.0 - var_residual / var_returns


# ---------------------------------------------------------------- token-level helpers


def _float32(logits: Tensor) -> Tensor:
    """Half-precision logits are upcast: log-softmax over a large vocabulary loses too much in bf16."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """``log softmax(logits)[..., token]`` for each position: [B, T, V], [B, T] -> [B, T].

    Computed as ``logits[token] - logsumexp(logits)`` (no [B, T, V] log-softmax copy), in float32
    for half-precision inputs. Logits must already be aligned with the tokens they score: logits at
    position t predict token t + 1, so the caller passes ``logits[:, :-1]`` and
    ``input_ids[:, 1:]``. Every entry of ``tokens`` must be a valid id (use the pad id, not -100,
    at padded positions). To compare with sampler logprobs taken at temperature tau, divide the
    logits by tau first.
    """
    logits = _float32(logits)
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the softmax at each position, [..., V] -> [...].

    ``H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v`` with ``z = logits - max(logits)``
    (the shift leaves H unchanged and avoids cancelling two large numbers; a -inf logit has
    p_v = 0 and contributes 0). Float32 for half-precision inputs.
    """
    logits = _float32(logits)
    logits = logits - logits.amax(dim=-1, keepdim=True).detach()
    p = torch.softmax(logits, dim=-1)
    p_z = torch.where(p > 0, p * logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.logsumexp(logits, dim=-1) - p_z.sum(-1)


# ---------------------------------------------------------------- the same, a block of positions at a time
#
# A [B, T, V] float32 copy of the logits is the largest tensor of an update step (256 sequences x
# 1k tokens x 152k vocabulary is ~150 GB). These helpers upcast one block of positions at a time,
# in the forward pass and again in the backward pass, so at most one float32 block exists at once.


def logit_blocks(rows: int, positions: int, block: int) -> list[tuple[slice, slice]]:
    """(rows, positions) slices that tile a [rows, positions] grid in blocks of at most ``block``
    positions: whole rows together while they fit, else pieces of one row."""
    cols = max(1, min(positions, block))
    rows_per_block = max(1, block // cols)
    return [
        (slice(r, r + rows_per_block), slice(c, c + cols))
        for r in range(0, rows, rows_per_block)
        for c in range(0, positions, cols)
    ]


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """:func:`token_logprobs` with a hand-written backward that recomputes the softmax block by
    block. Autograd through the plain function would keep every upcast block for the backward
    pass (``logsumexp`` saves its input), i.e. the whole float32 copy again; here only the logits
    as given and the [B, T] log-normalisers are kept."""

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, block: int) -> Tensor:
        out_dtype = torch.promote_types(logits.dtype, torch.float32)
        out = torch.empty(tokens.shape, dtype=out_dtype, device=logits.device)
        lse = torch.empty_like(out)
        for rows, cols in logit_blocks(tokens.shape[0], tokens.shape[1], block):
            part = _float32(logits[rows, cols])
            lse[rows, cols] = torch.logsumexp(part, dim=-1)
            out[rows, cols] = part.gather(-1, tokens[rows, cols].unsqueeze(-1)).squeeze(-1) - lse[rows, cols]
        ctx.save_for_backward(logits, tokens, lse)
        ctx.block = block
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, None, None]:
        """d(z_token - logsumexp z)/dz = onehot(token) - softmax(z), times the incoming gradient."""
        logits, tokens, lse = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        grad = torch.empty_like(logits)
        for rows, cols in logit_blocks(tokens.shape[0], tokens.shape[1], ctx.block):
            g = grad_out[rows, cols].unsqueeze(-1)
            part = -torch.exp(_float32(logits[rows, cols]) - lse[rows, cols].unsqueeze(-1)) * g
            part.scatter_add_(-1, tokens[rows, cols].unsqueeze(-1), g)
            grad[rows, cols] = part
        return grad, None, None


def chunked_token_logprobs(logits: Tensor, tokens: Tensor, block: int) -> Tensor:
    """:func:`token_logprobs` of [B, T, V] logits, upcasting at most ``block`` positions at a time
    (forward and backward); equal to it within float rounding, and differentiable."""
    if logits.dim() != 3 or tokens.shape != logits.shape[:2]:
        raise ValueError(f"need logits [B, T, V] and tokens [B, T], got {tuple(logits.shape)}, {tuple(tokens.shape)}")
    return _ChunkedTokenLogprobs.apply(logits, tokens, block)


@torch.no_grad()
def chunked_entropy(logits: Tensor, block: int) -> Tensor:
    """:func:`entropy_from_logits` of [B, T, V] logits, at most ``block`` positions at a time;
    detached (entropy is a diagnostic here, never a loss term)."""
    out = torch.empty(logits.shape[:2], dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
    for rows, cols in logit_blocks(logits.shape[0], logits.shape[1], block):
        out[rows, cols] = entropy_from_logits(logits[rows, cols])
    return out


def sft_loss(logits: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Supervised fine-tuning loss: mean token cross-entropy over the masked positions.

        loss = sum_t m_t * (-log p(labels_t | logits_t)) / sum_t m_t

    ``logits`` [B, T, V] must already be aligned with ``labels`` [B, T]: logits at position t
    predict token t + 1, so pass ``logits[:, :-1]``, ``labels = input_ids[:, 1:]`` and
    ``mask = answer_mask[:, 1:]`` (1 on the reference answer's tokens, 0 on prompt and padding).
    Labels at masked-out positions may be anything (e.g. -100).
    Metrics: loss, num_tokens.
    """
    labels = torch.where(mask.bool(), labels, torch.zeros_like(labels))
    return sft_loss_from_logprobs(token_logprobs(logits, labels), mask)


def sft_loss_from_logprobs(logprobs: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """:func:`sft_loss` from the labels' log-probs [B, T] (e.g. :func:`chunked_token_logprobs`'s),
    for callers that never hold the whole [B, T, V] logits in float32."""
    loss = masked_mean(-logprobs, mask)
    with torch.no_grad():
        metrics = {"loss": loss.item(), "num_tokens": float(mask.bool().sum().item())}
    return loss, metrics
