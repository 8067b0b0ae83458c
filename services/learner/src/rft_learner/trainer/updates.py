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
`ReinforcementParams`. With one pass and one minibatch, in one micro-batch, the "old"
log-probs are the training forward pass's own, detached, so no extra forward pass is spent.

Micro-batches (`micro_batch_tokens` > 0). The memory of a forward/backward pass grows with
rows x longest sequence: activations, and logits of rows x longest x vocabulary. Each
minibatch is therefore cut into micro-batches of consecutive sequences (trainer.micro_batches)
whose padded size, rows x their own longest sequence, stays within the budget; each is cut
to its own width, runs forward and backward, and the gradients accumulate until the one
optimizer step of the minibatch. They are padded rather than packed (several sequences
concatenated in one row) because padding works with any Hugging Face model and attention
implementation, where packing needs per-sequence position ids and a varlen attention kernel.

The gradient is the minibatch's exactly. A minibatch's loss is a mean over some unit, and
the sum of its micro-batches' losses, each scaled by its share of that unit, equals it:

    token_mean     L = sum_m (tokens_m / tokens) L_m
    sequence_mean  L = sum_m (sequences_m / sequences) L_m      (sequences that have tokens)
    constant       L = sum_m (rows_m / rows) L_m                 (Dr. GRPO: sum / (rows x max_tokens))

and PPO's value loss, a token mean, takes the token share. Under data parallelism the
rank's scale (DataParallel.loss_scale, computed once per minibatch so every rank makes the
same collective calls whatever its number of micro-batches) multiplies these shares, and
gradients are averaged once, before the step. The metrics of a minibatch combine the same
way (trainer.micro_batches.combine_metrics): a token mean weighted by token shares, the
policy loss by its aggregation's shares, ratio_max the max, explained variance recomputed
over the whole minibatch; they equal those of the minibatch in one piece.

The "old" and reference log-probs are taken without autograd, micro-batch by micro-batch,
and stitched back into [B, T] tensors (see `reuses_training_forward` for why several
micro-batches always take this extra pass). Within a micro-batch the logits are never
upcast to float32 whole: `policy.forward` does it a block of positions at a time.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch.distributed.tensor import DTensor

