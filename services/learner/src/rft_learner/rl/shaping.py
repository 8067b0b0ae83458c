"""Reward shaping and sample filtering from DAPO (Yu et al. 2025, arXiv 2503.14476)."""

from collections.abc import Sequence

import torch
from torch import Tensor


def overlong_penalty(lengths: Tensor, max_tokens: int, buffer: int, penalty: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (eq. 13), added to the reward: lengths [B] -> [B].

    With ``L_max = max_tokens`` and ``L_cache = buffer``:

        R(L) = 0                                      L <= L_max - L_cache
        R(L) = ((L_max - L_cache) - L) / L_cache * p  L_max - L_cache < L <= L_max
        R(L) = -p                                     L > L_max

    The ramp is continuous (0 at the start of the buffer, -p at L_max), so a completion is pushed
    shorter gradually instead of losing its whole reward for one token over a hard cut. A truncated
    completion has L = L_max and gets the full -p. ``buffer`` must be in 1..max_tokens; to disable
    the penalty, do not call this.
    """
    if not 1 <= buffer <= max_tokens:
        raise ValueError("buffer must be in 1..max_tokens")
    dtype = lengths.dtype if lengths.is_floating_point() else torch.get_default_dtype()
    length = lengths.to(dtype)
    start = max_tokens - buffer
    ramp = (start - length) / buffer * penalty
    zero = torch.zeros((), dtype=dtype, device=lengths.device)
    full = torch.full((), -penalty, dtype=dtype, device=lengths.device)
    return torch.where(length <= start, zero, torch.where(length <= max_tokens, ramp, full))


def informative_groups(rewards: Sequence[Sequence[float | None]], tol: float = 1e-9) -> list[bool]:
    """DAPO dynamic sampling: which groups (one prompt's samples) still carry a learning signal.

    A group is informative when at least 2 of its rewards are graded (None = ungraded, ignored) and
    they are not all equal (``max - min > tol``). Otherwise every group-relative advantage is 0 and
    the group only dilutes the batch, so DAPO drops it and samples more prompts.
    """
    flags = []
    for group in rewards:
        graded = [r for r in group if r is not None]
        flags.append(len(graded) >= 2 and max(graded) - min(graded) > tol)
    return flags
