"""OpenAI-style auto hyperparameters: chosen from the dataset size and the model, with a
warning when a setting is unlikely to help."""

from __future__ import annotations

import pytest
from rft_learner.hparams import ReinforcementParams, auto_learning_rate_multiplier


def test_a_small_file_gets_the_few_shot_recipe() -> None:
    params, notes = ReinforcementParams().resolve_auto(64, 722_000, has_validation=True)
    # 64 / 16 = 4 -> at least 16 prompts per step: 4 steps per epoch, 32 epochs for 128 steps;
    # lr 0.3 * sqrt(1 / 0.722) capped at 0.3; evaluation every 128 / 16 = 8 steps, patience 4.
    assert (params.batch_size, params.n_epochs, params.learning_rate_multiplier) == (16, 32, 0.3)
    assert params.eval_interval == 8 and params.early_stopping_patience == 4
    assert params.export_checkpoint == "best"
    assert notes == [
        "auto hyperparameters for 64 examples and 0.7M parameters: batch_size 16, n_epochs 32, "
        "learning_rate_multiplier 0.3, eval_interval 8, early_stopping_patience 4"
    ]


def test_a_large_file_and_model_get_larger_batches_and_a_smaller_learning_rate() -> None:
    params, _ = ReinforcementParams().resolve_auto(1000, 100_000_000, has_validation=True)
    # 1000 / 16 = 62.5 -> 64, capped at 32: 32 steps per epoch, 4 epochs; 0.3 * sqrt(1e6 / 1e8) = 0.03.
    assert (params.batch_size, params.n_epochs, params.learning_rate_multiplier) == (32, 4, 0.03)
    assert params.eval_interval == 8 and params.early_stopping_patience == 0
    assert auto_learning_rate_multiplier(7_000_000_000) == 0.005
    # A file smaller than 16 lines gets a batch no larger than itself.
    assert ReinforcementParams().resolve_auto(10, 722_000, has_validation=True)[0].batch_size == 8


def test_what_the_user_sets_is_kept_and_risky_settings_are_warned_about() -> None:
    # The case that lost 12 points with no warning: 64 lines, batch 16, 1 epoch, the full learning rate.
    given = ReinforcementParams(batch_size=16, n_epochs=1, learning_rate_multiplier=1.0, eval_interval=0)
    params, notes = given.resolve_auto(64, 722_000, has_validation=False)
    assert (params.batch_size, params.n_epochs, params.learning_rate_multiplier) == (16, 1, 1.0)
    assert params.early_stopping_patience == 0  # no validation file to stop on
    assert any(n.startswith("only 4 RL steps") for n in notes), notes
    assert any("learning_rate_multiplier 1 is 3x the auto value (0.3)" in n for n in notes), notes
    assert any(n.startswith("no validation file") for n in notes), notes


def test_minibatches_beyond_the_auto_batch_size_are_refused() -> None:
    with pytest.raises(ValueError, match=r"num_minibatches \(32\) must be at most batch_size \(16\)"):
        ReinforcementParams(num_minibatches=32).resolve_auto(64, 722_000, has_validation=True)


def test_each_algorithm_brings_its_own_defaults_and_what_the_user_sets_wins() -> None:
    assert ReinforcementParams().kl_coef == 0.02
    assert ReinforcementParams(algorithm="dapo").kl_coef == 0.0  # DAPO, GSPO, CISPO drop the KL term
    assert ReinforcementParams(algorithm="gspo", kl_coef=0.1).kl_coef == 0.1
    dapo = ReinforcementParams(algorithm="dapo")
    assert (dapo.resolved_clip_range, dapo.resolved_clip_range_high, dapo.resolved_dynamic_sampling) == (
        0.2,
        0.28,
        True,
    )
    assert dapo.resolved_overlong_buffer == 16  # a quarter of max_new_tokens 64
    gspo = ReinforcementParams(algorithm="gspo")
    assert (gspo.resolved_clip_range, gspo.resolved_clip_range_high, gspo.resolved_aggregation) == (
        3e-4,
        4e-4,
        "sequence_mean",
    )
    # A user's clip_range is symmetric unless the algorithm is about clipping higher.
    assert ReinforcementParams(algorithm="gspo", clip_range=0.2).resolved_clip_range_high == 0.2
    assert ReinforcementParams(algorithm="dapo", clip_range=0.1).resolved_clip_range_high == 0.28
