"""A job from start (or its last checkpoint) to the exported model.

    base evaluation -> SFT warm-up (optional) -> warm-up evaluation -> RL steps
    (trainer.rl_step: collect -> grade -> build batch -> update -> sync -> record) with
    evaluation and a checkpoint every eval_interval, checkpoints every
    checkpoint_interval, early stopping -> final evaluation -> export (best or last).

Torch work runs in a worker thread; this coroutine only orchestrates, so the learner
keeps answering RPCs while a job trains. Control (pause / cancel) is honoured between
steps; pause writes a checkpoint first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import pathlib
import shutil
import time
from collections.abc import Callable
from typing import Any, Protocol

import torch
from google.protobuf import json_format
from rft.learner.v1 import fine_tuning_pb2
from rft.rollout.v1 import rollout_pb2

from rft_learner import hparams
from rft_learner.remote import GraderClient, RolloutPool, resolve_addresses
from rft_learner.trainer import checkpoint as ckpt
from rft_learner.trainer import lora
from rft_learner.trainer.data import DataCursor, Example, load_examples, reference_answer, steps_per_epoch
from rft_learner.trainer.devices import CPU_FP32, Placement
from rft_learner.trainer.evaluate import evaluate
from rft_learner.trainer.policy import ValueHead, load_model, load_tokenizer
from rft_learner.trainer.ranks import Updater
from rft_learner.trainer.rl_step import Collector, JobFailure, RLStepper, episode_params, job_tenant
from rft_learner.weight_sync import STREAM, WeightSyncSettings

log = logging.getLogger(__name__)

INFO, WARNING, ERROR = (
    fine_tuning_pb2.JOB_EVENT_LEVEL_INFO,
    fine_tuning_pb2.JOB_EVENT_LEVEL_WARNING,
    fine_tuning_pb2.JOB_EVENT_LEVEL_ERROR,
)


class Stopped(Exception):
    """The user paused or cancelled the job."""


class JobControl(Protocol):
    """What the loop needs from the job manager."""

    job_id: str

    def event(self, level: int, message: str) -> None: ...
    def metrics(self, step: int, values: dict[str, float]) -> None: ...
    def progress(self, **fields: Any) -> None: ...
    def checkpointed(self, step: int, path: pathlib.Path, metrics: dict[str, float]) -> None: ...
    def stop_requested(self) -> str | None: ...
    def truncate_metrics_after(self, step: int) -> None: ...
    def file_path(self, file_id: str) -> pathlib.Path: ...


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    """Service-level settings a job runs with (from LearnerConfig)."""

    data_dir: pathlib.Path
    rollout_addresses: str
    """'host:port,...' or 'dns:///service:port', resolved at every job start so replicas can come and go."""
    grader_address: str
    checkpoint_interval: int
    rollout_token: str = ""
    grader_token: str = ""
    tls_ca_file: str = ""
    remote_patience_seconds: float = 600.0
    trainer_ranks: int = 1
    placement: Placement = CPU_FP32
    """Device and precision of the trainer's models (--device, --precision, resolved)."""
    micro_batch_tokens: int = 0
    """Padded tokens per forward/backward pass; 0 = a whole minibatch at once."""
    trainer_sharding: str = "none"
    """"fsdp": shard model, reference and value head over the trainer ranks (not LoRA jobs)."""
    weight_sync: WeightSyncSettings = STREAM
    """How full weights reach the replicas (--weight-sync*)."""


def grader_client(
    grader_cfg: fine_tuning_pb2.GraderConfig, settings: TrainerSettings, patience_seconds: float
) -> GraderClient:
    """A client of the job's grader: its own service address, or the learner's default."""
    spec = json_format.MessageToDict(grader_cfg.spec) if grader_cfg.HasField("spec") else None
    address = grader_cfg.service_address or settings.grader_address
    return GraderClient(
        address,
        grader_cfg.tenant or "default",
        spec=spec,
        grader_id=grader_cfg.grader_id,
        # The learner's grader token is for the configured grader only: a service a job
        # names gets no credential of ours.
        token=settings.grader_token if address == settings.grader_address else "",
        tls_ca_file=settings.tls_ca_file,
        patience_seconds=patience_seconds,
    )


