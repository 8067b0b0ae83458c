"""Between OpenAI's JSON and the learner's records: job requests in, files, jobs, events
and checkpoints out."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message
from rft.learner.v1 import fine_tuning_pb2 as S

from rft_learner.datasets import DatasetReport
from rft_learner.files import StoredFile
from rft_learner.http_api import schemas
from rft_learner.http_api.errors import ApiError
from rft_learner.http_api.models import ModelNames
from rft_learner.job_store import CheckpointRecord, EventRecord, JobRecord, MetricsRecord
from rft_learner.trainer.loop import ERROR, WARNING

STATUS = {
    S.JOB_STATUS_VALIDATING_FILES: "validating_files",
    S.JOB_STATUS_QUEUED: "queued",
    S.JOB_STATUS_RUNNING: "running",
    S.JOB_STATUS_PAUSED: "paused",
    S.JOB_STATUS_SUCCEEDED: "succeeded",
    S.JOB_STATUS_FAILED: "failed",
    S.JOB_STATUS_CANCELLED: "cancelled",
}
# OpenAI's hyperparameters that have no counterpart field: accepted, never stored.
ACCEPTED_ONLY = {"reasoning_effort"}


def enum_prefix(enum: EnumDescriptor) -> str:
    return enum.values[0].name.removesuffix("UNSPECIFIED")


def _set_field(message: Message, field: FieldDescriptor, value: Any, param: str) -> None:
    def refuse(expected: str) -> ApiError:
        return ApiError(400, f"{param}: expected {expected}, got {value!r}", param=param, code="invalid_hyperparameter")

    if field.is_repeated:  # lists of strings (tool_servers)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise refuse("a list of strings")
        getattr(message, field.name).extend(value)
        return
    if field.enum_type is not None:
        prefix = enum_prefix(field.enum_type)
        choices = [v.name.removeprefix(prefix).lower() for v in field.enum_type.values if v.number]
        if not isinstance(value, str) or value.lower() not in choices:
            raise refuse("one of " + ", ".join(choices))
        setattr(message, field.name, field.enum_type.values_by_name[prefix + value.upper()].number)
    elif field.type == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise refuse("true or false")
        setattr(message, field.name, value)
    elif field.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise refuse('an integer or "auto"')
        if not -(2**31) <= value < 2**31:
            raise refuse("an integer in the 32-bit range")
        setattr(message, field.name, int(value))
    elif field.type == FieldDescriptor.TYPE_DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse('a number or "auto"')
        setattr(message, field.name, float(value))
    elif field.type == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise refuse("a string")
        setattr(message, field.name, value)
    else:  # pragma: no cover - the hyperparameter messages hold scalars only
        raise refuse("a scalar")


def fill_hyperparameters(message: Message, values: dict[str, Any], param: str) -> None:
    """Set `message`'s fields from OpenAI-style values ("auto" or None leaves the server's
    default); a name that is not a field is refused with the names that are."""
    for name, value in values.items():
        if name in ACCEPTED_ONLY or value is None or value == "auto":
            continue
        field = message.DESCRIPTOR.fields_by_name.get(name)
        if field is None or field.message_type is not None:
            known = sorted(f.name for f in message.DESCRIPTOR.fields if f.message_type is None)
            raise ApiError(
                400,
                f"{param}.{name}: unknown hyperparameter; accepted: {', '.join(known)}",
                param=f"{param}.{name}",
                code="invalid_hyperparameter",
            )
        _set_field(message, field, value, f"{param}.{name}")


def hyperparameters_json(message: Message) -> dict[str, Any]:
    """The fields a job has set, enums by their lower-case names ("grpo")."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.is_repeated:
            value = list(value)
        elif field.enum_type is not None:
            value = field.enum_type.values_by_number[value].name.removeprefix(enum_prefix(field.enum_type)).lower()
        out[field.name] = value
    return out


