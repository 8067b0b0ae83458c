"""Routes of the OpenAI-compatible API. Thin: each route checks the caller's tenant, calls
the learner's file store, job manager, grader service or an inference server, and
converts the result (convert.py); OpenAPI at /openapi.json comes from these definitions."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import time
from typing import Any

import grpc
import httpx
from fastapi import Body, Depends, FastAPI, File, Form, Query, Request, Security, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from prometheus_client import Counter, Histogram
from rft.grader.v1 import grader_pb2, grader_pb2_grpc
from rft.learner.v1 import files_pb2
from rft_common.api_keys import ApiKeys
from starlette.exceptions import HTTPException

from rft_learner.db import UnknownCursor
from rft_learner.files import FileNotFound, FileStore, InvalidFile
from rft_learner.http_api import console, convert, errors, hyperparameters, schemas
from rft_learner.http_api.errors import ApiError, not_found
from rft_learner.http_api.inference import InferenceServers
from rft_learner.http_api.models import ModelNames
from rft_learner.job_store import FINISHED, JobNotFound, JobRecord
from rft_learner.job_validation import InvalidJob, method_params
from rft_learner.jobs import JobManager, JobStateError
from rft_learner.remote import RemoteError, sample_output, to_struct
from rft_learner.trainer.loop import WARNING

REQUESTS = Counter("rft_http_requests_total", "HTTP API requests by route and status.", ["method", "route", "code"])
LATENCY = Histogram("rft_http_request_seconds", "HTTP API time to the response's start.", ["method", "route"])
JSON_BODY_LIMIT = 32 * 1024 * 1024
UNFINISHED = tuple(status for status in convert.STATUS if status not in FINISHED)
GRADE_TIMEOUT_SECONDS = 300.0
METRICS_PAGE = 5000


@dataclasses.dataclass
class ApiContext:
    """What the routes use; built by rft_learner.app at start-up."""

    jobs: JobManager
    files: FileStore
    keys: ApiKeys
    names: ModelNames
    grader: grader_pb2_grpc.GraderServiceStub
    inference: InferenceServers


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


UNAUTHENTICATED_PATHS = ("/openapi.json", "/docs", "/docs/oauth2-redirect")
METHODS = {"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}


class _Guard:
    """ASGI middleware in front of every route: the API key is checked from the headers
    before any byte of the body is read (a stranger cannot make the learner buffer a
    body); the body is counted as it arrives, Content-Length or chunked, and refused past
    the limit; and requests are counted by route template (ids stay out of the labels)."""

    def __init__(self, app, keys: ApiKeys, max_file_bytes: int) -> None:
        self.app = app
        self.keys = keys
        self.max_file_bytes = max_file_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in METHODS else "other"
        started, status = time.perf_counter(), {"code": 500}

        async def observed_send(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                LATENCY.labels(method, getattr(scope.get("route"), "path", "unmatched")).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self._guarded(scope, receive, observed_send)
        finally:
            REQUESTS.labels(method, getattr(scope.get("route"), "path", "unmatched"), str(status["code"])).inc()

    async def _guarded(self, scope, receive, send) -> None:
        headers = dict(scope["headers"])
        if scope["path"] not in UNAUTHENTICATED_PATHS and not console.is_console_path(scope["path"]):
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            key = authorization[7:] if authorization[:7].lower() == "bearer " else None
            tenant = self.keys.tenant_for(key)
            if tenant is None:
                message = "Incorrect API key provided." if key else "Missing bearer authentication in header."
                await errors.error_response(401, message, code="invalid_api_key")(scope, receive, send)
                return
            scope["rft_tenant"] = tenant
        limit = self.max_file_bytes + (1 << 20) if scope["path"] == "/v1/files" else JSON_BODY_LIMIT
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > limit:
            response = errors.error_response(
                413, f"request body of {int(length)} bytes is over the limit of {limit}", code="request_too_large"
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, counted_receive, send)


def _page(items: list, limit: int, to_json) -> dict[str, Any]:
    """A cursor page from up to limit + 1 items (the extra one only says there is more)."""
    data = [to_json(item) for item in items[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(items) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def _after(items: list[dict[str, Any]], after: str | None, limit: int) -> list[dict[str, Any]]:
    """Items after the one whose id is `after` (all of them without a cursor), limit + 1."""
    if after:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise ApiError(400, f"after: no item with id {after!r} in this list", param="after")
        items = items[ids.index(after) + 1 :]
    return items[: limit + 1]


def build_app(ctx: ApiContext, max_file_bytes: int, console_dir: str = "none") -> FastAPI:
    app = FastAPI(
        title="RFT learner: OpenAI-compatible fine-tuning API",
        version="1",
        description="OpenAI's files, fine-tuning jobs, graders, models and chat completions paths, served by"
        " the RFT learner. Differences from OpenAI: docs/openai-migration.md.",
        docs_url="/docs",
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(_Guard, keys=ctx.keys, max_file_bytes=max_file_bytes)
    console.mount(app, console_dir)
    bearer = HTTPBearer(auto_error=False, description="An API key from the operator's --api-keys-file.")

    async def tenant(request: Request, _documents_the_scheme=Security(bearer)) -> str:
        return request.scope["rft_tenant"]  # set by _Guard, which has checked the key

    def owned_job(job_id: str, owner: str) -> JobRecord:
        try:
            return ctx.jobs.get(job_id, owner)
        except JobNotFound:
            raise not_found("job", job_id, "fine_tuning_job_id") from None

    # -- files ---------------------------------------------------------------------------
    @app.post("/v1/files", response_model=schemas.FileObject, tags=["files"])
    async def create_file(
        file: UploadFile = File(..., description="A JSONL dataset in OpenAI's RFT format."),
        purpose: str = Form(..., description="Only 'fine-tune'."),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        if purpose != "fine-tune":
            raise ApiError(400, f"purpose: only 'fine-tune' files are supported, got {purpose!r}", param="purpose")
        upload = await asyncio.to_thread(ctx.files.begin_upload)
        try:
            while chunk := await file.read(1 << 20):
                await asyncio.to_thread(upload.write, chunk)
            stored = await asyncio.to_thread(
                ctx.files.commit, upload, file.filename or "upload.jsonl", files_pb2.FILE_PURPOSE_FINE_TUNE, owner
            )
        except InvalidFile as exc:
            raise ApiError(
                400, str(exc), param="file", code="invalid_file", extra=convert.line_problems(exc.report)
            ) from None
        finally:
            upload.discard()
        return convert.file_json(stored)

    @app.get("/v1/files", response_model=schemas.FilePage, tags=["files"])
    async def list_files(
        purpose: str | None = Query(None),
        limit: int = Query(100, ge=1, le=10000),
        after: str | None = Query(None),
        order: str = Query("desc", pattern="^desc$", description="Newest first (the only order)."),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        if purpose not in (None, "fine-tune"):
            return _page([], limit, convert.file_json)
        try:
            stored = await asyncio.to_thread(ctx.files.list, limit + 1, 0, 0, owner, after or "")
        except UnknownCursor as exc:
            raise ApiError(400, str(exc), param="after") from None
        return _page(stored, limit, convert.file_json)

    def owned_file(file_id: str, owner: str):
        try:
            return ctx.files.get(file_id, owner)
        except FileNotFound:
            raise not_found("file", file_id, "file_id") from None

    @app.get("/v1/files/{file_id}", response_model=schemas.FileObject, tags=["files"])
    async def retrieve_file(file_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        return convert.file_json(owned_file(file_id, owner))

    @app.delete("/v1/files/{file_id}", response_model=schemas.FileDeleted, tags=["files"])
    async def delete_file(file_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        owned_file(file_id, owner)
        unfinished = await asyncio.to_thread(ctx.jobs.store.with_status, *UNFINISHED, owner=owner)
        for job in unfinished:
            if file_id in (job.request.training_file, job.request.validation_file):
                raise ApiError(409, f"file {file_id} is used by {job.id}, which has not ended", code="file_in_use")
        await asyncio.to_thread(ctx.files.delete, file_id, owner)
        return {"id": file_id, "object": "file", "deleted": True}

    @app.get("/v1/files/{file_id}/content", tags=["files"], response_class=FileResponse)
    async def file_content(file_id: str, owner: str = Depends(tenant)) -> FileResponse:
        stored = owned_file(file_id, owner)
        return FileResponse(stored.path, media_type="application/jsonl", filename=stored.filename or None)

    # -- fine-tuning jobs ------------------------------------------------------------------
    @app.post("/v1/fine_tuning/jobs", response_model=schemas.Job, tags=["fine-tuning"])
    async def create_job(body: schemas.CreateJobBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        model = ctx.names.resolve(body.model, owner)
        request = convert.create_job_request(body, str(model.directory), owner)
        try:
            job = await ctx.jobs.create(request, owner, body.metadata, body.model)
        except InvalidJob as exc:
            message = str(exc)
            param = message.split(":", 1)[0] if ":" in message else None
            raise ApiError(400, message, param=param, code="invalid_job") from None
        except RemoteError as exc:
            raise ApiError(503, f"could not check the job: {exc}", code="service_unavailable") from None
        effort = body.method.reinforcement.hyperparameters if body.method and body.method.reinforcement else None
        if effort is not None and effort.reasoning_effort not in (None, "default"):
            ctx.jobs.add_event(
                job.id,
                WARNING,
                f"reasoning_effort={effort.reasoning_effort} has no effect: this model has no such control",
            )
        return convert.job_json(job, ctx.names)

    @app.get("/v1/fine_tuning/jobs", response_model=schemas.JobPage, tags=["fine-tuning"])
    async def list_jobs(
        request: Request,
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=100),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        wanted = {
            key[len("metadata[") : -1]: value
            for key, value in request.query_params.items()
            if key.startswith("metadata[") and key.endswith("]")
        }
        matched: list[JobRecord] = []
        cursor = after or ""
        while len(matched) <= limit:
            try:
                batch = ctx.jobs.store.list(200, owner=owner, after=cursor)
            except UnknownCursor as exc:
                raise ApiError(400, str(exc), param="after") from None
            matched += [job for job in batch if all(job.metadata.get(k) == v for k, v in wanted.items())]
            if len(batch) < 200:
                break
            cursor = batch[-1].id
        return _page(matched, limit, lambda job: convert.job_json(job, ctx.names))

    @app.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}", response_model=schemas.Job, tags=["fine-tuning"])
    async def retrieve_job(fine_tuning_job_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        return convert.job_json(owned_job(fine_tuning_job_id, owner), ctx.names)

    def transition(action):
        async def route(fine_tuning_job_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
            owned_job(fine_tuning_job_id, owner)
            try:
                job = action(fine_tuning_job_id, owner)
            except JobStateError as exc:
                raise ApiError(409, str(exc), param="fine_tuning_job_id", code="invalid_job_state") from None
            return convert.job_json(job, ctx.names)

        return route

    for verb, action in (("cancel", ctx.jobs.cancel), ("pause", ctx.jobs.pause), ("resume", ctx.jobs.resume)):
        app.post(
            f"/v1/fine_tuning/jobs/{{fine_tuning_job_id}}/{verb}",
            response_model=schemas.Job,
            tags=["fine-tuning"],
            name=f"{verb}_job",
            summary=f"{verb.capitalize()} a job",
        )(transition(action))

    @app.get("/v1/fine_tuning/jobs/{fine_tuning_job_id}/events", response_model=schemas.EventPage, tags=["fine-tuning"])
    async def list_events(
        fine_tuning_job_id: str,
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=10000),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        job = owned_job(fine_tuning_job_id, owner)
        events, metrics = await asyncio.gather(
            asyncio.to_thread(ctx.jobs.store.events, job.id), asyncio.to_thread(ctx.jobs.store.metrics, job.id)
        )
        merged = [(e.time, 0, e.seq, convert.message_event(job.id, e)) for e in events]
        merged += [(m.time, 1, m.seq, convert.metrics_event(job.id, m, job.total_steps)) for m in metrics]
        merged.sort(key=lambda entry: entry[:3], reverse=True)
        items = _after([entry[3] for entry in merged], after, limit)
        return _page(items, limit, lambda item: item)

    @app.get(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints",
        response_model=schemas.CheckpointPage,
        tags=["fine-tuning"],
    )
    async def list_checkpoints(
        fine_tuning_job_id: str,
        after: str | None = Query(None),
        limit: int = Query(10, ge=1, le=1000),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        job = owned_job(fine_tuning_job_id, owner)
        records = await asyncio.to_thread(ctx.jobs.store.checkpoints, job.id, 1_000_000)
        items = _after([convert.checkpoint_json(job, r, ctx.names) for r in records], after, limit)
        return _page(items, limit, lambda item: item)

    @app.get(
        "/v1/fine_tuning/jobs/{fine_tuning_job_id}/metrics", response_model=schemas.MetricsPage, tags=["fine-tuning"]
    )
    async def list_metrics(
        fine_tuning_job_id: str,
        after_seq: int = Query(0, ge=0, description="Only records after this seq (the last page's last_seq)."),
        limit: int = Query(METRICS_PAGE, ge=1, le=METRICS_PAGE),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        """Our extension: a job's metrics records, oldest first, many to a page (the events
        list pages through them newest first, mixed with messages). Poll with after_seq =
        the last page's last_seq while has_more or for new ones. A job that resumes from a
        checkpoint records its later steps again under new seqs: keep the newest record of
        each step and kind (training or evaluation)."""
        job = owned_job(fine_tuning_job_id, owner)
        records = await asyncio.to_thread(ctx.jobs.store.metrics, job.id, after_seq, limit + 1)
        page = records[:limit]
        return {
            "object": "list",
            "data": [{"seq": r.seq, "step": r.step, "created_at": r.time, "values": r.values} for r in page],
            "has_more": len(records) > limit,
            "total_steps": job.total_steps,
            "last_seq": page[-1].seq if page else after_seq,
        }

    @app.get("/v1/fine_tuning/hyperparameters", tags=["fine-tuning"])
    async def hyperparameter_catalogue(owner: str = Depends(tenant)) -> dict[str, Any]:
        """Our extension: every hyperparameter a job may set, with type, default, bounds,
        choices and documentation, for forms."""
        return hyperparameters.catalogue()

    @app.post("/v1/fine_tuning/hyperparameters/validate", tags=["fine-tuning"])
    async def validate_hyperparameters(
        body: schemas.ValidateMethodBody, owner: str = Depends(tenant)
    ) -> dict[str, Any]:
        """Our extension: check a job's method and hyperparameters as job creation does,
        without files or a model; 400 with the same message and param, or the values the
        job would run with (defaults filled in, "auto" left to the job's start)."""
        probe = schemas.CreateJobBody(model="-", training_file="-", method=body.method)
        try:
            params = method_params(convert.create_job_request(probe, "-", owner))
        except InvalidJob as exc:
            message = str(exc)
            raise ApiError(400, message, param=message.split(":", 1)[0], code="invalid_job") from None
        return {"object": "fine_tuning.hyperparameters.validation", "valid": True, "resolved": params.model_dump()}

    # -- graders ---------------------------------------------------------------------------
    async def grader_call(method, request):
        try:
            return await method(request, timeout=GRADE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise ApiError(400, f"grader: {exc.details()}", param="grader", code="invalid_grader") from None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise ApiError(429, f"grader service: {exc.details()}", code="rate_limited") from None
            raise ApiError(
                503, f"grader service: {exc.code().name}: {exc.details()}", code="grader_unavailable"
            ) from None

    @app.post("/v1/fine_tuning/alpha/graders/run", response_model=schemas.GraderRunResponse, tags=["graders"])
    async def run_grader(body: schemas.GraderRunBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        convert.refuse_endpoint(body.grader)
        request = grader_pb2.GradeRequest(tenant=owner, spec=to_struct(body.grader))
        request.items.append(
            grader_pb2.GradeItem(sample=sample_output(body.model_sample), item=to_struct(body.item or {}))
        )
        response = await grader_call(ctx.grader.Grade, request)
        result = response.results[0]
        errors_seen = error_flags(result.error if result.HasField("error") else None, response.grader_type)
        return {
            "reward": 0.0 if result.HasField("error") else result.score,
            "sub_rewards": dict(result.sub_scores),
            "metadata": {
                "name": str(body.grader.get("name", "")),
                "type": response.grader_type,
                "errors": errors_seen,
                "execution_time": response.grade_seconds,
                "scores": {**dict(result.sub_scores), **dict(result.metrics)},
                "token_usage": None,
                "sampled_model_name": None,
                "passed": result.passed,
            },
            "model_grader_token_usage_per_model": {},
        }

    @app.post("/v1/fine_tuning/alpha/graders/validate", response_model=schemas.GraderValidateResponse, tags=["graders"])
    async def validate_grader(body: schemas.GraderValidateBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        convert.refuse_endpoint(body.grader)
        request = grader_pb2.ValidateGraderRequest(tenant=owner, spec=to_struct(body.grader))
        response = await grader_call(ctx.grader.ValidateGrader, request)
        if not response.valid:
            issues = [f"{i.field}: {i.message}" if i.field else i.message for i in response.issues]
            field = next((i.field for i in response.issues if i.field), "")
            raise ApiError(
                400,
                "invalid grader: " + "; ".join(issues),
                param=f"grader.{field}" if field else "grader",
                code="invalid_grader",
            )
        return {"grader": body.grader}

    # -- models and inference ------------------------------------------------------------------
    def model_json(model) -> dict[str, Any]:
        return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}

    @app.get("/v1/models", response_model=schemas.ModelPage, tags=["models"])
    async def list_models(owner: str = Depends(tenant)) -> dict[str, Any]:
        return {"object": "list", "data": [model_json(m) for m in ctx.names.tenant_models(owner)]}

    @app.get("/v1/models/{model}", response_model=schemas.Model, tags=["models"])
    async def retrieve_model(model: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        return model_json(ctx.names.resolve(model, owner))

    async def relay(path: str, body: dict[str, Any], owner: str) -> Response:
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise ApiError(400, "model: required, a model from GET /v1/models", param="model")
        model = ctx.names.resolve(name, owner)
        # Prefix-cache hits across tenants would let one time another's prompts: each
        # tenant's requests get a cache of their own.
        body = {**body, "cache_salt": "tenant-" + hashlib.sha256(owner.encode()).hexdigest()[:32]}
        stack = contextlib.AsyncExitStack()
        try:
            server = await stack.enter_async_context(ctx.inference.serving(model.id, model.directory))
            upstream_request = ctx.inference.client.build_request(
                "POST", server.url + path, json=body, headers={"Authorization": f"Bearer {server.api_key}"}
            )
            upstream = await ctx.inference.client.send(upstream_request, stream=True)
        except httpx.HTTPError as exc:
            await stack.aclose()
            raise ApiError(
                503, f"the inference server for {model.id} failed: {exc}", code="model_unavailable"
            ) from None
        except BaseException:
            await stack.aclose()
            raise
        stack.push_async_callback(upstream.aclose)
        media_type = upstream.headers.get("content-type", "application/json")
        if not body.get("stream"):
            try:
                content = await upstream.aread()
            finally:
                await stack.aclose()
            return Response(content, status_code=upstream.status_code, media_type=media_type)

        async def chunks():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await stack.aclose()

        return StreamingResponse(chunks(), status_code=upstream.status_code, media_type=media_type)

    @app.post("/v1/chat/completions", tags=["inference"])
    async def chat_completions(
        body: dict[str, Any] = Body(..., description="OpenAI's chat completion request; vLLM answers it."),
        owner: str = Depends(tenant),
    ) -> Response:
        return await relay("/v1/chat/completions", body, owner)

    @app.post("/v1/completions", tags=["inference"])
    async def completions(
        body: dict[str, Any] = Body(..., description="OpenAI's (legacy) completion request; vLLM answers it."),
        owner: str = Depends(tenant),
    ) -> Response:
        return await relay("/v1/completions", body, owner)

    # Evaluations (/v1/evals) and saved graders (/v1/graders): http_api/evals.py.
    from rft_learner.http_api import evals

    evals.register(app, ctx)
    return app


def error_flags(error: grader_pb2.GradeError | None, grader_type: str) -> dict[str, Any]:
    """OpenAI's graders/run error flags from our error kinds (docs/openai-migration.md)."""
    flags: dict[str, Any] = {
        "formula_parse_error": False,
        "invalid_variable_error": False,
        "model_grader_parse_error": False,
        "model_grader_refusal_error": False,
        "model_grader_server_error": False,
        "model_grader_server_error_details": None,
        "other_error": False,
        "python_grader_runtime_error": False,
        "python_grader_runtime_error_details": None,
        "python_grader_server_error": False,
        "python_grader_server_error_type": None,
        "sample_parse_error": False,
        "truncated_observation_error": False,
        "unresponsive_reward_error": False,
    }
    if error is None:
        return flags
    kind = grader_pb2.GradeErrorKind.Name(error.kind).removeprefix("GRADE_ERROR_KIND_").lower()
    if kind == "exception" and grader_type == "python":
        flags.update(python_grader_runtime_error=True, python_grader_runtime_error_details=error.message)
    elif kind in ("resource_limit", "crashed"):
        flags.update(python_grader_server_error=True, python_grader_server_error_type=kind)
    elif kind == "timeout":
        flags["unresponsive_reward_error"] = True
    elif kind == "template":
        flags["invalid_variable_error"] = True
    elif kind == "model_call":
        flags.update(model_grader_server_error=True, model_grader_server_error_details=error.message)
    elif kind == "invalid_input":
        flags["sample_parse_error"] = True
    else:
        flags["other_error"] = True
    flags["details"] = f"{kind}: {error.message}"
    return flags