from rft_learner.hparams import ReinforcementParams
from rft_learner.rl import (
    PolicyLossConfig,
    explained_variance,
    gae,
    group_advantages,
    kl_estimate,
    masked_mean,
    policy_loss,
    rloo_advantages,
    rollout_correction,
    sft_loss_from_logprobs,
    terminal_rewards,
    value_loss,
    whiten,
)
from rft_learner.trainer.distributed import DataParallel
from rft_learner.trainer.micro_batches import (
    Rows,
    aggregation_units,
    aligned_runs,
    combine_metrics,
    forward_in_micro_batches,
    sequence_lengths,
    shares,
    take,
)
from rft_learner.trainer.policy import (
    ForwardOutput,
    SequenceBatch,
    ValueHead,
    build_sequence_batch,
    device_of,
    forward,
    forward_shared_prompts,
    prompt_runs,
    shares_prompts,
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
    masks: list[list[int] | None] | None = None
    """Per completion, its episode token mask (1 sampled, 0 tool-result tokens), or None
    when every token was sampled; None: no completion is an episode."""


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
    masks: list[list[int] | None] = dataclasses.field(default_factory=list)


def _flatten(groups: Sequence[Group], params: ReinforcementParams) -> _Samples:
    estimator = params.defaults.advantage
    advantages = group_relative_advantages(groups, estimator) if estimator != "gae" else None
    samples, flat = _Samples(), 0
    for group in groups:
        masks = group.masks or [None] * len(group.completions)
        for completion, lp, reward, mask in zip(group.completions, group.logprobs, group.rewards, masks, strict=True):
            if reward is not None and completion and (mask is None or any(mask)):
                samples.prompts.append(group.prompt_token_ids)
                samples.completions.append(completion)
                samples.logprobs.append(lp)
                samples.masks.append(mask)
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

    def take(self, rows: Rows, width: int) -> _Targets:
        """The rows, [B, T] tensors cut to `width` positions (as micro_batches.take cuts a batch)."""
        # (not dataclasses.astuple: it deep-copies every tensor)
        return _Targets(*(_rows(getattr(self, f.name), rows, width) for f in dataclasses.fields(self)))


def _rows(tensor: torch.Tensor | None, rows: Rows, width: int) -> torch.Tensor | None:
    if tensor is None:
        return None
    return tensor[rows, :width] if tensor.dim() == 2 else tensor[rows]


def reuses_training_forward(params: ReinforcementParams, micro_batch_count: int) -> bool:
    """With a single optimizer step the policy before the update is the one the training
    forward pass computes: its log-probs, detached, are the "old" ones.

    Only when the whole batch is one micro-batch: PPO's GAE and advantage whitening, the
    rollout correction and its metrics need the old values of the whole batch before the
    first loss, and the training forward passes of several micro-batches come one by one.
    """
    return params.ppo_epochs * params.num_minibatches == 1 and micro_batch_count == 1


def reference_logprobs(
    model: torch.nn.Module,
    reference: torch.nn.Module | None,
    batch: SequenceBatch,
    micro_batch_tokens: int = 0,
    data_parallel: DataParallel | None = None,
) -> torch.Tensor:
    """Token logprobs under the KL reference: a frozen copy, or (reference None) a LoRA
    model's own base with its adapter switched off. No autograd, micro-batch by micro-batch."""
    if reference is not None:
        return forward_in_micro_batches(reference, batch, None, micro_batch_tokens, data_parallel).logprobs
    with model.disable_adapter():
        return forward_in_micro_batches(model, batch, None, micro_batch_tokens, data_parallel).logprobs


def _clip_gradients(trainable: list[torch.nn.Parameter]) -> float:
    """Clip to MAX_GRAD_NORM; the total norm before clipping (over every rank's shards under FSDP)."""
    norm = torch.nn.utils.clip_grad_norm_(trainable, MAX_GRAD_NORM)
    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def _discarded_pass(out: ForwardOutput) -> None:
    """The backward FSDP's collectives need from a padding pass, adding nothing."""
    zero = out.logprobs.sum() * 0.0
    if out.values is not None:
        zero = zero + out.values.sum() * 0.0
    zero.backward()


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
    micro_batch_tokens: int = 0,
) -> dict[str, float]:
    """`ppo_epochs` x `num_minibatches` policy-gradient steps on a batch of graded groups.

    `reference` None with kl_coef > 0 means a LoRA model's base (adapter off). Under data
    parallelism each rank trains on its share of the groups and gradients are averaged
    (see trainer.distributed); group-relative advantages stay exact because a group never
    spans ranks. PPO's advantage whitening uses per-rank statistics. `micro_batch_tokens`
    bounds rows x longest sequence of each forward pass (0: no bound; see the module doc).
    """
    if data_parallel is not None:
        groups = data_parallel.shard(groups)
    samples = _flatten(groups, params)
    # Every rank skips together when one has nothing to train on (its groups' samples all
    # failed grading or came back empty): the ranks' collectives must stay in step.
    if data_parallel is not None and data_parallel.agree_on_minimum(len(samples.completions)) == 0:
        return {"skipped_steps": 1.0}
    if not samples.completions:
        return {"skipped_steps": 1.0}
    batch = build_sequence_batch(samples.prompts, samples.completions, samples.logprobs, pad_id, samples.masks).to(
        device_of(model)
    )
    mask = batch.action_mask
    ppo = params.algorithm == "ppo"
    ref_logprobs = None
    if params.kl_coef > 0:
        ref_logprobs = reference_logprobs(model, reference, batch, micro_batch_tokens, data_parallel)

    model.train()
    reuse = reuses_training_forward(
        params, len(aligned_runs(sequence_lengths(batch), micro_batch_tokens, data_parallel))
    )
    first: ForwardOutput | None = None
    if reuse:
        runs = prompt_runs(samples.prompts)
        if value_head is None and data_parallel is None and max(runs) > 1 and shares_prompts(model):
            prompt_lengths = [len(prompt) for prompt in samples.prompts]
            first = forward_shared_prompts(model, batch, prompt_lengths, runs)
        else:
            first = forward(model, batch, value_head)
    with torch.no_grad():
        old = first
        if old is None:
            old = forward_in_micro_batches(model, batch, value_head, micro_batch_tokens, data_parallel)
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
            token_rewards = terminal_rewards(
                torch.tensor(samples.rewards, dtype=torch.float32, device=mask.device), mask
            )
            if ref_logprobs is not None:
                token_rewards = (
                    token_rewards - params.kl_coef * kl_estimate(old_logprobs, ref_logprobs, params.kl_estimator) * mask
                )
            token_adv, returns = gae(token_rewards, old_values, mask, params.gae_gamma, params.gae_lambda)
            advantages = whiten(token_adv, mask)
        else:
            advantages = torch.tensor(samples.advantages, dtype=torch.float32, device=mask.device)
            returns = None
        metrics["advantage_abs_mean"] = float(
            masked_mean(advantages.abs(), mask) if advantages.dim() == 2 else advantages.abs().mean()
        )

    targets = _Targets(old_logprobs, old_values, advantages, returns, ref_logprobs, is_weights)
    step = _Step(model, optimizer, loss_config(params), params, value_head, data_parallel, micro_batch_tokens,
                 take(batch, slice(0, 1)))  # fmt: skip
    history: list[dict[str, float]] = []
    for _epoch in range(params.ppo_epochs):
        order = torch.randperm(batch.size) if params.num_minibatches > 1 else torch.arange(batch.size)
        for rows in torch.tensor_split(order, params.num_minibatches):
            minibatch = take(batch, rows)
            history.append(step.train(minibatch, targets.take(rows, minibatch.action_mask.shape[1]), first))
    update_metrics = _mean_metrics(history)
    if "kl" in update_metrics:  # the loss's KL is the policy's during the passes; report the pre-update one
        update_metrics.pop("kl")
    metrics.update(update_metrics)
    metrics["optimizer_steps"] = float(len(history))
    metrics["train_samples"] = float(batch.size)
    metrics["train_tokens"] = float(mask.sum())
    return metrics