def _endpoint_in(spec: Any, where: str) -> str | None:
    """The path of a `base_url` anywhere in a grader spec (multi nests graders), or None."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "base_url":
                return f"{where}.base_url"
            if found := _endpoint_in(value, f"{where}.{key}"):
                return found
    elif isinstance(spec, list):
        for index, value in enumerate(spec):
            if found := _endpoint_in(value, f"{where}[{index}]"):
                return found
    return None


def refuse_endpoint(spec: dict[str, Any], where: str = "grader") -> None:
    if found := _endpoint_in(spec, where):
        raise ApiError(
            400,
            f"{found}: a grader spec sent to this API cannot name a model endpoint; model graders use the"
            " endpoint the operator configured",
            found,
        )


def create_job_request(body: schemas.CreateJobBody, model_dir: str, tenant: str) -> S.CreateJobRequest:
    """The gRPC request for an OpenAI job body; the grader runs as the caller's tenant on
    the learner's own grader service (a body cannot point it elsewhere)."""
    request = S.CreateJobRequest(
        model=model_dir,
        training_file=body.training_file,
        validation_file=body.validation_file or "",
        seed=body.seed or 0,
        suffix=body.suffix or "",
    )
    if body.integrations:
        raise ApiError(400, "integrations are not supported (metrics are in events and Prometheus)", "integrations")
    method = body.method or schemas.Method(type="supervised", supervised=schemas.SupervisedMethod())
    if method.type == "dpo":
        raise ApiError(400, "method.type: dpo is not supported; use supervised or reinforcement", "method.type")
    if method.type == "reinforcement":
        if method.reinforcement is None:
            raise ApiError(400, "method.reinforcement: required when method.type is reinforcement", "method")
        if body.hyperparameters is not None:
            raise ApiError(
                400,
                "hyperparameters: a reinforcement job takes them in method.reinforcement.hyperparameters",
                "hyperparameters",
            )
        refuse_endpoint(method.reinforcement.grader, "method.reinforcement.grader")
        target = request.method.reinforcement
        target.grader.spec.update(method.reinforcement.grader)
        target.grader.tenant = tenant
        hyper = method.reinforcement.hyperparameters
        if hyper is not None:
            fill_hyperparameters(
                target.hyperparameters, hyper.model_dump(exclude_none=True), "method.reinforcement.hyperparameters"
            )
        return request
    supervised = method.supervised or schemas.SupervisedMethod()
    target = request.method.supervised
    target.answer_field = supervised.answer_field or ""
    for hyper in (body.hyperparameters, supervised.hyperparameters):
        if hyper is not None:
            fill_hyperparameters(
                target.hyperparameters, hyper.model_dump(exclude_none=True), "method.supervised.hyperparameters"
            )
    return request


def _integral(value: Any) -> Any:
    """A Struct keeps every number as a double: give back the integers the user wrote."""
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def file_json(stored: StoredFile) -> dict[str, Any]:
    return schemas.FileObject(
        id=stored.id,
        bytes=stored.size_bytes,
        created_at=int(stored.created_at),
        filename=stored.filename,
        purpose="fine-tune",
    ).model_dump()


def _error_param(message: str) -> str | None:
    head = message.split(":", 1)[0]
    return head if head and " " not in head and len(head) < 80 else None


