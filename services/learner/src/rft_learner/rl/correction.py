"""Rollout correction: importance weights for the mismatch between the sampler and the trainer.

The tokens are sampled by the inference engine (vLLM), whose log-probs differ from the trainer's
for the same weights (other kernels, other precision) and, with asynchronous rollouts, come from an
older policy version. The policy gradient is then off-policy; weighting each token by
``w = p_trainer / p_rollout`` at the sampled token, truncated or masked to bound the variance,
corrects it. The weights enter :func:`rft_learner.rl.losses.policy_loss` as ``is_weights``.
"""

from typing import Literal

import torch
from torch import Tensor

from .losses import kl_estimate, masked_mean, masked_sum

CorrectionMode = Literal["none", "tis", "mis"]


@torch.no_grad()
def rollout_correction(
    trainer_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    mode: CorrectionMode,
    cap: float = 2.0,
    level: Literal["token", "sequence"] = "token",
) -> tuple[Tensor, dict[str, float]]:
    """Importance weights [B, T] for ``w = p_trainer / p_rollout``, detached; 0 at masked positions.

    ``trainer_logprobs`` are the trainer's log-probs of the sampled tokens before the update (the
    ``old_logprobs`` of the loss), ``rollout_logprobs`` those the sampler reported. Per valid token,
    ``log w_t = trainer_logprobs_t - rollout_logprobs_t``; with ``level="sequence"``,
    ``w_i = exp(sum_{t in i} log w_t)`` (the ratio of the sequence's probabilities) is computed per
    sequence and broadcast to its tokens, so truncating or masking acts on the whole sequence.

    - ``none``: 1.
    - ``tis``: truncated IS, ``min(w, cap)`` (Yao et al. 2025, "Your Efficient RL Framework
      Secretly Brings You Off-Policy RL Training", fengyao.notion.site; truncation as in IMPALA,
      arXiv 1802.01561). Biased, but the variance stays bounded.
    - ``mis``: masked IS, ``w`` where ``1/cap <= w <= cap`` and 0 elsewhere (veRL's rollout_is
      mask mode, IcePop): tokens (or sequences) whose probabilities disagree that much drop out of
      the gradient instead of entering it with a capped weight.

    Metrics: mismatch_kl (token mean of k3 ``(r - 1) - log r`` with ``log r = log w``, an
    unbiased estimate of KL(rollout || trainer) from the rollout's samples; see
    :func:`rft_learner.rl.losses.kl_estimate`), is_weight_mean (mean of the untruncated ``w`` over
    valid tokens, per sequence weights counted once per token; may be inf at the sequence level),
    and is_truncated_fraction (tis) or is_masked_fraction (mis): the share of valid tokens whose
    weight was capped, or set to 0.
    """
    if cap <= 1:
        raise ValueError("cap must be > 1")
    if mode not in ("none", "tis", "mis"):
        raise ValueError(f"unknown rollout correction mode {mode!r}")
    if level not in ("token", "sequence"):
        raise ValueError(f"unknown rollout correction level {level!r}")
    valid = mask.bool()
    zero = torch.zeros((), dtype=trainer_logprobs.dtype, device=trainer_logprobs.device)
    log_w = torch.where(valid, trainer_logprobs - rollout_logprobs, zero)
    if level == "sequence":
        log_w = masked_sum(log_w, mask, dim=-1).unsqueeze(-1).expand_as(log_w)
    w = torch.exp(log_w)

    metrics = {
        "mismatch_kl": masked_mean(kl_estimate(rollout_logprobs, trainer_logprobs, "k3"), mask).item(),
        "is_weight_mean": masked_mean(w, mask).item(),
    }
    if mode == "none":
        weights = torch.ones_like(w)
    elif mode == "tis":
        weights = w.clamp(max=cap)
        metrics["is_truncated_fraction"] = masked_mean((w > cap).to(w.dtype), mask).item()
    else:
        keep = (w >= 1.0 / cap) & (w <= cap)
        weights = torch.where(keep, w, zero)
        metrics["is_masked_fraction"] = masked_mean((~keep).to(w.dtype), mask).item()
    return torch.where(valid, weights, zero), metrics