@dataclasses.dataclass
class _Step:
    """One optimizer step of rl_update, over the micro-batches of a minibatch."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    cfg: PolicyLossConfig
    params: ReinforcementParams
    value_head: ValueHead | None
    data_parallel: DataParallel | None
    micro_batch_tokens: int
    padding_row: SequenceBatch
    """A row of this rank's batch, run and discarded when FSDP needs a pass from a rank whose
    minibatch is empty."""

    def train(self, batch: SequenceBatch, targets: _Targets, precomputed: ForwardOutput | None) -> dict[str, float]:
        """One optimizer step on a minibatch. `precomputed` is the whole batch's training
        forward pass, when the batch is this single minibatch of a single micro-batch. Every
        data-parallel rank takes the same number of these, empty or not, so the collectives
        line up."""
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.optimizer.zero_grad(set_to_none=True)
        whole = aggregation_units(batch.action_mask)
        p_scale, v_scale = self._data_parallel_scales(whole)
        parts, values, returns = [], [], []
        for rows, active in aligned_runs(sequence_lengths(batch), self.micro_batch_tokens, self.data_parallel):
            if not active:
                micro = take(batch, rows) if rows is not None else self.padding_row
                _discarded_pass(forward(self.model, micro, self.value_head))
                continue
            micro = take(batch, rows)
            micro_targets = targets.take(rows, micro.action_mask.shape[1])
            out = precomputed if precomputed is not None else forward(self.model, micro, self.value_head)
            parts.append(self._accumulate(micro, micro_targets, out, whole, p_scale, v_scale))
            if out.values is not None:
                assert micro_targets.returns is not None
                valid = micro.action_mask.bool()
                values.append(out.values.detach()[valid])
                returns.append(micro_targets.returns[valid])
        metrics = combine_metrics(parts)
        if values:
            values_flat, returns_flat = torch.cat(values), torch.cat(returns)
            metrics["explained_variance"] = explained_variance(values_flat, returns_flat, torch.ones_like(values_flat))
        if self.data_parallel is not None:
            self.data_parallel.average_gradients(trainable)
        metrics["grad_norm"] = _clip_gradients(trainable)
        if not math.isfinite(metrics["grad_norm"]):
            raise FloatingPointError("the gradient is not finite; lower learning_rate_multiplier")
        self.optimizer.step()
        return metrics

    def _data_parallel_scales(self, whole: dict[str, float]) -> tuple[float, float]:
        """Each rank's scale of the policy and value terms (1 without data parallelism): the
        policy term is averaged per token or per sequence (cfg.aggregation), the value term
        always per token."""
        if self.data_parallel is None:
            return 1.0, 1.0
        p_scale = self.data_parallel.loss_scale(whole[self.cfg.aggregation])
        v_scale = self.data_parallel.loss_scale(whole["token_mean"]) if self.value_head is not None else 0.0
        return p_scale, v_scale

    def _accumulate(
        self,
        micro: SequenceBatch,
        targets: _Targets,
        out: ForwardOutput,
        whole: dict[str, float],
        p_scale: float,
        v_scale: float,
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Backward of one micro-batch's loss, scaled by its shares of the minibatch; returns
        its metrics and the weight of each in the minibatch's."""
        mask, cfg = micro.action_mask, self.cfg
        share = shares(aggregation_units(mask), whole)
        p_loss, metrics = policy_loss(
            out.logprobs, targets.old_logprobs, targets.advantages, mask, cfg, targets.ref_logprobs, targets.is_weights
        )
        weights = dict.fromkeys(metrics, share["token_mean"])
        weights["policy_loss"] = share[cfg.aggregation]
        if cfg.ratio_level == "sequence":  # GSPO's ratio_mean is over sequences
            weights["ratio_mean"] = share["sequence_mean"]
        loss = share[cfg.aggregation] * p_loss
        scaled = loss * p_scale
        if self.value_head is not None:
            assert out.values is not None and targets.old_values is not None and targets.returns is not None
            clip = self.params.value_clip_range or None
            v_loss, v_metrics = value_loss(out.values, targets.old_values, targets.returns, mask, clip)
            v_metrics.pop("explained_variance")  # recomputed over the minibatch by the caller
            v_loss = share["token_mean"] * self.params.value_loss_coef * v_loss
            loss, scaled = loss + v_loss, scaled + v_loss * v_scale
            metrics.update(v_metrics)
            weights.update(dict.fromkeys(v_metrics, share["token_mean"]))
        metrics["entropy"], weights["entropy"] = float(masked_mean(out.entropy, mask)), share["token_mean"]
        metrics["loss"], weights["loss"] = float(loss.detach()), 1.0  # already scaled by its share
        if not math.isfinite(metrics["loss"]):  # before the step: weights are never written with nan
            raise FloatingPointError("the loss is not finite; lower learning_rate_multiplier")
        scaled.backward()
        return metrics, weights


