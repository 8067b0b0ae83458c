"""The update of one step, SFT or RL: batches in, optimizer steps taken, metrics out.

An RL update (`rl_update`) is the same for every algorithm:

1. flatten the graded groups into samples and estimate advantages (per group, or GAE
   with the value head for PPO);
2. before any optimizer step, record the trainer's log-probs of the sampled tokens (the
   "old" policy of the PPO ratio), the value head's values, and the reference's
   log-probs when a KL term is on;
3. weigh each token by the rollout correction (trainer vs sampler probabilities);
4. `ppo_epochs` passes over `num_minibatches` shuffled minibatches, one optimizer step
   each, with the algorithm's policy loss (and PPO's clipped value loss).

The algorithm only shows up in `hparams.ALGORITHM_DEFAULTS`, read here through
`ReinforcementParams`. With one pass and one minibatch the "old" log-probs are the
training forward pass's own, detached, so no extra forward pass is spent.
"""

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
    rollout_correction,
    sft_loss,
    terminal_rewards,
    value_loss,
    whiten,
)
from rft_learner.trainer.distributed import DataParallel
from rft_learner.trainer.policy import (
    ForwardOutput,
    SequenceBatch,
    ValueHead,
    build_sequence_batch,
    forward,
    trainable_parameters,
)

MAX_GRAD_NORM = 1.0


@dataclasses.dataclass
class Group:
    """The graded samples of one prompt; a sample whose grading failed has reward None."""

    prompt_token_ids: list[int]
    completions: list[list[int]]
    logprobs: list[list[float]]
    rewards: list[float | None]


def group_relative_advantages(groups: Sequence[Group], estimator: str) -> list[float | None]:
    """Per-sample advantages, estimated within each group over its graded samples.

    estimator: "group_std" (GRPO), "group_mean" (Dr. GRPO) or "leave_one_out" (RLOO).
    """
    out: list[float | None] = []
    for group in groups:
        valid = [r for r in group.rewards if r is not None]
        if len(valid) < 2:
            estimates = [0.0] * len(valid)
        else:
            rewards = torch.tensor([valid], dtype=torch.float64)
            if estimator == "leave_one_out":
                estimates = rloo_advantages(rewards)[0].tolist()
            else:
                estimates = group_advantages(rewards, scale_by_std=(estimator == "group_std"))[0].tolist()
        it = iter(estimates)
        out.extend(None if r is None else next(it) for r in group.rewards)
    return out


def loss_config(params: ReinforcementParams) -> PolicyLossConfig:
    """The policy loss of the job's algorithm. PPO folds the KL penalty into the per-token
    reward (ReFT); the others add it to the loss."""
    defaults = params.defaults
    return PolicyLossConfig(
        loss_type=defaults.loss_type,
        ratio_level=defaults.ratio_level,
        clip_range=params.resolved_clip_range,
        clip_range_high=params.resolved_clip_range_high,
        kl_coef=0.0 if params.algorithm == "ppo" else params.kl_coef,
        kl_estimator=params.kl_estimator,
        aggregation=params.resolved_aggregation,
        max_tokens=params.max_new_tokens,
    )


@dataclasses.dataclass
class _Samples:
    """The graded, non-empty samples of a batch, flat."""

    prompts: list[list[int]] = dataclasses.field(default_factory=list)
    completions: list[list[int]] = dataclasses.field(default_factory=list)
    logprobs: list[list[float]] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)
    advantages: list[float] = dataclasses.field(default_factory=list)


def _flatten(groups: Sequence[Group], params: ReinforcementParams) -> _Samples:
    estimator = params.defaults.advantage
    advantages = group_relative_advantages(groups, estimator) if estimator != "gae" else None
    samples, flat = _Samples(), 0
    for group in groups:
        for completion, lp, reward in zip(group.completions, group.logprobs, group.rewards, strict=True):
            if reward is not None and completion:
                samples.prompts.append(group.prompt_token_ids)
                samples.completions.append(completion)
                samples.logprobs.append(lp)
                samples.rewards.append(reward)
                if advantages is not None:
                    samples.advantages.append(advantages[flat])  # type: ignore[arg-type]
            flat += 1
    return samples


