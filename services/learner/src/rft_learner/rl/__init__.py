"""The maths of the learner: advantage estimators, losses, pass@k. Pure functions of tensors."""

from .advantages import gae, group_advantages, rloo_advantages, terminal_rewards, whiten
from .losses import (
    PolicyLossConfig,
    aggregate,
    entropy_from_logits,
    kl_estimate,
    masked_mean,
    masked_sum,
    policy_loss,
    sft_loss,
    token_logprobs,
    value_loss,
)
from .passk import mean_pass_at_k, pass_at_k

__all__ = [
    "PolicyLossConfig",
    "aggregate",
    "entropy_from_logits",
    "gae",
    "group_advantages",
    "kl_estimate",
    "masked_mean",
    "masked_sum",
    "mean_pass_at_k",
    "pass_at_k",
    "policy_loss",
    "rloo_advantages",
    "sft_loss",
    "terminal_rewards",
    "token_logprobs",
    "value_loss",
    "whiten",
]
