"""The maths of the learner: advantage estimators, losses, rollout correction, shaping, pass@k. Pure functions."""

from .advantages import gae, group_advantages, rloo_advantages, terminal_rewards, whiten
from .correction import rollout_correction
from .losses import (
    PolicyLossConfig,
    aggregate,
    chunked_entropy,
    chunked_token_logprobs,
    entropy_from_logits,
    explained_variance,
    kl_estimate,
    masked_mean,
    masked_sum,
    policy_loss,
    sft_loss,
    sft_loss_from_logprobs,
    token_logprobs,
    value_loss,
)
from .passk import mean_pass_at_k, pass_at_k
from .shaping import informative_groups, overlong_penalty

__all__ = [
    "PolicyLossConfig",
    "aggregate",
    "chunked_entropy",
    "chunked_token_logprobs",
    "entropy_from_logits",
    "explained_variance",
    "gae",
    "group_advantages",
    "informative_groups",
    "kl_estimate",
    "masked_mean",
    "masked_sum",
    "mean_pass_at_k",
    "overlong_penalty",
    "pass_at_k",
    "policy_loss",
    "rloo_advantages",
    "rollout_correction",
    "sft_loss",
    "sft_loss_from_logprobs",
    "terminal_rewards",
    "token_logprobs",
    "value_loss",
    "whiten",
]