@dataclasses.dataclass
class _Targets:
    """What every pass over the batch compares against, fixed before the first optimizer
    step: [B, T] tensors, except advantages ([B] for group estimators)."""

    old_logprobs: torch.Tensor
    old_values: torch.Tensor | None
    advantages: torch.Tensor
    returns: torch.Tensor | None
    ref_logprobs: torch.Tensor | None
    is_weights: torch.Tensor

    def rows(self, rows: torch.Tensor) -> _Targets:
        return _Targets(*(None if t is None else t[rows] for t in dataclasses.astuple(self)))


def reuses_training_forward(params: ReinforcementParams) -> bool:
    """With a single optimizer step the policy before the update is the one the training
    forward pass computes: its log-probs, detached, are the "old" ones."""
    return params.ppo_epochs * params.num_minibatches == 1


def reference_logprobs(model: torch.nn.Module, reference: torch.nn.Module | None, batch: SequenceBatch) -> torch.Tensor:
    """Token logprobs under the KL reference: a frozen copy, or (reference None) a LoRA
    model's own base with its adapter switched off."""
    with torch.no_grad():
        if reference is not None:
            return forward(reference, batch, with_entropy=False).logprobs
        with model.disable_adapter():
            return forward(model, batch, with_entropy=False).logprobs


def _select(batch: SequenceBatch, rows: torch.Tensor) -> SequenceBatch:
    return SequenceBatch(
        batch.input_ids[rows], batch.attention_mask[rows], batch.action_mask[rows], batch.old_logprobs[rows]
    )


def _mean_metrics(history: list[dict[str, float]]) -> dict[str, float]:
    names = {name for metrics in history for name in metrics}
    out = {}
    for name in names:
        values = [m[name] for m in history if name in m and not math.isnan(m[name])]
        if name == "ratio_max":
            out[name] = max(values) if values else math.nan
        else:
            out[name] = sum(values) / len(values) if values else math.nan
    return out


def rl_update(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    groups: Sequence[Group],
    params: ReinforcementParams,
    pad_id: int,
    value_head: ValueHead | None = None,
    data_parallel: DataParallel | None = None,
) -> dict[str, float]:
    """`ppo_epochs` x `num_minibatches` policy-gradient steps on a batch of graded groups.

    `reference` None with kl_coef > 0 means a LoRA model's base (adapter off). Under data
    parallelism each rank trains on its share of the groups and gradients are averaged
    (see trainer.distributed); group-relative advantages stay exact because a group never
    spans ranks. PPO's advantage whitening uses per-rank statistics.
    """
    if data_parallel is not None:
        groups = data_parallel.shard(groups)
    samples = _flatten(groups, params)
    if not samples.completions:
        if data_parallel is not None:
            raise ValueError("every rank needs at least one graded sample")
        return {"skipped_steps": 1.0}
    batch = build_sequence_batch(samples.prompts, samples.completions, samples.logprobs, pad_id)
    mask = batch.action_mask
    ppo = params.algorithm == "ppo"
    ref_logprobs = reference_logprobs(model, reference, batch) if params.kl_coef > 0 else None

    model.train()
    first: ForwardOutput | None = forward(model, batch, value_head) if reuses_training_forward(params) else None
    with torch.no_grad():
        old = first if first is not None else forward(model, batch, value_head, with_entropy=False)
        old_logprobs = old.logprobs.detach()
        old_values = old.values.detach() if old.values is not None else None
        is_weights, metrics = rollout_correction(
            old_logprobs,
            batch.old_logprobs,
            mask,
            params.rollout_correction,
            params.rollout_correction_cap,
            params.rollout_correction_level,
        )
        if ref_logprobs is not None:
            metrics["kl"] = float(masked_mean(kl_estimate(old_logprobs, ref_logprobs, params.kl_estimator), mask))
        if ppo:
            assert old_values is not None
            token_rewards = terminal_rewards(torch.tensor(samples.rewards, dtype=torch.float32), mask)
            if ref_logprobs is not None:
                token_rewards = (
                    token_rewards - params.kl_coef * kl_estimate(old_logprobs, ref_logprobs, params.kl_estimator) * mask
                )
            token_adv, returns = gae(token_rewards, old_values, mask, params.gae_gamma, params.gae_lambda)
            advantages = whiten(token_adv, mask)
        else:
            advantages = torch.tensor(samples.advantages, dtype=torch.float32)
            returns = None
        metrics["advantage_abs_mean"] = float(
            masked_mean(advantages.abs(), mask) if advantages.dim() == 2 else advantages.abs().mean()
        )

    targets = _Targets(old_logprobs, old_values, advantages, returns, ref_logprobs, is_weights)
    cfg = loss_config(params)
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    history: list[dict[str, float]] = []
    for _epoch in range(params.ppo_epochs):
        order = torch.randperm(batch.size) if params.num_minibatches > 1 else torch.arange(batch.size)
        for rows in torch.tensor_split(order, params.num_minibatches):
            step = _Minibatch(_select(batch, rows), targets.rows(rows), first)
            history.append(step.train(model, optimizer, trainable, cfg, params, value_head, data_parallel))
    update_metrics = _mean_metrics(history)
    if "kl" in update_metrics:  # the loss's KL is the policy's during the passes; report the pre-update one
        update_metrics.pop("kl")
    metrics.update(update_metrics)
    metrics["optimizer_steps"] = float(len(history))
    metrics["train_samples"] = float(batch.size)
    metrics["train_tokens"] = float(mask.sum())
    return metrics


