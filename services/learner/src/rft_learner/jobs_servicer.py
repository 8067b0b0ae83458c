"""gRPC face of the job manager (rft.learner.v1.FineTuningService). A tenant's credential
sees and runs its own jobs only, graded as that tenant; the operator's sees all."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from rft.learner.v1 import fine_tuning_pb2 as pb
from rft.learner.v1 import fine_tuning_pb2_grpc
from rft_common.api_keys import DEFAULT_TENANT
from rft_common.paging import InvalidPageToken, next_page_token, page_window
from rft_common.tenancy import TenantDenied, acting_tenant, owner_filter

from rft_learner.http_api.errors import ApiError
from rft_learner.http_api.models import ModelNames
from rft_learner.job_store import CheckpointRecord, EventRecord, JobNotFound, JobRecord, MetricsRecord
from rft_learner.jobs import InvalidJob, JobManager, JobStateError

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["FineTuningService"].full_name


def _timestamp(seconds: float | None) -> Timestamp | None:
    if seconds is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def job_to_proto(job: JobRecord) -> pb.Job:
    message = pb.Job(
        id=job.id,
        model=job.request.model,
        training_file=job.request.training_file,
        validation_file=job.request.validation_file,
        method=job.request.method,
        status=job.status,
        seed=job.seed,
        suffix=job.request.suffix,
        create_time=_timestamp(job.created_at),
        fine_tuned_model=job.fine_tuned_model,
        trained_steps=job.trained_steps,
        total_steps=job.total_steps,
        base_metrics=job.base_metrics,
        final_metrics=job.final_metrics,
        warmup_metrics=job.warmup_metrics,
        exported_step=job.exported_step,
    )
    if job.finished_at is not None:
        message.finish_time.CopyFrom(_timestamp(job.finished_at))
    if job.error_code:
        message.error.CopyFrom(pb.JobError(code=job.error_code, message=job.error_message))
    return message


def event_to_proto(event: EventRecord) -> pb.JobEvent:
    return pb.JobEvent(seq=event.seq, time=_timestamp(event.time), level=event.level, message=event.message)


def metrics_to_proto(record: MetricsRecord) -> pb.MetricsPoint:
    return pb.MetricsPoint(step=record.step, time=_timestamp(record.time), values=record.values)


def checkpoint_to_proto(record: CheckpointRecord) -> pb.Checkpoint:
    return pb.Checkpoint(
        id=record.id,
        job_id=record.job_id,
        step=record.step,
        create_time=_timestamp(record.time),
        path=record.path,
        metrics=record.metrics,
    )


@contextlib.asynccontextmanager
async def _errors(context: grpc.aio.ServicerContext):
    """Domain errors -> status codes, in one place."""
    try:
        yield
    except JobNotFound as exc:
        await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    except InvalidJob as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except JobStateError as exc:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
    except InvalidPageToken as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except TenantDenied as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))


class FineTuningServicer(fine_tuning_pb2_grpc.FineTuningServiceServicer):
    def __init__(self, manager: JobManager, names: ModelNames | None = None) -> None:
        self.manager = manager
        self.names = names

    def _tenant_request(self, request: pb.CreateJobRequest, tenant: str) -> pb.CreateJobRequest:
        """A tenant's job names its model as the HTTP API does (a catalogue name or one of its
        fine-tuned models), never a server path, and is graded by the learner's grader."""
        request = pb.CreateJobRequest.FromString(request.SerializeToString())
        if self.names is None:
            raise TenantDenied("this learner takes jobs from the operator only")
        try:
            request.model = str(self.names.resolve(request.model, tenant).directory)
        except ApiError as exc:
            raise InvalidJob(f"model: {exc.message}") from None
        if request.method.HasField("reinforcement") and request.method.reinforcement.grader.service_address:
            raise TenantDenied("grader.service_address: a tenant's job is graded by the learner's grader service")
        return request

    async def CreateJob(self, request, context):
        async with _errors(context):
            tenant = owner_filter()
            if request.method.HasField("reinforcement"):
                grader = request.method.reinforcement.grader
                grader.tenant = acting_tenant(grader.tenant)  # a tenant's key grades as that tenant only
            model_name = ""
            if tenant is not None:
                model_name = request.model
                request = self._tenant_request(request, tenant)
            job = await self.manager.create(request, tenant or DEFAULT_TENANT, model_name=model_name)
        return pb.CreateJobResponse(job=job_to_proto(job))

    async def GetJob(self, request, context):
        async with _errors(context):
            job = self.manager.get(request.job_id, owner_filter())
        return pb.GetJobResponse(job=job_to_proto(job))

    async def ListJobs(self, request, context):
        async with _errors(context):
            limit, offset = page_window(request.page_size, request.page_token, default_size=20)
        jobs = self.manager.store.list(limit, offset, owner=owner_filter())
        return pb.ListJobsResponse(
            jobs=[job_to_proto(j) for j in jobs], next_page_token=next_page_token(offset, limit, len(jobs))
        )

    async def CancelJob(self, request, context):
        async with _errors(context):
            job = self.manager.cancel(request.job_id, owner_filter())
        return pb.CancelJobResponse(job=job_to_proto(job))

    async def PauseJob(self, request, context):
        async with _errors(context):
            job = self.manager.pause(request.job_id, owner_filter())
        return pb.PauseJobResponse(job=job_to_proto(job))

    async def ResumeJob(self, request, context):
        async with _errors(context):
            job = self.manager.resume(request.job_id, owner_filter())
        return pb.ResumeJobResponse(job=job_to_proto(job))

    async def ListCheckpoints(self, request, context):
        async with _errors(context):
            self.manager.get(request.job_id, owner_filter())
            limit, offset = page_window(request.page_size, request.page_token)
        records = self.manager.store.checkpoints(request.job_id, limit, offset)
        return pb.ListCheckpointsResponse(
            checkpoints=[checkpoint_to_proto(c) for c in records],
            next_page_token=next_page_token(offset, limit, len(records)),
        )

    async def WatchJob(self, request, context):
        async with _errors(context):
            job = self.manager.get(request.job_id, owner_filter())
        queue = self.manager.subscribe(job.id)
        try:
            last_event = last_metrics = 0
            if request.replay:
                for event in self.manager.store.events(job.id):
                    yield pb.WatchJobResponse(event=event_to_proto(event))
                    last_event = event.seq
                for record in self.manager.store.metrics(job.id):
                    yield pb.WatchJobResponse(metrics=metrics_to_proto(record))
                    last_metrics = record.seq
            job = self.manager.get(job.id)
            yield pb.WatchJobResponse(job=job_to_proto(job))
            while not job.finished:
                update = await queue.get()
                if update.kind == "event" and update.payload.seq > last_event:
                    last_event = update.payload.seq
                    yield pb.WatchJobResponse(event=event_to_proto(update.payload))
                elif update.kind == "metrics" and update.payload.seq > last_metrics:
                    last_metrics = update.payload.seq
                    yield pb.WatchJobResponse(metrics=metrics_to_proto(update.payload))
                elif update.kind == "job":
                    job = update.payload
                    yield pb.WatchJobResponse(job=job_to_proto(job))
            # Events published right after the final status (e.g. "job succeeded").
            await asyncio.sleep(0)
            while not queue.empty():
                update = queue.get_nowait()
                if update.kind == "event" and update.payload.seq > last_event:
                    yield pb.WatchJobResponse(event=event_to_proto(update.payload))
        finally:
            self.manager.unsubscribe(job.id, queue)