def sft_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    data_parallel: DataParallel | None = None,
    micro_batch_tokens: int = 0,
) -> dict[str, float]:
    """One cross-entropy step on (prompt, target) pairs; only target tokens are learned.
    Micro-batches (`micro_batch_tokens`) take their token share of the mean, as in rl_update."""
    if data_parallel is not None:
        prompts, targets = data_parallel.shard(prompts), data_parallel.shard(targets)
    batch: SequenceBatch = build_sequence_batch(prompts, targets, None, pad_id).to(device_of(model))
    model.train()
    trainable = trainable_parameters(model)
    optimizer.zero_grad(set_to_none=True)
    whole = aggregation_units(batch.action_mask)
    scale = data_parallel.loss_scale(whole["token_mean"]) if data_parallel is not None else 1.0
    parts = []
    for rows, active in aligned_runs(sequence_lengths(batch), micro_batch_tokens, data_parallel):
        micro = take(batch, rows)
        share = shares(aggregation_units(micro.action_mask), whole)["token_mean"]
        out = forward(model, micro, with_entropy=False)
        if not active:
            _discarded_pass(out)
            continue
        loss, metrics = sft_loss_from_logprobs(out.logprobs, micro.action_mask)
        (loss * (share * scale)).backward()
        parts.append(
            ({"sft_loss": metrics["loss"], "num_tokens": metrics["num_tokens"]}, {"sft_loss": share, "num_tokens": 1.0})
        )
    if data_parallel is not None:
        data_parallel.average_gradients(trainable)
    _clip_gradients(trainable)
    optimizer.step()
    out_metrics = combine_metrics(parts)
    out_metrics["loss"] = out_metrics["sft_loss"]
    return out_metrics