def rollout_pool(settings: TrainerSettings, patience_seconds: float) -> RolloutPool:
    """Every rollout replica the addresses resolve to now."""
    return RolloutPool(
        resolve_addresses(settings.rollout_addresses),
        token=settings.rollout_token,
        tls_ca_file=settings.tls_ca_file,
        patience_seconds=patience_seconds,
        weight_sync=settings.weight_sync,
        trainer_on_cuda=settings.placement.device.type == "cuda",
    )


class JobRun:
    def __init__(
        self, request: fine_tuning_pb2.CreateJobRequest, seed: int, ctl: JobControl, settings: TrainerSettings
    ):
        self.request = request
        self.seed = seed
        self.ctl = ctl
        self.settings = settings
        self.job_dir = settings.data_dir / "jobs" / ctl.job_id
        self.ckpt_root = self.job_dir / "checkpoints"
        # The SFT warm-up's result (the RL reference, and a LoRA policy's base), kept for resumes.
        self.reference_dir = self.job_dir / "reference"
        self.latest_eval: dict[str, float] = {}
        # The evaluated checkpoint with the highest valid_reward_mean: {"step", "metrics"}.
        self.best: dict[str, Any] | None = None
        self.evals_since_best = 0
        method = request.method
        self.lora = (
            hparams.supervised_params(method.supervised)
            if method.HasField("supervised")
            else hparams.reinforcement_params(method.reinforcement)
        ).lora

    # -- plumbing ---------------------------------------------------------------
    async def _in_thread(self, fn: Callable, *args):
        return await asyncio.to_thread(fn, *args)

    def _check_control(self) -> None:
        if request := self.ctl.stop_requested():
            raise Stopped(request)

    async def _save(
        self,
        step: int,
        state: dict[str, Any],
        optimizer: torch.optim.Optimizer,
        value_head: ValueHead | None = None,
    ) -> None:
        """Write a checkpoint in a worker thread: a large model takes seconds to save (and
        under FSDP its shards are gathered first); the learner keeps answering meanwhile."""

        def save() -> pathlib.Path:
            weights, head, optimizer_state = self.updater.trainer_state(self.model, value_head, optimizer)
            full = {**state, "optimizer": optimizer_state, "value_head": head, "best": self.best,
                    "evals_since_best": self.evals_since_best,
                    "optimizer_layout": optimizer_layout(self.updater.sharded)}  # fmt: skip
            sharded_weights = weights if self.updater.sharded else None
            return ckpt.save_checkpoint(self.ckpt_root, step, self.model, self.tokenizer, full, sharded_weights)

        path = await self._in_thread(save)
        self.ctl.checkpointed(step, path, dict(self.latest_eval))

    def _whole_weights(self) -> dict[str, torch.Tensor] | None:
        """The policy's weights gathered from the FSDP shards (blocking, collective), or None
        when the model holds them whole."""
        return self.updater.weights(self.model) if self.updater.sharded else None

    # -- the job -----------------------------------------------------------------
    async def run(self) -> str:
        """Train to the end; returns the exported model directory."""
        settings = self.settings
        self.updater = Updater(
            settings.trainer_ranks, settings.micro_batch_tokens, settings.placement, settings.trainer_sharding
        )
        await self._in_thread(self.updater.start)
        budget = (
            f"micro-batches of at most {settings.micro_batch_tokens} tokens"
            if settings.micro_batch_tokens
            else "whole minibatches"
        )
        self.ctl.event(INFO, f"training on {settings.placement.describe()}, {budget}")
        if settings.trainer_ranks > 1:
            sharded = " with FSDP-sharded models" if settings.trainer_sharding == "fsdp" and self.lora is None else ""
            self.ctl.event(INFO, f"update steps run data-parallel on {settings.trainer_ranks} trainer ranks{sharded}")
        try:
            return await self._run()
        finally:
            await self._in_thread(self.updater.close)

    async def _run(self) -> str:
        torch.manual_seed(self.seed)
        method = self.request.method
        train = load_examples(self.ctl.file_path(self.request.training_file))
        valid = load_examples(self.ctl.file_path(self.request.validation_file)) if self.request.validation_file else []
        self.tokenizer = await self._in_thread(load_tokenizer, self.request.model)
        latest, state, unreadable = await self._in_thread(ckpt.latest_readable, self.ckpt_root)
        for note in unreadable:  # a torn write or a bad disk: resume from the newest checkpoint that loads
            self.ctl.event(WARNING, note)
        # Metrics past the checkpoint come from a run that died after it; this run records those steps again.
        self.ctl.truncate_metrics_after(state["step"] if latest else -1)
        self.model = await self._in_thread(self._load_policy, latest, state)
        if latest:
            ckpt.set_rng_state(state["rng"])
            self.best, self.evals_since_best = state.get("best"), state.get("evals_since_best", 0)
            self.latest_eval = state.get("latest_eval", {})
            self.ctl.event(INFO, f"resuming from checkpoint at step {state['step']}")

        if method.HasField("supervised"):
            params = hparams.supervised_params(method.supervised)
            self._check_ranks(params.batch_size)
            sft_steps = params.n_epochs * steps_per_epoch(len(train), params.batch_size)
            self.ctl.progress(total_steps=sft_steps)
            await self._sft(
                train, params.answer_field, params.batch_size, params.learning_rate_multiplier, sft_steps, state
            )
            return await self._export(None, sft_steps)

        params = hparams.reinforcement_params(method.reinforcement)
        n_params = sum(p.numel() for p in self.model.parameters())
        try:  # CreateJob stored the auto values it chose; this only fills jobs created before it did
            params, _ = params.resolve_auto(len(train), n_params, bool(valid))
        except ValueError as exc:
            raise JobFailure("invalid_hyperparameters", str(exc)) from exc
        self._check_ranks(params.batch_size)
        sft_steps = params.sft_warmup_epochs * steps_per_epoch(len(train), params.batch_size)
        rl_steps = params.n_epochs * steps_per_epoch(len(train), params.batch_size)
        self.ctl.progress(total_steps=sft_steps + rl_steps)
        settings = self.settings
        grader = grader_client(method.reinforcement.grader, settings, settings.remote_patience_seconds)
        pool = rollout_pool(settings, settings.remote_patience_seconds)
        pool.on_retry = grader.on_retry = lambda message: self.ctl.event(WARNING, message)
        try:
            if state.get("phase", "sft") == "sft" and sft_steps:
                if not latest:
                    # "Base" is the user's model: evaluated before the warm-up changes it.
                    await self._push_policy(pool)
                    if base := await self._validate(pool, grader, params, valid, 0):
                        self.ctl.progress(base_metrics=base)
                lr_mult = params.learning_rate_multiplier
                await self._sft(train, params.sft_answer_field, params.batch_size, lr_mult, sft_steps, state)
                state = {}
            last = await self._rl(train, valid, params, sft_steps, rl_steps, state, pool, grader)
        finally:
            await pool.close()
            await grader.close()
        return await self._export(params, last)

    def _check_ranks(self, batch_size: int) -> None:
        ranks = self.settings.trainer_ranks
        if batch_size < ranks:
            raise JobFailure(
                "invalid_hyperparameters",
                f"batch_size {batch_size} is below the learner's {ranks} trainer ranks: every rank takes at "
                f"least one prompt per step; use a batch_size of {ranks} or more",
            )

    def _load_policy(self, latest: pathlib.Path | None, state: dict[str, Any]) -> torch.nn.Module:
        """The policy to train: the job's model, or where the latest checkpoint left it."""
        if self.lora is None:
            return load_model(latest / "model" if latest else self.request.model, self.settings.placement)
        # A LoRA policy is a frozen base plus the adapter. The base is the job's model,
        # or once RL has started after an SFT warm-up, the warm-up merged into it.
        rl_base = state.get("phase") == "rl" and self.reference_dir.exists()
        base = load_model(self.reference_dir if rl_base else self.request.model, self.settings.placement)
        model = lora.add_adapter(base, self.lora)
        if latest:
            lora.load_adapter_weights(model, latest / "model" / ckpt.ADAPTER_DIR)
        return model

    def _reference(self, params: hparams.ReinforcementParams, warmed_up: bool) -> torch.nn.Module | None:
        """The frozen KL reference: the job's base model, or the SFT warm-up's result (ReFT).
        Loaded from disk, never copied from the policy, so it stays the same across pauses,
        resumes and crashes. None when no KL term is on, or for LoRA (its base, adapter off)."""
        if params.kl_coef == 0 or self.lora is not None:
            return None
        reference = load_model(
            self.reference_dir if warmed_up else self.request.model, self.settings.placement, frozen=True
        )
        return reference.eval().requires_grad_(False)

    def _persist_warmup(self, params: hparams.ReinforcementParams) -> None:
        """Keep the warm-up's result for resumes: the KL reference, and a LoRA policy's new
        base (the warm-up merged in, under a fresh adapter)."""
        if self.lora is not None:
            base = lora.merge(self.model)
            ckpt.save_model_dir(base, self.tokenizer, self.reference_dir)
            self.model = lora.add_adapter(base, self.lora)
        elif params.kl_coef > 0:
            ckpt.save_model_dir(self.model, self.tokenizer, self.reference_dir, self._whole_weights())

    async def _push_policy(self, pool: RolloutPool) -> None:
        """Send the policy as it is now to every rollout replica (and, from then on, to a
        replica that restarts: the pool reads the source again). Under FSDP each read
        gathers the shards one tensor at a time, as it is sent (Updater.streamed_weights)."""
        if self.lora is None and self.updater.sharded:
            pool.set_weights_source(lambda: self.updater.streamed_weights(self.model), one_read_at_a_time=True)
            what = "weights"
        elif self.lora is None:
            pool.set_weights_source(lambda: self.model.state_dict().items())
            what = "weights"
        else:
            pool.set_weights_source(
                lambda: lora.adapter_state_dict(self.model).items(),
                base_source=lambda: lora.base_state_dict(self.model).items(),
                lora=rollout_pb2.LoraAdapter(rank=self.lora.rank, alpha=self.lora.alpha),
            )
            what = f"base weights and LoRA adapter (rank {self.lora.rank})"
        seconds = await pool.push_weights()
        self.ctl.event(INFO, f"{what} pushed to {len(pool.addresses)} rollout replica(s) in {seconds:.2f}s")

    async def _validate(self, pool, grader, params, valid: list[Example], step: int) -> dict[str, float] | None:
        """Evaluate the weights the rollout serves on the validation set; record at `step`."""
        if not valid:
            return None
        started = time.perf_counter()
        metrics = await evaluate(
            valid,
            pool,
            grader,
            params.eval_samples,
            params.temperature,
            params.max_new_tokens,
            self.seed + step,
            episode_params(params, job_tenant(self.request)),
        )
        metrics["eval_seconds"] = time.perf_counter() - started
        self.latest_eval = metrics
        self.ctl.metrics(step, metrics)
        self.ctl.event(INFO, f"step {step}: valid_reward_mean={metrics['valid_reward_mean']:.3f}")
        return metrics

    def _consider_best(self, step: int, metrics: dict[str, float] | None) -> None:
        """Track the best evaluated checkpoint by valid_reward_mean (ties keep the earlier)."""
        if metrics is None:
            return
        score = metrics["valid_reward_mean"]  # nan when every validation sample failed grading: never the best
        if not math.isnan(score) and (self.best is None or score > self.best["metrics"]["valid_reward_mean"]):
            self.best = {"step": step, "metrics": dict(metrics)}
            self.evals_since_best = 0
        else:
            self.evals_since_best += 1

    async def _sft(
        self, train: list[Example], field: str, batch_size: int, lr_mult: float, steps: int, state: dict
    ) -> None:
        lr = hparams.BASE_LEARNING_RATE * lr_mult
        cursor = DataCursor(len(train), self.seed)
        start, optimizer_state = 0, None
        if state.get("phase") == "sft":
            optimizer_state = state["optimizer"]
            check_optimizer_layout(state, self.updater.will_shard(self.lora))
            cursor.load_state_dict(state["cursor"])
            start = state["step"]
        optimizer = await self._in_thread(
            self.updater.begin_phase, self.request.model, self.model, lr, optimizer_state, None, None, self.lora
        )
        prompts = [
            self.tokenizer.apply_chat_template(e.messages, add_generation_prompt=True, tokenize=True) for e in train
        ]
        prompts = [list(p["input_ids"]) if isinstance(p, dict) or hasattr(p, "keys") else list(p) for p in prompts]
        try:
            targets = [
                self.tokenizer(reference_answer(e, field), add_special_tokens=False)["input_ids"]
                + [self.tokenizer.eos_token_id]
                for e in train
            ]
        except KeyError as exc:
            raise JobFailure("invalid_file", f"SFT answer field: {exc.args[0]}") from exc
        self.ctl.event(INFO, f"SFT: {steps} steps on {len(train)} examples (answer field {field!r})")
        for step in range(start, steps):
            if self.ctl.stop_requested():
                await self._save(
                    step, {"phase": "sft", "optimizer": optimizer.state_dict(), "cursor": cursor.state_dict()}
                )
                self._check_control()
            started = time.perf_counter()
            indices = cursor.next_batch(batch_size)
            metrics = await self._in_thread(
                self.updater.train_sft,
                self.model,
                optimizer,
                [prompts[i] for i in indices],
                [targets[i] for i in indices],
                self.tokenizer.pad_token_id,
            )
            metrics["step_seconds"] = time.perf_counter() - started
            self.ctl.metrics(step + 1, metrics)
            self.ctl.progress(trained_steps=step + 1)
            if (step + 1) % self.settings.checkpoint_interval == 0 and step + 1 < steps:
                await self._save(step + 1, {"phase": "sft", "cursor": cursor.state_dict()}, optimizer)

    async def _rl(self, train, valid, params: hparams.ReinforcementParams, first_step: int, rl_steps: int, state,
                  pool: RolloutPool, grader: GraderClient) -> int:  # fmt: skip
        """RL steps first_step + 1 .. first_step + rl_steps (fewer when stopped early);
        returns the last step taken."""
        resuming = state.get("phase") == "rl"
        warmed_up = first_step > 0
        if state.get("rl_done"):  # trained and evaluated to the end before a crash: only the export is left
            return state["step"]
        if warmed_up and not resuming:
            await self._in_thread(self._persist_warmup, params)
        self.reference = await self._in_thread(self._reference, params, warmed_up)
        value_head = None
        if params.algorithm == "ppo":
            placement = self.settings.placement
            value_head = ValueHead(self.model.config.hidden_size).to(placement.device, placement.weights_dtype)
        lr = hparams.BASE_LEARNING_RATE * params.learning_rate_multiplier
        cursor = DataCursor(len(train), self.seed + 1)
        refill_cursor = DataCursor(len(train), self.seed + 2)  # dynamic sampling's extra rounds
        start, optimizer_state = 0, None
        if resuming:
            optimizer_state = state["optimizer"]
            check_optimizer_layout(state, self.updater.will_shard(self.lora))
            cursor.load_state_dict(state["cursor"])
            if "refill_cursor" in state:
                refill_cursor.load_state_dict(state["refill_cursor"])
            if value_head is not None:
                value_head.load_state_dict(state["value_head"])
            start = state["step"] - first_step
        optimizer = await self._in_thread(
            self.updater.begin_phase, self.request.model, self.model, lr, optimizer_state, self.reference, value_head,
            self.lora,
        )  # fmt: skip
        await self._push_policy(pool)

        if not resuming and (start_metrics := await self._validate(pool, grader, params, valid, first_step)):
            if warmed_up:
                self.ctl.progress(warmup_metrics=start_metrics)
                self._consider_best(first_step, start_metrics)  # the warm-up result is a fine-tuned candidate
            else:
                self.ctl.progress(base_metrics=start_metrics)

        def trainer_state(cursor_state: dict, rl_done: bool = False) -> dict[str, Any]:
            return {
                "phase": "rl",
                "rl_done": rl_done,
                "cursor": cursor_state,
                "refill_cursor": refill_cursor.state_dict(),
                "latest_eval": dict(self.latest_eval),
            }

        if warmed_up and not resuming and self.best is not None:
            await self._save(first_step, trainer_state(cursor.state_dict()), optimizer, value_head)

        def train_step(groups) -> dict[str, float]:
            return self.updater.train_rl(
                self.model, self.reference, optimizer, groups, params, self.tokenizer.pad_token_id, value_head
            )

        async def update(groups) -> dict[str, float]:
            async with pool.weights_guard:  # a replica that restarted waits for the step's end
                return await self._in_thread(train_step, groups)

        collector = Collector(pool, train, cursor, refill_cursor, params, self.seed, job_tenant(self.request))
        stepper = RLStepper(collector, grader, train, params, update, first_step + rl_steps)
        step, evaluated_at = start, None
        try:
            while step < rl_steps:
                if self.ctl.stop_requested():
                    await self._save(first_step + step, trainer_state(stepper.resume_cursor()), optimizer, value_head)
                    self._check_control()
                metrics = await stepper.run_step(first_step + step + 1)
                step += 1
                done = first_step + step
                self.ctl.metrics(done, metrics)
                self.ctl.progress(trained_steps=done)
                if step == rl_steps:
                    break
                if params.eval_interval and step % params.eval_interval == 0:
                    self._consider_best(done, await self._validate(pool, grader, params, valid, done))
                    evaluated_at = done
                    stop = (
                        bool(params.early_stopping_patience) and self.evals_since_best >= params.early_stopping_patience
                    )
                    await self._save(done, trainer_state(stepper.resume_cursor(), rl_done=stop), optimizer, value_head)
                    if stop:
                        best = (
                            f"best {self.best['metrics']['valid_reward_mean']:.3f} at step {self.best['step']}"
                            if self.best
                            else "no evaluation had a valid_reward_mean"
                        )
                        self.ctl.event(
                            INFO,
                            f"early stopping at step {done}: valid_reward_mean has not improved for "
                            f"{self.evals_since_best} evaluations ({best})",
                        )
                        self.ctl.progress(total_steps=done)
                        break
                elif step % self.settings.checkpoint_interval == 0:
                    await self._save(done, trainer_state(stepper.resume_cursor()), optimizer, value_head)
        finally:
            await stepper.close()
        done = first_step + step
        if evaluated_at != done:
            self._consider_best(done, await self._validate(pool, grader, params, valid, done))
            await self._save(done, trainer_state(cursor.state_dict(), rl_done=True), optimizer, value_head)
        return done

    async def _export(self, params: hparams.ReinforcementParams | None, last_step: int) -> str:
        """Export the best checkpoint (by valid_reward_mean) or the last weights."""
        suffix = f"-{self.request.suffix}" if self.request.suffix else ""
        models = (self.settings.data_dir / "models").resolve()
        out = models / f"{self.ctl.job_id}{suffix}"
        if out.resolve().parent != models:  # CreateJob refuses such suffixes; a job stored before must not escape
            raise JobFailure("invalid_job", f"suffix {self.request.suffix!r} would write outside {models}")
        best = self.best if params is not None and params.export_checkpoint == "best" else None
        if best is not None and best["step"] != last_step:
            source = ckpt.checkpoint_dir(self.ckpt_root, best["step"]) / "model"
            await self._in_thread(_replace_tree, source, out)
            exported_step, metrics = best["step"], best["metrics"]
            self.ctl.event(
                INFO,
                f"exporting the best checkpoint, step {exported_step} (valid_reward_mean "
                f"{metrics['valid_reward_mean']:.3f}; the last step {last_step} had "
                f"{self.latest_eval.get('valid_reward_mean', float('nan')):.3f})",
            )
        else:
            await self._in_thread(lambda: ckpt.save_model_dir(self.model, self.tokenizer, out, self._whole_weights()))
            exported_step, metrics = last_step, self.latest_eval
        self.ctl.progress(final_metrics=dict(metrics), exported_step=exported_step)
        self.ctl.event(INFO, f"fine-tuned model exported to {out}")
        return str(out)


def optimizer_layout(sharded: bool) -> str:
    """How a checkpoint's optimizer state is keyed: by parameter name (FSDP's full state
    dict) or by parameter index (torch's own)."""
    return "fsdp" if sharded else "replicated"


def check_optimizer_layout(state: dict[str, Any], sharded: bool) -> None:
    """JobFailure when the checkpoint's optimizer state was written under the other
    --trainer-sharding (checkpoints from before the field are "replicated")."""
    saved, expected = state.get("optimizer_layout", "replicated"), optimizer_layout(sharded)
    if saved != expected:
        flag = "fsdp" if saved == "fsdp" else "none"
        raise JobFailure(
            "invalid_checkpoint",
            f"the job's checkpoint at step {state.get('step')} holds {saved} optimizer state but this learner "
            f"trains {expected}; resume it on a learner started with --trainer-sharding {flag}"
            + (" and --trainer-ranks > 1" if saved == "fsdp" else ""),
        )


def _replace_tree(source: pathlib.Path, target: pathlib.Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
