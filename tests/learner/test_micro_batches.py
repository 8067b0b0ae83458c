"""Hand-checked tests of trainer.micro_batches: splitting a minibatch by a token budget,
cutting and stitching the pieces, and combining their metrics."""

from __future__ import annotations

import math

import pytest
import torch
from rft_learner.trainer.micro_batches import (
    aggregation_units,
    combine_metrics,
    micro_batches,
    sequence_lengths,
    shares,
    stitch,
    take,
)
from rft_learner.trainer.policy import build_sequence_batch


def test_consecutive_sequences_fill_the_budget_as_rows_times_longest() -> None:
    # [3, 5] padded is 2 x 5 = 10 <= 10; adding 2 would be 3 x 5 = 15. [2, 4] is 2 x 4 = 8.
    assert micro_batches([3, 5, 2, 4], 10) == [slice(0, 2), slice(2, 4)]
    # 3 x 4 = 12 > 8: the third sequence starts a new micro-batch even though its tokens fit.
    assert micro_batches([4, 4, 4], 8) == [slice(0, 2), slice(2, 3)]
    # A short sequence after a long one pays the long one's width: [2, 9] is 2 x 9 = 18 > 12.
    assert micro_batches([2, 9, 1], 12) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_a_sequence_longer_than_the_budget_is_a_micro_batch_of_its_own() -> None:
    assert micro_batches([12, 3, 3], 10) == [slice(0, 1), slice(1, 3)]
    assert micro_batches([3, 12, 3], 10) == [slice(0, 1), slice(1, 2), slice(2, 3)]


def test_no_budget_is_one_micro_batch_and_no_sequences_none() -> None:
    assert micro_batches([3, 5, 2], 0) == [slice(0, 3)]
    assert micro_batches([], 10) == []
    assert micro_batches([], 0) == []


@pytest.mark.parametrize("budget", [1, 5, 9, 17, 40])
def test_every_micro_batch_fits_unless_it_is_a_single_sequence(budget: int) -> None:
    lengths = [7, 2, 9, 4, 4, 1, 12, 3, 5]
    runs = micro_batches(lengths, budget)
    assert [i for run in runs for i in range(run.start, run.stop)] == list(range(len(lengths)))
    for run in runs:
        part = lengths[run]
        assert len(part) == 1 or len(part) * max(part) <= budget


def test_take_cuts_the_rows_to_their_longest_sequence() -> None:
    # lengths 3 + 2 = 5, 1 + 1 = 2, 2 + 4 = 6: the batch is 6 wide
    batch = build_sequence_batch([[1, 2, 3], [4], [5, 6]], [[7, 8], [9], [10, 11, 12, 13]], None, 0)
    assert sequence_lengths(batch) == [5, 2, 6]
    first_two = take(batch, slice(0, 2))
    assert first_two.input_ids.tolist() == [[1, 2, 3, 7, 8], [4, 9, 0, 0, 0]]
    assert first_two.action_mask.tolist() == [[0, 0, 1, 1], [1, 0, 0, 0]]
    assert first_two.attention_mask.shape == (2, 5) and first_two.old_logprobs.shape == (2, 4)
    shuffled = take(batch, torch.tensor([1, 0]))
    assert shuffled.input_ids.tolist() == [[4, 9, 0, 0, 0], [1, 2, 3, 7, 8]]
    assert take(batch, slice(1, 2)).input_ids.tolist() == [[4, 9]]


def test_stitch_puts_each_part_back_in_its_rows_padded_with_zeros() -> None:
    parts = [
        (slice(0, 2), torch.tensor([[1.0, 2.0], [3.0, 4.0]])),
        (torch.tensor([2]), torch.tensor([[5.0, 6.0, 7.0]])),
    ]
    assert stitch(parts, torch.Size([3, 4])).tolist() == [[1, 2, 0, 0], [3, 4, 0, 0], [5, 6, 7, 0]]


def test_aggregation_units_and_shares() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    whole = aggregation_units(mask)
    assert whole == {"token_mean": 3.0, "sequence_mean": 2.0, "constant": 3.0}
    part = aggregation_units(mask[:2])  # 2 tokens, 1 sequence with tokens, 2 rows
    assert shares(part, whole) == {"token_mean": 2 / 3, "sequence_mean": 1 / 2, "constant": 2 / 3}
    assert shares(part, {"token_mean": 0.0, "sequence_mean": 0.0, "constant": 0.0})["token_mean"] == 0.0


def test_combine_metrics_weighs_means_by_share_and_takes_the_max_of_maxima() -> None:
    # Token means over 1 and 3 tokens: (1 * 0.5 + 3 * 0.1) / 4 = 0.2; ratio_max the larger.
    parts = [
        ({"clip_fraction": 0.5, "ratio_max": 1.3}, {"clip_fraction": 0.25}),
        ({"clip_fraction": 0.1, "ratio_max": 1.1}, {"clip_fraction": 0.75}),
    ]
    combined = combine_metrics(parts)
    assert combined["clip_fraction"] == pytest.approx(0.2) and combined["ratio_max"] == 1.3
    assert combine_metrics([]) == {}
    assert math.isnan(combine_metrics([({"x": math.nan}, {"x": 1.0})])["x"])
