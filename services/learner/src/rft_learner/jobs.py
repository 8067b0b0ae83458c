"""The job manager: validates and queues jobs, runs them one at a time, handles pause /
resume / cancel, publishes events to watchers, and recovers after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import pathlib
import time
from typing import Any

import pydantic
from prometheus_client import Counter, Gauge, Histogram
from rft.grader.v1 import grader_pb2
from rft.learner.v1 import files_pb2, fine_tuning_pb2

from rft_learner import hparams
from rft_learner.files import FileNotFound, FileStore
from rft_learner.job_store import FINISHED, JobNotFound, JobRecord, JobStore
from rft_learner.remote import RemoteError
from rft_learner.trainer.loop import (
    ERROR,
    INFO,
    WARNING,
    JobRun,
    Stopped,
    TrainerSettings,
    grader_client,
    rollout_pool,
)
from rft_learner.trainer.rl_step import JobFailure

log = logging.getLogger(__name__)
S = fine_tuning_pb2

STEPS = Counter("rft_learner_steps_total", "Optimizer steps taken.", ["job_id"])
LAST_STEP = Gauge("rft_learner_last_step_timestamp_seconds", "Unix time of the last optimizer step.", ["job_id"])
JOBS = Gauge("rft_learner_jobs", "Jobs by status.", ["status"])
GRADER_ERRORS = Counter("rft_learner_grader_errors_total", "Samples whose grading failed.", ["job_id"])
PHASE_SECONDS = Histogram(
    "rft_learner_step_phase_seconds",
    "Seconds per RL step phase.",
    ["job_id", "phase"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WEIGHT_SYNC = Histogram(
    "rft_learner_weight_sync_seconds",
    "Seconds to push weights to every rollout replica.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30),
)
GAUGES = {
    name: Gauge(f"rft_learner_{name}", help_text, ["job_id"])
    for name, help_text in (
        ("train_reward_mean", "Mean grader score of the last step's samples."),
        ("valid_reward_mean", "Mean grader score on the validation set at the last evaluation."),
        ("kl", "Mean per-token KL to the reference model at the last step."),
        ("entropy", "Mean per-token policy entropy at the last step."),
        ("clip_fraction", "Fraction of tokens whose ratio was clipped at the last step."),
        ("policy_version_lag", "Policy versions between sampling and training at the last step."),
        ("tokens_per_second", "Completion tokens generated per second at the last step."),
    )
}
METRIC_TO_GAUGE = {"clip_frac": "clip_fraction", "clip_fraction": "clip_fraction"}
PHASES = {
    "generate_seconds": "generate",
    "grade_seconds": "grade",
    "train_seconds": "train",
    "weight_sync_seconds": "sync",
    "eval_seconds": "eval",
}


class InvalidJob(Exception):
    """CreateJob input that cannot run; the message names the field."""


class JobStateError(Exception):
    """The requested transition is not allowed from the job's status."""


@dataclasses.dataclass
class Update:
    """One item of a WatchJob stream."""

    kind: str  # "event" | "metrics" | "job"
    payload: Any


@dataclasses.dataclass
class LearnerSettings:
    trainer: TrainerSettings
    validate_remote: bool = True


class _Control:
    """JobControl for one running job (see trainer.loop.JobControl)."""

    def __init__(self, manager: JobManager, job_id: str) -> None:
        self.manager = manager
        self.job_id = job_id

    def event(self, level: int, message: str) -> None:
        self.manager.add_event(self.job_id, level, message)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.manager.add_metrics(self.job_id, step, values)

    def progress(self, **fields: Any) -> None:
        self.manager.update_job(self.job_id, **fields)

    def checkpointed(self, step: int, path: pathlib.Path, metrics: dict[str, float]) -> None:
        self.manager.store.add_checkpoint(self.job_id, step, str(path), metrics)
        self.manager.add_event(self.job_id, INFO, f"checkpoint saved at step {step}")

    def stop_requested(self) -> str | None:
        return self.manager.stop_requests.get(self.job_id)

    def truncate_metrics_after(self, step: int) -> None:
        self.manager.store.truncate_metrics_after(self.job_id, step)

    def file_path(self, file_id: str) -> pathlib.Path:
        return pathlib.Path(self.manager.files.get(file_id).path)


