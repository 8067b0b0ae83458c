"""A job from start (or its last checkpoint) to the exported model.

    SFT warm-up (optional) -> base evaluation -> RL steps [generate -> grade -> update
    -> push weights] with evaluation every eval_interval and checkpoints every
    checkpoint_interval -> final evaluation -> export.

Torch work runs in a worker thread; this coroutine only orchestrates, so the learner
keeps answering RPCs while a job trains. Control (pause / cancel) is honoured between
steps; pause writes a checkpoint first.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import pathlib
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
from rft_learner.trainer.evaluate import evaluate
from rft_learner.trainer.policy import ValueHead, load_model, load_tokenizer, named_arrays, trainable_parameters
from rft_learner.trainer.ranks import Updater
from rft_learner.trainer.updates import Group

log = logging.getLogger(__name__)

INFO, WARNING, ERROR = (
    fine_tuning_pb2.JOB_EVENT_LEVEL_INFO,
    fine_tuning_pb2.JOB_EVENT_LEVEL_WARNING,
    fine_tuning_pb2.JOB_EVENT_LEVEL_ERROR,
)


class JobFailure(Exception):
    """The job cannot go on; `code` and the message reach the user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def grader_client(
    grader_cfg: fine_tuning_pb2.GraderConfig, settings: TrainerSettings, patience_seconds: float
) -> GraderClient:
    """A client of the job's grader: its own service address, or the learner's default."""
    spec = json_format.MessageToDict(grader_cfg.spec) if grader_cfg.HasField("spec") else None
    return GraderClient(
        grader_cfg.service_address or settings.grader_address,
        grader_cfg.tenant or "default",
        spec=spec,
        grader_id=grader_cfg.grader_id,
        token=settings.grader_token,
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
    )


