"""One optimizer step of SFT or RL: batches in, metrics out. The algorithm only shows
up in which advantage estimator and loss configuration `rl_step` picks."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from rft_learner.hparams import ReinforcementParams
from rft_learner.rl import (
    PolicyLossConfig,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    policy_loss,
    rloo_advantages,
    sft_loss,
    terminal_rewards,
    value_loss,
    whiten,
)
from rft_learner.trainer.distributed import DataParallel
from rft_learner.trainer.policy import (
    SequenceBatch,
    ValueHead,
    build_sequence_batch,
    forward,
    trainable_parameters,
)

PPO_GAMMA = 1.0
PPO_LAMBDA = 0.95
PPO_VALUE_CLIP = 0.2
PPO_VALUE_COEF = 0.1
MAX_GRAD_NORM = 1.0


@dataclasses.dataclass
class Group:
    """The graded samples of one prompt; a sample whose grading failed has reward None."""

    prompt_token_ids: list[int]
    completions: list[list[int]]
    logprobs: list[list[float]]
    rewards: list[float | None]


def group_relative_advantages(groups: Sequence[Group], algorithm: str) -> list[float | None]:
    """Per-sample advantages, estimated within each group over its graded samples."""
    out: list[float | None] = []
    for group in groups:
        valid = [r for r in group.rewards if r is not None]
        if len(valid) < 2:
            estimates = [0.0] * len(valid)
        else:
            rewards = torch.tensor([valid], dtype=torch.float64)
            if algorithm == "rloo":
                estimates = rloo_advantages(rewards)[0].tolist()
            else:
                estimates = group_advantages(rewards, scale_by_std=(algorithm == "grpo"))[0].tolist()
        it = iter(estimates)
        out.extend(None if r is None else next(it) for r in group.rewards)
    return out


def loss_config(params: ReinforcementParams) -> PolicyLossConfig:
    if params.algorithm == "dr_grpo":
        return PolicyLossConfig(
            clip_range=params.clip_range,
            kl_coef=params.kl_coef,
            kl_estimator=params.kl_estimator,
            aggregation="constant",
            max_tokens=params.max_new_tokens,
        )
    # PPO folds the KL penalty into the per-token reward (ReFT); the others add it to the loss.
    kl_coef = 0.0 if params.algorithm == "ppo" else params.kl_coef
    return PolicyLossConfig(clip_range=params.clip_range, kl_coef=kl_coef, kl_estimator=params.kl_estimator)


def reference_logprobs(model: torch.nn.Module, reference: torch.nn.Module | None, batch: SequenceBatch) -> torch.Tensor:
    """Token logprobs under the KL reference: a frozen copy, or (reference None) a LoRA
    model's own base with its adapter switched off."""
    with torch.no_grad():
        if reference is not None:
            return forward(reference, batch, with_entropy=False).logprobs
        with model.disable_adapter():
            return forward(model, batch, with_entropy=False).logprobs


def rl_step(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    groups: Sequence[Group],
    params: ReinforcementParams,
    pad_id: int,
    value_head: ValueHead | None = None,
    data_parallel: DataParallel | None = None,
) -> dict[str, float]:
    """One policy-gradient step on a batch of graded groups.

    Under data parallelism each rank trains on its share of the groups and gradients
    are averaged (see trainer.distributed); group-relative advantages stay exact
    because a group never spans ranks. PPO's advantage whitening uses per-rank
    statistics.
    """
    if data_parallel is not None:
        groups = data_parallel.shard(groups)
    prompts, completions, logprobs, rewards = [], [], [], []
    advantages = group_relative_advantages(groups, params.algorithm) if params.algorithm != "ppo" else None
    flat = 0
    kept_advantages = []
    for group in groups:
        for completion, lp, reward in zip(group.completions, group.logprobs, group.rewards, strict=True):
            if reward is not None and completion:
                prompts.append(group.prompt_token_ids)
                completions.append(completion)
                logprobs.append(lp)
                rewards.append(reward)
                if advantages is not None:
                    kept_advantages.append(advantages[flat])
            flat += 1
    if not completions:
        if data_parallel is not None:
            raise ValueError("every rank needs at least one graded sample")
        return {"skipped_steps": 1.0}
    batch = build_sequence_batch(prompts, completions, logprobs, pad_id)
    scores = torch.tensor(rewards, dtype=torch.float32)

    ref_logprobs = reference_logprobs(model, reference, batch)

    model.train()
    out = forward(model, batch, value_head)
    mask = batch.action_mask
    metrics: dict[str, float] = {}
    if params.algorithm == "ppo":
        assert value_head is not None and out.values is not None
        with torch.no_grad():
            kl_tokens = kl_estimate(out.logprobs.detach(), ref_logprobs, "k1") * mask
            token_rewards = terminal_rewards(scores, mask) - params.kl_coef * kl_tokens
            old_values = out.values.detach()
            token_adv, returns = gae(token_rewards, old_values, mask, PPO_GAMMA, PPO_LAMBDA)
            token_adv = whiten(token_adv, mask)
        loss, metrics = policy_loss(
            out.logprobs, batch.old_logprobs, token_adv, mask, loss_config(params), ref_logprobs
        )
        v_loss, v_metrics = value_loss(out.values, old_values, returns, mask, PPO_VALUE_CLIP)
        loss = loss + PPO_VALUE_COEF * v_loss
        metrics.update(v_metrics)
        metrics["kl"] = float(masked_mean(kl_tokens, mask))
    else:
        adv = torch.tensor(kept_advantages, dtype=torch.float32)
        loss, metrics = policy_loss(out.logprobs, batch.old_logprobs, adv, mask, loss_config(params), ref_logprobs)
        metrics["advantage_abs_mean"] = float(adv.abs().mean())

    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.zero_grad(set_to_none=True)
    if data_parallel is not None:
        aggregation = loss_config(params).aggregation
        units = float(mask.sum()) if aggregation == "token_mean" else float(batch.size)
        (loss * data_parallel.loss_scale(units)).backward()
        data_parallel.average_gradients(trainable)
    else:
        loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()

    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["loss"] = float(loss.detach())
    metrics["grad_norm"] = float(grad_norm)
    metrics["entropy"] = float(masked_mean(out.entropy, mask))
    metrics["train_samples"] = float(batch.size)
    metrics["train_tokens"] = float(mask.sum())
    if not math.isfinite(metrics["loss"]):
        raise FloatingPointError("the loss is not finite; lower learning_rate_multiplier")
    return metrics


def sft_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    data_parallel: DataParallel | None = None,
) -> dict[str, float]:
    """One cross-entropy step on (prompt, target) pairs; only target tokens are learned."""
    if data_parallel is not None:
        prompts, targets = data_parallel.shard(prompts), data_parallel.shard(targets)
    batch: SequenceBatch = build_sequence_batch(prompts, targets, None, pad_id)
    model.train()
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits[:, :-1]
    loss, metrics = sft_loss(logits.float(), batch.input_ids[:, 1:], batch.action_mask)
    trainable = trainable_parameters(model)
    optimizer.zero_grad(set_to_none=True)
    if data_parallel is not None:
        (loss * data_parallel.loss_scale(float(batch.action_mask.sum()))).backward()
        data_parallel.average_gradients(trainable)
    else:
        loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    optimizer.step()
    out = {k: float(v) for k, v in metrics.items()}
    out["sft_loss"] = float(loss.detach())
    return out
