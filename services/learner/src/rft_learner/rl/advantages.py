"""Advantage estimators: group-normalised (GRPO, Dr. GRPO), leave-one-out (RLOO), GAE (PPO).

Group estimators take sequence rewards [num_groups, group_size] (one group = the samples of one
prompt) and return one advantage per sequence, same shape; the loss broadcasts it over the tokens.
GAE works per token on [B, T] tensors. All return tensors detached from the autograd graph.
"""

import torch
from torch import Tensor

from .losses import _masked_var, masked_mean


@torch.no_grad()
def group_advantages(rewards: Tensor, scale_by_std: bool = True, eps: float = 1e-6) -> Tensor:
    """Group-relative advantages, [G, K] -> [G, K].

        GRPO     (DeepSeekMath, arXiv 2402.03300):  A_i = (r_i - mean_j r_j) / (std_j r_j + eps)
        Dr. GRPO (arXiv 2503.20783, scale_by_std=False):  A_i = r_i - mean_j r_j

    ``std`` is the population standard deviation of the group (divide by K, not K - 1), so a group
    of size 1 gets exactly 0 and a group whose rewards are all equal gets 0 up to rounding. (TRL and veRL
    use the sample std, which makes their GRPO advantages smaller by sqrt((K - 1) / K).)
    """
    centred = rewards - rewards.mean(dim=-1, keepdim=True)
    if not scale_by_std:
        return centred
    std = rewards.std(dim=-1, keepdim=True, correction=0)
    return centred / (std + eps)


@torch.no_grad()
def rloo_advantages(rewards: Tensor) -> Tensor:
    """REINFORCE leave-one-out advantages, [G, K] -> [G, K].

        A_i = r_i - 1/(K - 1) * sum_{j != i} r_j  =  K/(K - 1) * (r_i - mean_j r_j)

    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning
    from Human Feedback in LLMs", arXiv 2402.14740 (after Kool et al. 2019). K = 1 gives zeros.
    """
    k = rewards.shape[-1]
    if k == 1:
        return torch.zeros_like(rewards)
    total = rewards.sum(dim=-1, keepdim=True)
    return rewards - (total - rewards) / (k - 1)


@torch.no_grad()
def terminal_rewards(scores: Tensor, mask: Tensor) -> Tensor:
    """Place each sequence's score on its last valid token: scores [B], mask [B, T] -> [B, T].

    The ReFT reward (arXiv 2401.08967): 0 on every token but the last, which gets the grader's
    score. Rows without valid tokens get all zeros. The caller adds the per-token KL penalty
    (``-kl_coef * kl``) to the result before :func:`gae`, as ReFT does.
    """
    positions = torch.arange(1, mask.shape[-1] + 1, device=mask.device)
    last = torch.where(mask.bool(), positions, 0).amax(dim=-1) - 1  # -1 when the row is empty
    at_last = positions.unsqueeze(0) - 1 == last.unsqueeze(-1)
    return torch.where(at_last, scores.unsqueeze(-1), torch.zeros((), dtype=scores.dtype, device=scores.device))


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation per token; returns (advantages, returns), each [B, T].

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t          (the value target)

    Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", arXiv 1506.02438. Each row's valid tokens (mask 1) form one episode: after the
    last valid token V = 0 and A = 0 (no bootstrap: the completion has ended). Rows may have
    different lengths; rewards and values at masked-out positions are ignored, and the outputs are
    0 there. Masked-out positions inside a row (the tool results of a multi-turn episode) are
    skipped, not ends: t+1 above is the next valid position, so the last token of a turn
    bootstraps from the value of the next turn's first token. With gamma = lam = 1, R_t is the
    suffix sum of rewards.
    """
    valid = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    r = torch.where(valid, rewards.to(values.dtype), zero)
    v = torch.where(valid, values, zero)
    advantages = torch.zeros_like(v)
    next_value = torch.zeros_like(v[:, 0])
    next_adv = torch.zeros_like(v[:, 0])
    for t in reversed(range(v.shape[-1])):
        here = valid[:, t]
        adv = r[:, t] + gamma * next_value - v[:, t] + gamma * lam * next_adv
        advantages[:, t] = torch.where(here, adv, zero)
        next_adv = torch.where(here, adv, next_adv)
        next_value = torch.where(here, v[:, t], next_value)
    returns = torch.where(valid, advantages + v, zero)
    return advantages, returns


@torch.no_grad()
def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Masked normalisation: ``(x - mean) / sqrt(var + eps)`` over the valid positions.

    Mean and (population) variance are taken over all valid elements of the batch, as PPO
    implementations do for advantages (CleanRL ``norm_adv``; the per-batch whitening of
    Ziegler et al. 2019, arXiv 1909.08593). ``shift_mean=False`` adds the mean back (only the scale
    changes). Masked-out positions are 0 in the output.
    """
    mean = masked_mean(x, mask)
    out = (x - mean) * torch.rsqrt(_masked_var(x, mask) + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(mask.bool(), out, torch.zeros((), dtype=x.dtype, device=x.device))
