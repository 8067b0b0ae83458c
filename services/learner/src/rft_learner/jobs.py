"""The job manager: validates and queues jobs, runs them one at a time, handles pause /
resume / cancel, publishes events to watchers, and recovers after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import pathlib
import shutil
import time
from typing import Any

from rft.learner.v1 import fine_tuning_pb2

from rft_learner import job_metrics
from rft_learner.files import FileStore
from rft_learner.job_store import FINISHED, JobNotFound, JobRecord, JobStore
from rft_learner.job_validation import InvalidJob, JobValidator, answer_field, overlap_warnings
from rft_learner.remote import RemoteError
from rft_learner.trainer.loop import (
    ERROR,
    INFO,
    WARNING,
    JobRun,
    Stopped,
    TrainerSettings,
)
from rft_learner.trainer.rl_step import JobFailure

log = logging.getLogger(__name__)
S = fine_tuning_pb2
LOW_DISK_BYTES = 64 * 1024 * 1024
"""Free space under which a failed job is taken to have hit a full disk."""


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
        self.validator = JobValidator(files, settings.trainer, settings.validate_remote)
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
        job_metrics.export_step(job_id, values)
        self._publish(job_id, Update("metrics", record))

    def update_job(self, job_id: str, **fields: Any) -> JobRecord:
        job = self.store.update(job_id, **fields)
        self._publish(job_id, Update("job", job))
        if "status" in fields:
            self._refresh_gauges()
        return job

    def _refresh_gauges(self) -> None:
        job_metrics.export_job_counts(self.store.count_by_status())

    def subscribe(self, job_id: str) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue()
        self._watchers.setdefault(job_id, set()).add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        self._watchers.get(job_id, set()).discard(queue)

    # -- API ---------------------------------------------------------------------------
    async def create(
        self,
        request: fine_tuning_pb2.CreateJobRequest,
        owner: str = "default",
        metadata: dict[str, str] | None = None,
        model_name: str = "",
    ) -> JobRecord:
        """Validate and queue a job for `owner`, whose files it may use (and no one else's)."""
        await self.validator.validate(request, owner)
        request = type(request).FromString(request.SerializeToString())  # the caller's message stays as sent
        notes = await asyncio.to_thread(self.validator.resolve_auto, request)
        seed = request.seed or 42
        job = self.store.create(request, seed, owner, metadata, model_name)
        self.add_event(job.id, INFO, "job created; files and grader validated")
        for note in notes:
            self.add_event(job.id, INFO if note.startswith("auto hyperparameters") else WARNING, note)
        if request.validation_file:
            train, valid = self.files.get(request.training_file), self.files.get(request.validation_file)
            for warning in await asyncio.to_thread(overlap_warnings, train.path, valid.path, answer_field(request)):
                self.add_event(job.id, WARNING, warning)
        job = self.update_job(job.id, status=S.JOB_STATUS_QUEUED)
        self._wakeup.set()
        return job

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        return self.store.get(job_id, owner)

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        job = self.store.get(job_id, owner)
        if job.finished:
            raise JobStateError(f"job {job_id} already ended ({S.JobStatus.Name(job.status)})")
        if job.id == self._running_job:
            self.stop_requests[job_id] = "cancel"
            self.add_event(job_id, INFO, "cancellation requested; stopping after the current step")
            return job
        job = self.update_job(job_id, status=S.JOB_STATUS_CANCELLED, finished_at=time.time())
        self.add_event(job_id, INFO, "job cancelled")
        return job

    def pause(self, job_id: str, owner: str | None = None) -> JobRecord:
        job = self.store.get(job_id, owner)
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

    def resume(self, job_id: str, owner: str | None = None) -> JobRecord:
        job = self.store.get(job_id, owner)
        if job.status != S.JOB_STATUS_PAUSED:
            raise JobStateError(f"only paused jobs can be resumed; this one is {S.JobStatus.Name(job.status)}")
        job = self.update_job(job_id, status=S.JOB_STATUS_QUEUED)
        self.add_event(job_id, INFO, "job resumed; queued")
        self._wakeup.set()
        return job

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
            if self._disk_full(exc):
                self._pause_for_space(job.id, exc)
            else:
                log.exception("job %s failed", job.id)
                self._fail(job.id, "internal", f"{type(exc).__name__}: {exc}")
        else:
            self.update_job(job.id, status=S.JOB_STATUS_SUCCEEDED, fine_tuned_model=model_dir, finished_at=time.time())
            self.add_event(job.id, INFO, "job succeeded")
        finally:
            self._running_job = None
            self.stop_requests.pop(job.id, None)

    def _disk_full(self, exc: BaseException) -> bool:
        """Whether a failure comes from a full data disk. torch.save and safetensors report it
        in their own exception types, so the free space decides when errno does not."""
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            seen = seen.__cause__ or seen.__context__
        try:
            return shutil.disk_usage(self.settings.trainer.data_dir).free < LOW_DISK_BYTES
        except OSError:
            return False

    def _pause_for_space(self, job_id: str, exc: BaseException) -> None:
        """Pause rather than fail: the job keeps its last checkpoint and continues from it once
        the operator frees space and resumes it."""
        log.error("job %s: the data disk is full (%s); pausing it", job_id, exc)
        try:
            self.update_job(job_id, status=S.JOB_STATUS_PAUSED)
            self.add_event(
                job_id,
                ERROR,
                f"the learner's data disk ({self.settings.trainer.data_dir}) is full: the job is paused at its last"
                f" checkpoint; free space, then resume it ({type(exc).__name__}: {str(exc)[:200]})",
            )
        except Exception:  # noqa: BLE001 - the database is on the same disk; a restart re-queues the job
            log.exception("job %s: could not record the pause", job_id)

    def _fail(self, job_id: str, code: str, message: str) -> None:
        self.update_job(
            job_id, status=S.JOB_STATUS_FAILED, error_code=code, error_message=message, finished_at=time.time()
        )
        self.add_event(job_id, ERROR, f"job failed ({code}): {message}")


__all__ = ["FINISHED", "InvalidJob", "JobManager", "JobNotFound", "JobStateError", "LearnerSettings", "Update"]
