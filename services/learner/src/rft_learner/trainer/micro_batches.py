"""Micro-batches: a (mini)batch cut into pieces whose padded size fits a token budget.

An update step's memory grows with rows x longest sequence (activations, and logits of
rows x longest x vocabulary). Splitting a minibatch into micro-batches, running forward
and backward on each and stepping the optimizer once (gradient accumulation) bounds it
by the budget without changing the update; see trainer.updates for the loss scaling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from rft_learner.trainer.distributed import DataParallel
from rft_learner.trainer.policy import ForwardOutput, SequenceBatch, ValueHead, forward

Rows = slice | torch.Tensor
"""Rows of a batch: a slice, or a tensor of row indices."""


def micro_batches(lengths: Sequence[int], budget: int) -> list[slice]:
    """Consecutive runs of sequences, greedily as long as rows x longest <= budget tokens.

    budget 0 means no limit (one run of everything). A sequence longer than the budget on
    its own is a run of its own: a sequence is never cut.
    """
    if not lengths:
        return []
    if budget <= 0:
        return [slice(0, len(lengths))]
    runs, start, longest = [], 0, 0
    for i, length in enumerate(lengths):
        if i > start and (i - start + 1) * max(longest, length) > budget:
            runs.append(slice(start, i))
            start, longest = i, 0
        longest = max(longest, length)
    runs.append(slice(start, len(lengths)))
    return runs


def aligned_runs(
    lengths: Sequence[int], budget: int, data_parallel: DataParallel | None
) -> list[tuple[slice | None, bool]]:
    """`micro_batches`, each with True, padded under FSDP to the largest count of any rank
    with repeats of the last run marked False (a rank runs those passes, as FSDP's
    collectives need, and discards them). A rank with no sequences gets (None, False)
    entries: the caller runs some row of its own and discards it."""
    runs: list[tuple[slice | None, bool]] = [(rows, True) for rows in micro_batches(lengths, budget)]
    if data_parallel is None or not data_parallel.sharded:
        return runs
    total = data_parallel.agree_on_count(len(runs))
    padding = runs[-1][0] if runs else None
    return runs + [(padding, False)] * (total - len(runs))


def sequence_lengths(batch: SequenceBatch) -> list[int]:
    """Tokens of each (right-padded) sequence, prompt and completion."""
    return batch.attention_mask.sum(dim=-1).tolist()


def take(batch: SequenceBatch, rows: Rows) -> SequenceBatch:
    """The rows, cut to the longest of them: the padding columns beyond it would cost memory
    and change nothing (right padding: no real token attends to them)."""
    attention = batch.attention_mask[rows]
    width = int(attention.sum(dim=-1).max()) if attention.shape[0] else 1
    return SequenceBatch(
        batch.input_ids[rows, :width], attention[:, :width], batch.action_mask[rows, : width - 1],
        batch.old_logprobs[rows, : width - 1],
    )  # fmt: skip


def stitch(parts: Sequence[tuple[Rows, torch.Tensor]], shape: torch.Size) -> torch.Tensor:
    """[B, T] from the [rows, width <= T] outputs of micro-batches; 0 at the padding."""
    out = parts[0][1].new_zeros(shape)
    for rows, part in parts:
        out[rows, : part.shape[1]] = part
    return out


def forward_in_micro_batches(
    model: torch.nn.Module,
    batch: SequenceBatch,
    value_head: ValueHead | None,
    budget: int,
    data_parallel: DataParallel | None = None,
) -> ForwardOutput:
    """`forward` without autograd, one micro-batch at a time, stitched back into [B, T]
    tensors (log-probs and values; entropy is not computed, zeros)."""
    logprobs, values = [], []
    with torch.no_grad():
        for rows, active in aligned_runs(sequence_lengths(batch), budget, data_parallel):
            out = forward(model, take(batch, rows), value_head, with_entropy=False)
            if not active:
                continue
            logprobs.append((rows, out.logprobs))
            if out.values is not None:
                values.append((rows, out.values))
    shape = batch.action_mask.shape
    stitched = stitch(logprobs, shape)
    return ForwardOutput(stitched, torch.zeros_like(stitched), stitch(values, shape) if values else None)


def aggregation_units(mask: torch.Tensor) -> dict[str, float]:
    """What each loss aggregation averages over, counted in a [B, T] action mask: tokens
    (token_mean), sequences with tokens (sequence_mean), rows (constant: B x max_tokens)."""
    valid = mask.bool()
    return {
        "token_mean": float(valid.sum()),
        "sequence_mean": float(valid.any(dim=-1).sum()),
        "constant": float(mask.shape[0]),
    }


def shares(part: Mapping[str, float], whole: Mapping[str, float]) -> dict[str, float]:
    """A micro-batch's share of its minibatch in each unit; 0 where the minibatch has none."""
    return {unit: part[unit] / whole[unit] if whole[unit] else 0.0 for unit in whole}


MAX_METRICS = frozenset({"ratio_max"})
"""Metrics that are maxima: a minibatch's is the largest of its micro-batches'."""


def combine_metrics(parts: Sequence[tuple[Mapping[str, float], Mapping[str, float]]]) -> dict[str, float]:
    """A minibatch's metrics from its micro-batches' (metrics, weights) pairs.

    Each weight is the micro-batch's share of the unit its metric averages over (tokens for a
    token mean...), so the weighted sum is the metric of the whole minibatch; MAX_METRICS take
    the max. A metric that is not a mean over one unit (explained variance) does not belong here.
    """
    out: dict[str, float] = {}
    for metrics, weights in parts:
        for name, value in metrics.items():
            if name in MAX_METRICS:
                out[name] = max(out.get(name, -math.inf), value)
            else:
                out[name] = out.get(name, 0.0) + weights[name] * value
    return out