def prompt_seed(job_seed: int, step: int, index: int) -> int:
    return (job_seed * 1_000_003 + step * 10_007 + index) % (2**31 - 1)


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
        # The RL reference after an SFT warm-up (and a LoRA policy's base), kept for resumes.
        self.reference_dir = self.job_dir / "reference"
        self.latest_eval: dict[str, float] = {}
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

    def _save(self, step: int, state: dict[str, Any]) -> None:
        path = ckpt.save_checkpoint(self.ckpt_root, step, self.model, self.tokenizer, state)
        self.ctl.checkpointed(step, path, dict(self.latest_eval))

    # -- the job -----------------------------------------------------------------
    async def run(self) -> str:
        """Train to the end; returns the exported model directory."""
        self.updater = Updater(self.settings.trainer_ranks)
        await self._in_thread(self.updater.start)
        if self.settings.trainer_ranks > 1:
            self.ctl.event(INFO, f"update steps run data-parallel on {self.settings.trainer_ranks} trainer ranks")
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
        latest = ckpt.latest_checkpoint(self.ckpt_root)
        state = ckpt.load_trainer_state(latest) if latest else {}
        self.model = await self._in_thread(self._load_policy, latest, state)
        if latest:
            ckpt.set_rng_state(state["rng"])
            self.ctl.event(INFO, f"resuming from checkpoint at step {state['step']}")

        if method.HasField("supervised"):
            params = hparams.supervised_params(method.supervised)
            sft_steps = params.n_epochs * steps_per_epoch(len(train), params.batch_size)
            self.ctl.progress(total_steps=sft_steps)
            await self._sft(
                train, params.answer_field, params.batch_size, params.learning_rate_multiplier, sft_steps, state
            )
            return await self._export()

        params = hparams.reinforcement_params(method.reinforcement)
        sft_steps = params.sft_warmup_epochs * steps_per_epoch(len(train), params.batch_size)
        rl_steps = params.n_epochs * steps_per_epoch(len(train), params.batch_size)
        self.ctl.progress(total_steps=sft_steps + rl_steps)
        if state.get("phase", "sft") == "sft" and sft_steps:
            await self._sft(
                train, params.sft_answer_field, params.batch_size, params.learning_rate_multiplier, sft_steps, state
            )
            state = {}
        await self._rl(train, valid, params, sft_steps, rl_steps, state)
        return await self._export()

    def _load_policy(self, latest: pathlib.Path | None, state: dict[str, Any]) -> torch.nn.Module:
        """The policy to train: the job's model, or where the latest checkpoint left it."""
        if self.lora is None:
            return load_model(latest / "model" if latest else self.request.model)
        # A LoRA policy is a frozen base plus the adapter. The base is the job's model,
        # or once RL has started after an SFT warm-up, the warm-up merged into it.
        rl_base = state.get("phase") == "rl" and self.reference_dir.exists()
        model = lora.add_adapter(load_model(self.reference_dir if rl_base else self.request.model), self.lora)
        if latest:
            lora.load_adapter_weights(model, latest / "model" / ckpt.ADAPTER_DIR)
        return model

    async def _sft(
        self, train: list[Example], field: str, batch_size: int, lr_mult: float, steps: int, state: dict
    ) -> None:
        lr = hparams.BASE_LEARNING_RATE * lr_mult
        optimizer = torch.optim.AdamW(trainable_parameters(self.model), lr=lr)
        cursor = DataCursor(len(train), self.seed)
        start = 0
        if state.get("phase") == "sft":
            optimizer.load_state_dict(state["optimizer"])
            cursor.load_state_dict(state["cursor"])
            start = state["step"]
        await asyncio.to_thread(self.updater.begin_phase, self.request.model, self.model, optimizer, lr, lora=self.lora)
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
                self._save(step, {"phase": "sft", "optimizer": optimizer.state_dict(), "cursor": cursor.state_dict()})
                self._check_control()
            started = time.perf_counter()
            indices = cursor.next_batch(batch_size)
            metrics = await self._in_thread(
                self.updater.sft_step,
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
                self._save(
                    step + 1, {"phase": "sft", "optimizer": optimizer.state_dict(), "cursor": cursor.state_dict()}
                )

    async def _rl(self, train, valid, params: hparams.ReinforcementParams, first_step: int, rl_steps: int, state):
        settings = self.settings
        grader = grader_client(self.request.method.reinforcement.grader, settings, settings.remote_patience_seconds)
        pool = rollout_pool(settings, settings.remote_patience_seconds)
        pool.on_retry = grader.on_retry = lambda message: self.ctl.event(WARNING, message)
        try:
            await self._rl_loop(train, valid, params, first_step, rl_steps, state, pool, grader)
        finally:
            await pool.close()
            await grader.close()

    async def _rl_loop(self, train, valid, params, first_step, rl_steps, state, pool, grader) -> None:
        reference_dir = self.reference_dir
        resuming = state.get("phase") == "rl"
        if self.lora is not None:
            # The KL reference is the policy's own base, adapter off. After an SFT
            # warm-up (ReFT) that base is the warm-up merged in, under a fresh adapter.
            self.reference = None
            if first_step and not resuming:
                base = lora.merge(self.model)
                await self._in_thread(ckpt.save_model_dir, base, self.tokenizer, reference_dir)
                self.model = lora.add_adapter(base, self.lora)
        elif resuming and reference_dir.exists():
            self.reference = await self._in_thread(load_model, reference_dir)
        else:
            self.reference = copy.deepcopy(self.model)
            if first_step:  # the SFT warm-up result is the reference (ReFT); keep it for resumes
                await self._in_thread(ckpt.save_model_dir, self.model, self.tokenizer, reference_dir)
        if self.reference is not None:
            self.reference.eval().requires_grad_(False)
        value_head = ValueHead(self.model.config.hidden_size) if params.algorithm == "ppo" else None
        trainable = trainable_parameters(self.model, value_head)
        lr = hparams.BASE_LEARNING_RATE * params.learning_rate_multiplier
        optimizer = torch.optim.AdamW(trainable, lr=lr)
        cursor = DataCursor(len(train), self.seed + 1)
        start = 0
        if resuming:
            optimizer.load_state_dict(state["optimizer"])
            cursor.load_state_dict(state["cursor"])
            if value_head is not None:
                value_head.load_state_dict(state["value_head"])
            self.latest_eval = state.get("latest_eval", {})
            start = state["step"] - first_step
        await self._in_thread(
            self.updater.begin_phase,
            self.request.model,
            self.model,
            optimizer,
            lr,
            self.reference,
            value_head,
            self.lora,
        )

        def trainer_state(cursor_state: dict) -> dict[str, Any]:
            return {
                "phase": "rl",
                "optimizer": optimizer.state_dict(),
                "cursor": cursor_state,
                "value_head": value_head.state_dict() if value_head else None,
                "latest_eval": dict(self.latest_eval),
            }

        if self.lora is None:
            pool.set_weights_source(lambda: named_arrays(self.model))
            what = "weights"
        else:
            pool.set_weights_source(
                lambda: lora.adapter_arrays(self.model),
                base_source=lambda: lora.base_arrays(self.model),
                lora=rollout_pb2.LoraAdapter(rank=self.lora.rank, alpha=self.lora.alpha),
            )
            what = f"base weights and LoRA adapter (rank {self.lora.rank})"
        sync_seconds = await pool.push_weights()
        self.ctl.event(INFO, f"{what} pushed to {len(pool.addresses)} rollout replica(s) in {sync_seconds:.2f}s")

        async def run_eval(step: int) -> None:
            if not valid:
                return
            started = time.perf_counter()
            metrics = await evaluate(
                valid, pool, grader, params.eval_samples, params.temperature, params.max_new_tokens, self.seed + step
            )
            metrics["eval_seconds"] = time.perf_counter() - started
            self.latest_eval = metrics
            self.ctl.metrics(first_step + step, metrics)
            self.ctl.progress(final_metrics=metrics)
            self.ctl.event(INFO, f"step {first_step + step}: valid_reward_mean={metrics['valid_reward_mean']:.3f}")

        if start == 0:
            await run_eval(0)
            if valid:
                self.ctl.progress(base_metrics=self.latest_eval)

        sampling = rollout_pb2.SamplingParams(
            n=params.samples_per_prompt, temperature=params.temperature, max_tokens=params.max_new_tokens
        )

        async def collect(step: int):
            indices = cursor.next_batch(params.batch_size)
            started = time.perf_counter()
            seeds = [prompt_seed(self.seed, first_step + step, i) for i in range(len(indices))]
            generated = await pool.generate([train[i].messages for i in indices], sampling, seeds)
            return indices, generated, time.perf_counter() - started

        pending: asyncio.Task | None = None
        cursor_before_pending = cursor.state_dict()
        try:
            for step in range(start, rl_steps):
                if self.ctl.stop_requested():
                    self._save(first_step + step, trainer_state(cursor_before_pending))
                    self._check_control()
                indices, generated, generate_seconds = await (pending if pending else collect(step))
                pending = None
                trained_version = pool.version

                started = time.perf_counter()
                pairs = [(s.text, train[i].item) for i, p in zip(indices, generated, strict=True) for s in p.samples]
                results = await grader.grade(pairs)
                grade_seconds = time.perf_counter() - started
                errors = [r for r in results if r.HasField("error")]
                if len(errors) > params.max_grader_error_fraction * len(results):
                    reasons = sorted({f"{r.error.message}"[:200] for r in errors})[:3]
                    raise JobFailure(
                        "grader_error_rate",
                        f"{len(errors)} of {len(results)} samples failed grading at step {first_step + step + 1} "
                        f"(limit {params.max_grader_error_fraction:.0%}); e.g. {reasons}",
                    )
                groups, cursor_iter = [], iter(results)
                for prompt in generated:
                    rewards = []
                    for _sample in prompt.samples:
                        result = next(cursor_iter)
                        rewards.append(None if result.HasField("error") else float(result.score))
                    groups.append(
                        Group(
                            prompt.prompt_token_ids,
                            [s.token_ids for s in prompt.samples],
                            [s.logprobs for s in prompt.samples],
                            rewards,
                        )
                    )

                cursor_before_pending = cursor.state_dict()
                if params.max_staleness >= 1 and step + 1 < rl_steps:
                    pending = asyncio.create_task(collect(step + 1))
                else:
                    cursor_before_pending = cursor.state_dict()

                started = time.perf_counter()
                metrics = await self._in_thread(
                    self.updater.rl_step,
                    self.model,
                    self.reference,
                    optimizer,
                    groups,
                    params,
                    self.tokenizer.pad_token_id,
                    value_head,
                )
                train_seconds = time.perf_counter() - started
                if pending is not None:
                    await asyncio.wait([pending])  # never swap weights under in-flight generation
                started = time.perf_counter()
                await pool.push_weights()
                sync_seconds = time.perf_counter() - started

                rewards = [r for g in groups for r in g.rewards if r is not None]
                lengths = [len(s.token_ids) for p in generated for s in p.samples]
                versions = [s.policy_version for p in generated for s in p.samples]
                completion_tokens = sum(lengths)
                metrics.update(
                    {
                        "train_reward_mean": sum(rewards) / len(rewards) if rewards else math.nan,
                        "response_length_mean": completion_tokens / max(1, len(lengths)),
                        "policy_version_lag": trained_version - min(versions),
                        "grader_errors": float(len(errors)),
                        "generate_seconds": generate_seconds,
                        "grade_seconds": grade_seconds,
                        "train_seconds": train_seconds,
                        "weight_sync_seconds": sync_seconds,
                        "tokens_per_second": completion_tokens / generate_seconds if generate_seconds else 0.0,
                    }
                )
                done = first_step + step + 1
                self.ctl.metrics(done, metrics)
                self.ctl.progress(trained_steps=done)
                if params.eval_interval and (step + 1) % params.eval_interval == 0 and step + 1 < rl_steps:
                    await run_eval(step + 1)
                if (step + 1) % self.settings.checkpoint_interval == 0 and step + 1 < rl_steps:
                    self._save(done, trainer_state(cursor_before_pending if pending else cursor.state_dict()))
        finally:
            if pending is not None:
                pending.cancel()
        await run_eval(rl_steps)
        self._save(first_step + rl_steps, trainer_state(cursor.state_dict()))

    async def _export(self) -> str:
        suffix = f"-{self.request.suffix}" if self.request.suffix else ""
        out = self.settings.data_dir / "models" / f"{self.ctl.job_id}{suffix}"
        await self._in_thread(ckpt.save_model_dir, self.model, self.tokenizer, out)
        self.ctl.event(INFO, f"fine-tuned model exported to {out}")
        return str(out)