@dataclasses.dataclass
class _Minibatch:
    batch: SequenceBatch
    targets: _Targets
    precomputed: ForwardOutput | None
    """The whole batch's training forward pass, when there is a single pass of one minibatch."""

    def train(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        trainable: list[torch.nn.Parameter],
        cfg: PolicyLossConfig,
        params: ReinforcementParams,
        value_head: ValueHead | None,
        data_parallel: DataParallel | None,
    ) -> dict[str, float]:
        """One optimizer step. Every data-parallel rank takes the same number of these,
        empty or not, so the collectives line up."""
        optimizer.zero_grad(set_to_none=True)
        metrics: dict[str, float] = {}
        mask, targets = self.batch.action_mask, self.targets
        # The policy term is averaged per token or per sequence (cfg.aggregation), the
        # value term always per token: each gets its own data-parallel scale.
        p_loss = v_loss = None
        if self.batch.size:
            out = self.precomputed or forward(model, self.batch, value_head)
            p_loss, metrics = policy_loss(
                out.logprobs, targets.old_logprobs, targets.advantages, mask, cfg, targets.ref_logprobs,
                targets.is_weights,
            )  # fmt: skip
            total = p_loss
            if value_head is not None:
                assert out.values is not None and targets.old_values is not None and targets.returns is not None
                clip = params.value_clip_range or None
                v_loss, v_metrics = value_loss(out.values, targets.old_values, targets.returns, mask, clip)
                v_loss = params.value_loss_coef * v_loss
                total = p_loss + v_loss
                metrics.update(v_metrics)
            metrics["entropy"] = float(masked_mean(out.entropy, mask))
            metrics["loss"] = float(total.detach())
            if not math.isfinite(metrics["loss"]):  # before the step: weights are never written with nan
                raise FloatingPointError("the loss is not finite; lower learning_rate_multiplier")
        if data_parallel is not None:
            tokens = float(mask.sum())
            p_scale = data_parallel.loss_scale(tokens if cfg.aggregation == "token_mean" else float(self.batch.size))
            v_scale = data_parallel.loss_scale(tokens) if value_head is not None else 0.0
            if p_loss is not None:
                scaled = p_loss * p_scale + (v_loss * v_scale if v_loss is not None else 0.0)
                scaled.backward()
            data_parallel.average_gradients(trainable)
        elif p_loss is not None:
            (p_loss + v_loss if v_loss is not None else p_loss).backward()
        metrics["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM))
        if not math.isfinite(metrics["grad_norm"]):
            raise FloatingPointError("the gradient is not finite; lower learning_rate_multiplier")
        optimizer.step()
        return metrics


def sft_update(
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