class JobManager:
    def __init__(self, store: JobStore, files: FileStore, settings: LearnerSettings) -> None:
        self.store = store
        self.files = files
        self.settings = settings
        self.stop_requests: dict[str, str] = {}
        self._watchers: dict[str, set[asyncio.Queue]] = {}
        self._wakeup = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self._running_job: str | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def __aenter__(self) -> JobManager:
        for job in self.store.with_status(S.JOB_STATUS_RUNNING, S.JOB_STATUS_VALIDATING_FILES):
            self.update_job(job.id, status=S.JOB_STATUS_QUEUED)
            self.add_event(job.id, WARNING, "the learner restarted; the job resumes from its last checkpoint")
        self._refresh_gauges()
        self._runner = asyncio.create_task(self._run_queue())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner:
            self._runner.cancel()
            try:
                await self._runner
            except asyncio.CancelledError:
                pass

    # -- publishing ------------------------------------------------------------------
    def _publish(self, job_id: str, update: Update) -> None:
        for queue in self._watchers.get(job_id, ()):
            queue.put_nowait(update)

    def add_event(self, job_id: str, level: int, message: str) -> None:
        event = self.store.add_event(job_id, level, message)
        log.info("%s: %s", job_id, message)
        self._publish(job_id, Update("event", event))

    def add_metrics(self, job_id: str, step: int, values: dict[str, float]) -> None:
        record = self.store.add_metrics(job_id, step, values)
        if "train_reward_mean" in values:
            STEPS.labels(job_id).inc()
            LAST_STEP.labels(job_id).set(time.time())
            GRADER_ERRORS.labels(job_id).inc(values.get("grader_errors", 0))
        for name, value in values.items():
            gauge = GAUGES.get(METRIC_TO_GAUGE.get(name, name))
            if gauge is not None:
                gauge.labels(job_id).set(value)
            if name in PHASES:
                PHASE_SECONDS.labels(job_id, PHASES[name]).observe(value)
            if name == "weight_sync_seconds":
                WEIGHT_SYNC.observe(value)
        self._publish(job_id, Update("metrics", record))

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        job = self.store.update(job_id, **fields)
        self._publish(job_id, Update("job", job))
        if "status" in fields:
            self._refresh_gauges()
        return job

    def _refresh_gauges(self) -> None:
        counts = {status: 0 for status in S.JobStatus.values() if status}
        counts.update(self.store.count_by_status())
        for status, count in counts.items():
            JOBS.labels(S.JobStatus.Name(status).removeprefix("JOB_STATUS_").lower()).set(count)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        self._watchers.get(job_id, set()).discard(queue)

    # -- API ---------------------------------------------------------------------------
    async def create(self, request: fine_tuning_pb2.CreateJobRequest) -> JobRecord:
        await self._validate(request)
        seed = request.seed or 42
        job = self.store.create(request, seed)
        self.add_event(job.id, INFO, "job created; files and grader validated")
        if request.validation_file:
            train, valid = self.files.get(request.training_file), self.files.get(request.validation_file)
            for warning in await asyncio.to_thread(overlap_warnings, train.path, valid.path, _answer_field(request)):
                self.add_event(job.id, WARNING, warning)
        job = self.update_job(job.id, status=S.JOB_STATUS_QUEUED)
        self._wakeup.set()
        return job

    def get(self, job_id: str) -> JobRecord:
        return self.store.get(job_id)

    def cancel(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job.finished:
            raise JobStateError(f"job {job_id} already ended ({S.JobStatus.Name(job.status)})")
        if job.id == self._running_job:
            self.stop_requests[job_id] = "cancel"
            self.add_event(job_id, INFO, "cancellation requested; stopping after the current step")
            return job
        job = self.update_job(job_id, status=S.JOB_STATUS_CANCELLED, finished_at=time.time())
        self.add_event(job_id, INFO, "job cancelled")
        return job

    def pause(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job.status not in (S.JOB_STATUS_QUEUED, S.JOB_STATUS_RUNNING):
            raise JobStateError(
                f"only queued or running jobs can be paused; this one is {S.JobStatus.Name(job.status)}"
            )
        if job.id == self._running_job:
            self.stop_requests[job_id] = "pause"
            self.add_event(job_id, INFO, "pause requested; checkpointing after the current step")
            return job
        job = self.update_job(job_id, status=S.JOB_STATUS_PAUSED)
        self.add_event(job_id, INFO, "job paused")
        return job

    def resume(self, job_id: str) -> JobRecord:
        job = self.store.get(job_id)
        if job.status != S.JOB_STATUS_PAUSED:
            raise JobStateError(f"only paused jobs can be resumed; this one is {S.JobStatus.Name(job.status)}")
        job = self.update_job(job_id, status=S.JOB_STATUS_QUEUED)
        self.add_event(job_id, INFO, "job resumed; queued")
        self._wakeup.set()
        return job

    # -- validation ----------------------------------------------------------------------
    async def _validate(self, request: fine_tuning_pb2.CreateJobRequest) -> None:
        model_dir = pathlib.Path(request.model)
        if not request.model:
            raise InvalidJob("model: required (a Hugging Face model directory)")
        if not (model_dir / "config.json").is_file():
            raise InvalidJob(f"model: {request.model!r} is not a model directory (no config.json)")
        try:
            await asyncio.to_thread(_check_model_dir, model_dir)
        except Exception as exc:  # noqa: BLE001 - any load failure is the user's to fix
            raise InvalidJob(f"model: {request.model!r} does not load: {exc}") from exc
        for field in ("training_file", "validation_file"):
            file_id = getattr(request, field)
            if not file_id:
                if field == "training_file":
                    raise InvalidJob("training_file: required")
                continue
            try:
                stored = self.files.get(file_id)
            except FileNotFound as exc:
                raise InvalidJob(f"{field}: {exc}") from exc
            if stored.purpose != files_pb2.FILE_PURPOSE_FINE_TUNE:
                raise InvalidJob(f"{field}: file {file_id} has purpose {stored.purpose}, expected FINE_TUNE")
        kind = request.method.WhichOneof("method")
        if kind is None:
            raise InvalidJob("method: set either supervised or reinforcement")
        try:
            if kind == "supervised":
                params = hparams.supervised_params(request.method.supervised)
                if not params.answer_field:
                    raise InvalidJob("method.supervised.answer_field: required")
                await asyncio.to_thread(
                    self._check_field, request.training_file, params.answer_field, "method.supervised.answer_field"
                )
                return
            params = hparams.reinforcement_params(request.method.reinforcement)
        except pydantic.ValidationError as exc:
            raise InvalidJob(hparams.describe_validation_error(exc, f"method.{kind}.hyperparameters")) from exc
        if params.sft_answer_field:
            await asyncio.to_thread(
                self._check_field, request.training_file, params.sft_answer_field, "hyperparameters.sft_answer_field"
            )
        if self.settings.validate_remote:
            await self._validate_remote(request, model_dir, params.lora_rank)

    def _check_field(self, file_id: str, field: str, where: str) -> None:
        with open(self.files.get(file_id).path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip() and field not in json.loads(line):
                    raise InvalidJob(f"{where}: line {number} of {file_id} has no field {field!r}")

    async def _validate_remote(
        self, request: fine_tuning_pb2.CreateJobRequest, model_dir: pathlib.Path, lora_rank: int
    ) -> None:
        settings = self.settings.trainer
        grader_cfg = request.method.reinforcement.grader
        source = grader_cfg.WhichOneof("source")
        if source is None:
            raise InvalidJob("method.reinforcement.grader: give a spec or a grader_id")
        grader = grader_client(grader_cfg, settings, patience_seconds=10)
        try:
            try:
                problems = await grader.validate()
            except Exception as exc:  # noqa: BLE001
                raise InvalidJob(f"method.reinforcement.grader: {_rpc_message(exc)}") from exc
            if problems:
                raise InvalidJob("method.reinforcement.grader: " + "; ".join(problems))
            # Run it on a few real items so a template naming a missing field fails now, not mid-job.
            from rft_learner.trainer.data import load_examples

            examples = load_examples(self.files.get(request.training_file).path)[:3]
            try:
                results = await grader.grade([("", e.item) for e in examples])
            except Exception as exc:  # noqa: BLE001
                raise InvalidJob(f"method.reinforcement.grader: grading a sample failed: {_rpc_message(exc)}") from exc
            for example_index, result in enumerate(results):
                if result.HasField("error") and result.error.kind == grader_pb2.GRADE_ERROR_KIND_TEMPLATE:
                    raise InvalidJob(
                        f"method.reinforcement.grader: on training line {example_index + 1}: {result.error.message}"
                    )
        finally:
            await grader.close()
        try:
            pool = rollout_pool(settings, patience_seconds=10)
        except (OSError, ValueError) as exc:
            raise InvalidJob(f"rollout addresses {settings.rollout_addresses!r} do not resolve: {exc}") from exc
        try:
            try:
                infos = await pool.model_info()
            except RemoteError as exc:
                raise InvalidJob(f"rollout service unreachable at {settings.rollout_addresses}: {exc}") from exc
            expected = await asyncio.to_thread(_tensor_shapes, model_dir)
            for address, info in zip(pool.addresses, infos, strict=True):
                served = {t.name: tuple(t.shape) for t in info.tensors}
                # The file may omit tied weights (lm_head.weight) that the engine lists.
                unknown = sorted(set(expected) - set(served))[:3]
                differ = sorted(k for k in set(served) & set(expected) if served[k] != expected[k])[:3]
                if served and (unknown or differ):
                    raise InvalidJob(
                        f"model: its tensors do not match the model served by rollout {address} "
                        f"(unknown to it {unknown}, different shapes {differ}); start the rollout with the same "
                        "architecture"
                    )
                if lora_rank > info.max_lora_rank:
                    raise InvalidJob(
                        f"method.reinforcement.hyperparameters.lora_rank: {lora_rank} is above the largest LoRA "
                        f"rank rollout {address} takes ({info.max_lora_rank}); start it with --max-lora-rank "
                        f"{lora_rank} or more"
                    )
        finally:
            await pool.close()

    # -- running -----------------------------------------------------------------------
    async def _run_queue(self) -> None:
        while True:
            queued = self.store.with_status(S.JOB_STATUS_QUEUED)
            if not queued:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._run(queued[0])

    async def _run(self, job: JobRecord) -> None:
        self._running_job = job.id
        self.stop_requests.pop(job.id, None)
        self.update_job(job.id, status=S.JOB_STATUS_RUNNING)
        self.add_event(job.id, INFO, "job started")
        run = JobRun(job.request, job.seed, _Control(self, job.id), self.settings.trainer)
        try:
            model_dir = await run.run()
        except Stopped as stop:
            if str(stop) == "pause":
                self.update_job(job.id, status=S.JOB_STATUS_PAUSED)
                self.add_event(job.id, INFO, "job paused after a checkpoint")
            else:
                self.update_job(job.id, status=S.JOB_STATUS_CANCELLED, finished_at=time.time())
                self.add_event(job.id, INFO, "job cancelled")
        except JobFailure as failure:
            self._fail(job.id, failure.code, str(failure))
        except RemoteError as exc:
            self._fail(job.id, "remote_unavailable", str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job fails, the service does not
            log.exception("job %s failed", job.id)
            self._fail(job.id, "internal", f"{type(exc).__name__}: {exc}")
        else:
            self.update_job(job.id, status=S.JOB_STATUS_SUCCEEDED, fine_tuned_model=model_dir, finished_at=time.time())
            self.add_event(job.id, INFO, "job succeeded")
        finally:
            self._running_job = None
            self.stop_requests.pop(job.id, None)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        self.update_job(
            job_id, status=S.JOB_STATUS_FAILED, error_code=code, error_message=message, finished_at=time.time()
        )
        self.add_event(job_id, ERROR, f"job failed ({code}): {message}")


ANSWER_FIELDS = ("answer", "reference", "reference_answer", "solution", "label", "target")


def _answer_field(request: fine_tuning_pb2.CreateJobRequest) -> str:
    method = request.method
    if method.HasField("supervised"):
        return method.supervised.answer_field
    return method.reinforcement.hyperparameters.sft_answer_field


def overlap_warnings(train_path: str, valid_path: str, answer_field: str = "") -> list[str]:
    """Validation examples whose prompt, or whose reference answer, also appears in training."""

    def read(path: str) -> list[dict]:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def prompt(example: dict) -> str:
        return json.dumps(example["messages"], sort_keys=True)

    train, valid = read(train_path), read(valid_path)
    warnings = []
    seen_prompts = {prompt(e) for e in train}
    shared = sum(prompt(e) in seen_prompts for e in valid)
    if shared:
        warnings.append(f"{shared} of {len(valid)} validation examples have a prompt that is also in training")
    fields = [answer_field] if answer_field else [f for f in ANSWER_FIELDS if valid and f in valid[0]]
    for field in fields:
        seen = {json.dumps(e[field], sort_keys=True) for e in train if field in e}
        shared = sum(field in e and json.dumps(e[field], sort_keys=True) in seen for e in valid)
        if shared:
            warnings.append(
                f"{shared} of {len(valid)} validation examples have a reference answer ({field!r}) that also appears "
                "in training: validation reward may overstate generalisation"
            )
    return warnings


def _rpc_message(exc: Exception) -> str:
    details = getattr(exc, "details", None)
    return details() if callable(details) else str(exc)


def _check_model_dir(model_dir: pathlib.Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    AutoConfig.from_pretrained(str(model_dir))
    AutoTokenizer.from_pretrained(str(model_dir))
    if not list(model_dir.glob("*.safetensors")):
        raise ValueError("no *.safetensors weights in the directory")


def _tensor_shapes(model_dir: pathlib.Path) -> dict[str, tuple[int, ...]]:
    """State-dict names and shapes from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="numpy") as handle:
            for name in handle.keys():
                shapes[name] = tuple(handle.get_slice(name).get_shape())
    return shapes


__all__ = ["FINISHED", "InvalidJob", "JobManager", "JobNotFound", "JobStateError", "LearnerSettings", "Update"]