def job_json(job: JobRecord, names: ModelNames) -> dict[str, Any]:
    request = job.request
    kind = request.method.WhichOneof("method") or "supervised"
    method: dict[str, Any] = {"type": kind}
    if kind == "reinforcement":
        rl = request.method.reinforcement
        hyper = hyperparameters_json(rl.hyperparameters)
        grader = _integral(json_format.MessageToDict(rl.grader.spec)) if rl.grader.HasField("spec") else {}
        method["reinforcement"] = {"grader": grader, "hyperparameters": hyper}
    else:
        sft = request.method.supervised
        hyper = hyperparameters_json(sft.hyperparameters)
        method["supervised"] = {"hyperparameters": hyper, "answer_field": sft.answer_field}
    error = None
    if job.error_code:
        error = {"code": job.error_code, "message": job.error_message, "param": _error_param(job.error_message)}
    return schemas.Job(
        id=job.id,
        created_at=int(job.created_at),
        error=error,
        fine_tuned_model=names.fine_tuned(job),
        finished_at=int(job.finished_at) if job.finished_at is not None else None,
        hyperparameters={k: hyper[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier") if k in hyper},
        method=method,
        model=job.model_name or names.base_name(job),
        organization_id=job.owner,
        seed=job.seed,
        status=STATUS.get(job.status, "unknown"),
        training_file=request.training_file,
        validation_file=request.validation_file or None,
        metadata=job.metadata or None,
        user_provided_suffix=request.suffix or None,
        trained_steps=job.trained_steps,
        total_steps=job.total_steps,
        base_metrics=job.base_metrics,
        final_metrics=job.final_metrics,
    ).model_dump()


def event_id(job_id: str, kind: str, seq: int) -> str:
    return f"ftevent-{job_id.removeprefix('ftjob-')}-{kind}{seq}"


def _level(level: int) -> str:
    return {WARNING: "warn", ERROR: "error"}.get(level, "info")


def message_event(job_id: str, record: EventRecord) -> dict[str, Any]:
    return {
        "id": event_id(job_id, "e", record.seq),
        "object": "fine_tuning.job.event",
        "created_at": int(record.time),
        "level": _level(record.level),
        "message": record.message,
        "type": "message",
        "data": {},
    }


def _is_score(name: str) -> bool:
    return "reward" in name or name.startswith(("pass@", "top@", "greedy_pass@"))


def metrics_event(job_id: str, record: MetricsRecord, total_steps: int) -> dict[str, Any]:
    """OpenAI's metrics event: step, total_steps, scores (train_reward_mean and, after an
    evaluation, valid_reward_mean ...), timing, grader error counts; `metrics` holds every
    value the learner recorded, under the names docs/learner.md defines."""
    values = record.values
    scores = {name: value for name, value in values.items() if _is_score(name)}
    timing = {name.removesuffix("_seconds"): value for name, value in values.items() if name.endswith("_seconds")}
    errors = {name: value for name, value in values.items() if name.endswith("grader_errors")}
    shown = ", ".join(f"{name}={value:.4g}" for name, value in scores.items()) or "metrics recorded"
    label = "evaluation" if "valid_reward_mean" in values else "step"
    return {
        "id": event_id(job_id, "m", record.seq),
        "object": "fine_tuning.job.event",
        "created_at": int(record.time),
        "level": "info",
        "message": f"{label} {record.step}/{total_steps}: {shown}",
        "type": "metrics",
        "data": {
            "step": record.step,
            "total_steps": total_steps,
            "scores": scores,
            "timing": timing,
            "errors": errors,
            "metrics": values,
        },
    }


def checkpoint_json(job: JobRecord, record: CheckpointRecord, names: ModelNames) -> dict[str, Any]:
    return schemas.JobCheckpoint(
        id=f"ftckpt-{job.id.removeprefix('ftjob-')}-{record.step}",
        created_at=int(record.time),
        fine_tuned_model_checkpoint=names.checkpoint(job, record.step),
        fine_tuning_job_id=job.id,
        step_number=record.step,
        metrics={"step": float(record.step), **record.metrics},
    ).model_dump()


MAX_LINE_PROBLEMS = 10_000
_FIELD_AT_START = re.compile(r"^'?(messages(?:\[\d+\])?(?:\.\w+)?)'?\s(?:is|must|has)\b")
_MISSING_FIELD = re.compile(r"^missing field '([^']+)'")


def line_field(reason: str) -> str:
    """The field a dataset line problem is about ("messages[1].role"), or "" for the line as
    a whole (bad JSON, too long, not an object)."""
    if match := _MISSING_FIELD.match(reason) or _FIELD_AT_START.match(reason):
        return match.group(1)
    if reason.startswith("the last message"):
        return "messages"
    return ""


def line_problems(report: DatasetReport | None) -> dict[str, Any]:
    """A rejected file's bad lines for the error object: `lines` [{line, field, reason}]
    (every one, up to MAX_LINE_PROBLEMS) and how many were left out."""
    if report is None:
        return {}
    problems = [{"line": e.line, "field": line_field(e.reason), "reason": e.reason} for e in report.errors]
    return {"lines": problems[:MAX_LINE_PROBLEMS], "lines_left_out": max(0, len(problems) - MAX_LINE_PROBLEMS)}
