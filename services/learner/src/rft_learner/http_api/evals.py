"""Routes of evaluations (a subset of OpenAI's Evals API) and saved graders (ours).

Thin: each route checks the tenant's ownership, validates, and calls the store
(eval_store.py) or the run engine (evaluations.py); the two adapters at the end connect
the engine to the learner's inference pool (one vLLM server per model, the tenant's
cache_salt, as chat completions use) and grader service. docs/openai-migration.md has
the shapes and what differs from OpenAI.

A tool-using run (sampling_params.max_turns / tool_servers, ours) samples through a
rollout service started for the run's model instead (`rft-rollout serve`, as `rft evals
run` starts one; rft_common.rollout_process): the rollout runs the episode loop and
reaches the tool servers, exactly as for a job's validation. It inherits the learner's
environment, so the operator gives it the tool servers with RFT_ROLLOUT_TOOL_SERVERS_FILE
(and any other RFT_ROLLOUT_* setting, e.g. RFT_ROLLOUT_MAX_MODEL_LEN). It runs vLLM on the
learner's machine, beside the trainer (docs/openai-migration.md: its GPU memory). A start
that fails tells the tenant a reference only; the learner's log has the details."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import shutil
from typing import Any

import grpc
import httpx
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.security import HTTPBearer
from rft.common.v1 import common_pb2
from rft.grader.v1 import grader_pb2
from rft.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from rft_common.episodes import episode_chat_messages, episode_json, episode_params, grader_sample
from rft_common.rollout_process import RolloutProcess, RolloutStartError, default_rollout_command

from rft_learner.db import UnknownCursor
from rft_learner.eval_store import (
    CANCELED,
    FINAL,
    INTERRUPTED,
    EvalStore,
    NotFound,
    OutputItemRecord,
    RunRecord,
    TooManyRuns,
    output_item_index,
)
from rft_learner.evaluations import (
    MAX_ACTIVE_RUNS_PER_TENANT,
    Answers,
    EvalRunner,
    Graded,
    RunFailure,
    RunPlan,
    SamplingError,
    SamplingSettings,
    run_size_issue,
)
from rft_learner.files import FileNotFound
from rft_learner.http_api import eval_schemas as S
from rft_learner.http_api.convert import refuse_endpoint
from rft_learner.http_api.errors import ApiError, not_found
from rft_learner.remote import RemoteError, retry_transient, sample_output, to_struct

GRADE_BATCH = 512
GRADER_PATIENCE_SECONDS = 300.0
SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {"output_text": {"type": "string"}, "output_json": {"type": "object"}},
    "required": ["output_text"],
}
ORDER = Query("asc", pattern="^(asc|desc)$", description="By creation time: asc (oldest first) or desc.")
TOOL_SERVERS_ENV = "RFT_ROLLOUT_TOOL_SERVERS_FILE"
"""The rollout's own setting: the tool servers file of the rollouts that tool-using runs start."""
EPISODE_ROLLOUT_READY_SECONDS = 900.0


def tenant_cache_salt(owner: str) -> str:
    """The prefix-cache salt of a tenant's requests, the same one chat completions send."""
    return "tenant-" + hashlib.sha256(owner.encode()).hexdigest()[:32]


def page_of(objects: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A cursor page from up to limit + 1 objects (the extra one only says there is more)."""
    data = objects[:limit]
    return {
        "object": "list",
        "data": data,
        "has_more": len(objects) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }


def criterion_of(spec: dict[str, Any]) -> dict[str, str]:
    kind = str(spec.get("type", ""))
    return {"name": str(spec.get("name") or kind), "type": kind}


def eval_json(record) -> dict[str, Any]:
    body = record.body
    schema: dict[str, Any] = {"type": "object", "properties": {"item": body["item_schema"]}, "required": ["item"]}
    if body["include_sample_schema"]:
        schema["properties"]["sample"] = SAMPLE_SCHEMA
        schema["required"].append("sample")
    return {
        "id": record.id,
        "object": "eval",
        "created_at": int(record.created_at),
        "name": body.get("name") or "",  # never null (an older update could store one)
        "data_source_config": {"type": "custom", "schema": schema},
        "testing_criteria": body["testing_criteria"],
        "metadata": body["metadata"],
    }


def run_json(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "eval.run",
        "eval_id": run.eval_id,
        "name": run.request["name"],
        "model": run.request["data_source"]["model"],
        "status": run.status,
        "created_at": int(run.created_at),
        "data_source": run.request["data_source"],
        "error": {"code": run.error_code, "message": run.error_message} if run.error_code else None,
        "metadata": run.request["metadata"],
        "report_url": "",
        **run.results,
        "finished_at": int(run.finished_at) if run.finished_at else None,
    }


def output_item_json(eval_id: str, item: OutputItemRecord) -> dict[str, Any]:
    return {
        "id": item.id,
        "object": "eval.run.output_item",
        "created_at": int(item.created_at),
        "eval_id": eval_id,
        "run_id": item.run_id,
        "datasource_item_id": item.index,
        "status": item.status,
        **item.body,
    }


def saved_grader_json(record) -> dict[str, Any]:
    return {
        "id": record.id,
        "object": "grader",
        "name": record.name,
        "grader": record.spec,
        "created_at": int(record.created_at),
    }


def register(app: FastAPI, ctx) -> None:
    """Add the /v1/evals and /v1/graders routes; `ctx` is the API's ApiContext."""
    store = EvalStore(ctx.jobs.store.db)
    runner = EvalRunner(store)
    bearer = HTTPBearer(auto_error=False, description="An API key from the operator's --api-keys-file.")

    async def tenant(request: Request, _documents_the_scheme=Security(bearer)) -> str:
        return request.scope["rft_tenant"]  # set by the API's guard, which has checked the key

    async def owned(what: str, param: str, identifier: str, getter, *args):
        """getter(*args) off the event loop, or the 404 of `what` named `identifier` (never
        the owner)."""
        try:
            return await asyncio.to_thread(getter, *args)
        except NotFound:
            raise not_found(what, identifier, param) from None

    async def validate(spec: dict[str, Any], owner: str, param: str) -> None:
        """As /v1/fine_tuning/alpha/graders/validate: 400 naming the field, 503 without a grader."""
        refuse_endpoint(spec, param)
        request = grader_pb2.ValidateGraderRequest(tenant=owner, spec=to_struct(spec))
        try:
            response = await ctx.grader.ValidateGrader(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                raise ApiError(400, f"{param}: {exc.details()}", param=param, code="invalid_grader") from None
            raise ApiError(
                503, f"grader service: {exc.code().name}: {exc.details()}", code="grader_unavailable"
            ) from None
        if not response.valid:
            issues = [f"{i.field}: {i.message}" if i.field else i.message for i in response.issues]
            field = next((i.field for i in response.issues if i.field), "")
            raise ApiError(
                400,
                f"invalid grader in {param}: " + "; ".join(issues),
                param=f"{param}.{field}" if field else param,
                code="invalid_grader",
            )

    def cursor_error(exc: UnknownCursor) -> ApiError:
        return ApiError(400, str(exc), param="after")

    # -- evals -------------------------------------------------------------------------------
    @app.post("/v1/evals", response_model=S.Eval, tags=["evals"])
    async def create_eval(body: S.CreateEvalBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        if len(body.testing_criteria) != 1:
            raise ApiError(
                400,
                f"testing_criteria: exactly one grader is supported, got {len(body.testing_criteria)};"
                " combine several with a multi grader",
                param="testing_criteria",
            )
        await validate(body.testing_criteria[0], owner, "testing_criteria[0]")
        stored = {
            "name": body.name or "",
            "item_schema": body.data_source_config.item_schema,
            "include_sample_schema": body.data_source_config.include_sample_schema,
            "testing_criteria": body.testing_criteria,
            "metadata": body.metadata,
        }
        return eval_json(await asyncio.to_thread(store.create_eval, owner, stored))

    @app.get("/v1/evals", response_model=S.EvalPage, tags=["evals"])
    async def list_evals(
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=100),
        order: str = ORDER,
        order_by: str = Query("created_at", pattern="^(created_at|updated_at)$"),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        try:
            records = await asyncio.to_thread(store.list_evals, owner, limit + 1, after or "", order, order_by)
        except UnknownCursor as exc:
            raise cursor_error(exc) from None
        return page_of([eval_json(r) for r in records], limit)

    @app.get("/v1/evals/{eval_id}", response_model=S.Eval, tags=["evals"])
    async def retrieve_eval(eval_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        return eval_json(await owned("eval", "eval_id", eval_id, store.get_eval, eval_id, owner))

    @app.post("/v1/evals/{eval_id}", response_model=S.Eval, tags=["evals"])
    async def update_eval(eval_id: str, body: S.UpdateEvalBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        changes = body.model_dump(exclude_unset=True)
        if changes.get("name", "") is None:
            del changes["name"]  # null leaves the name as it is, as at OpenAI
        return eval_json(await owned("eval", "eval_id", eval_id, store.update_eval, eval_id, owner, changes))

    @app.delete("/v1/evals/{eval_id}", response_model=S.EvalDeleted, tags=["evals"])
    async def delete_eval(eval_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        # Rows first, then every task of its runs: a run that starts or writes in between
        # finds its row gone and stops, so nothing keeps sampling for a deleted eval.
        await owned("eval", "eval_id", eval_id, store.delete_eval, eval_id, owner)
        await runner.cancel_eval(eval_id)
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}

    # -- runs --------------------------------------------------------------------------------
    @app.post("/v1/evals/{eval_id}/runs", response_model=S.EvalRun, tags=["evals"])
    async def create_run(eval_id: str, body: S.CreateRunBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        evaluation = await owned("eval", "eval_id", eval_id, store.get_eval, eval_id, owner)
        source = body.data_source
        try:
            stored = await asyncio.to_thread(ctx.files.get, source.source.id, owner)
        except FileNotFound:
            raise ApiError(
                400,
                f"data_source.source.id: no file {source.source.id!r} (upload one with POST /v1/files)",
                param="data_source.source.id",
                code="file_not_found",
            ) from None
        model = await asyncio.to_thread(ctx.names.resolve, source.model, owner, param="data_source.model")
        params = source.sampling_params
        settings = SamplingSettings(
            params.n,
            params.temperature,
            params.top_p,
            params.max_completion_tokens,
            params.seed,
            params.max_turns,
            tuple(params.tool_servers),
        )
        if settings.episodic:
            _check_episode_settings(settings, owner)
        too_big = run_size_issue(stored.line_count, settings)
        if too_big:
            raise ApiError(
                400,
                f"data_source.sampling_params: {too_big}",
                param="data_source.sampling_params.max_completion_tokens",
                code="run_too_large",
            )
        data_source = source.model_dump()
        if not settings.episodic:  # a plain run's data source reads as OpenAI's
            data_source["sampling_params"].pop("max_turns")
            data_source["sampling_params"].pop("tool_servers")
        data_source["input_messages"] = {"type": "item_reference", "item_reference": "item.messages"}
        spec = evaluation.body["testing_criteria"][0]
        criterion = criterion_of(spec)
        results = {
            "result_counts": {"total": 0, "passed": 0, "failed": 0, "errored": 0},
            "per_testing_criteria_results": [{"testing_criteria": criterion["name"], "passed": 0, "failed": 0}],
            "per_model_usage": [],
            "metrics": {},
            "progress": {"items_done": 0, "items_total": stored.line_count},
        }
        request = {"name": body.name or source.model, "data_source": data_source, "metadata": body.metadata}
        try:
            run = await asyncio.to_thread(
                store.create_run, eval_id, owner, request, results, MAX_ACTIVE_RUNS_PER_TENANT
            )
        except NotFound:
            raise not_found("eval", eval_id, "eval_id") from None
        except TooManyRuns as exc:
            raise ApiError(
                429,
                f"at most {MAX_ACTIVE_RUNS_PER_TENANT} evaluation runs may be queued or in progress per tenant"
                f" (you have {exc.active}): wait for one to finish, or cancel one",
                code="rate_limited",
            ) from None
        runner.submit(
            RunPlan(
                run_id=run.id,
                file_path=stored.path,
                total_rows=stored.line_count,
                settings=settings,
                criterion=criterion,
                model=model.id,
                open_sampler=(
                    (lambda: _rollout_sampler(model, owner, settings))
                    if settings.episodic
                    else (lambda: _inference_sampler(ctx.inference, model, owner, settings))
                ),
                grade=_grader(ctx.grader, owner, spec),
                owner=owner,
                eval_id=eval_id,
            )
        )
        return run_json(run)

    @app.get("/v1/evals/{eval_id}/runs", response_model=S.EvalRunPage, tags=["evals"])
    async def list_runs(
        eval_id: str,
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=100),
        order: str = ORDER,
        status: str | None = Query(None, pattern="^(queued|in_progress|completed|canceled|failed)$"),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        await owned("eval", "eval_id", eval_id, store.get_eval, eval_id, owner)
        try:
            runs = await asyncio.to_thread(store.list_runs, eval_id, owner, limit + 1, after or "", order, status or "")
        except UnknownCursor as exc:
            raise cursor_error(exc) from None
        return page_of([run_json(r) for r in runs], limit)

    async def owned_run(eval_id: str, run_id: str, owner: str) -> RunRecord:
        return await owned("run", "run_id", run_id, store.get_run, eval_id, run_id, owner)

    @app.get("/v1/evals/{eval_id}/runs/{run_id}", response_model=S.EvalRun, tags=["evals"])
    async def retrieve_run(eval_id: str, run_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        return run_json(await owned_run(eval_id, run_id, owner))

    async def cancel_run(eval_id: str, run_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        run = await owned_run(eval_id, run_id, owner)
        if run.status in FINAL and run.status != CANCELED:
            raise ApiError(409, f"run {run_id} has already {run.status}", param="run_id", code="invalid_run_state")
        await runner.cancel(run_id)
        return run_json(await owned_run(eval_id, run_id, owner))

    for path in ("/v1/evals/{eval_id}/runs/{run_id}", "/v1/evals/{eval_id}/runs/{run_id}/cancel"):
        app.post(path, response_model=S.EvalRun, tags=["evals"], name="cancel_run", summary="Cancel a run")(cancel_run)

    @app.delete("/v1/evals/{eval_id}/runs/{run_id}", response_model=S.EvalRunDeleted, tags=["evals"])
    async def delete_run(eval_id: str, run_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        # The row first, then its task (if any): the task finds nothing to write and stops.
        await owned("run", "run_id", run_id, store.delete_run, eval_id, run_id, owner)
        await runner.cancel(run_id)
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    @app.get("/v1/evals/{eval_id}/runs/{run_id}/output_items", response_model=S.OutputItemPage, tags=["evals"])
    async def list_output_items(
        eval_id: str,
        run_id: str,
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=100, description="1-100 (an item holds up to 65 answers)."),
        order: str = Query("asc", pattern="^(asc|desc)$", description="By row: asc (file order) or desc."),
        status: str | None = Query(None, pattern="^(pass|fail|error)$"),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        await owned_run(eval_id, run_id, owner)
        after_index = None
        if after:
            after_index = output_item_index(run_id, after)
            if after_index is None:
                raise ApiError(400, f"after: no output item {after!r} in this run", param="after")
        items = await asyncio.to_thread(store.list_output_items, run_id, limit + 1, after_index, order, status or "")
        return page_of([output_item_json(eval_id, i) for i in items], limit)

    @app.get(
        "/v1/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}", response_model=S.OutputItem, tags=["evals"]
    )
    async def retrieve_output_item(
        eval_id: str, run_id: str, output_item_id: str, owner: str = Depends(tenant)
    ) -> dict[str, Any]:
        await owned_run(eval_id, run_id, owner)
        index = output_item_index(run_id, output_item_id)
        missing = not_found("output_item", output_item_id, "output_item_id")
        if index is None:
            raise missing
        try:
            return output_item_json(eval_id, await asyncio.to_thread(store.get_output_item, run_id, index))
        except NotFound:
            raise missing from None

    # -- saved graders (ours) ----------------------------------------------------------------
    @app.post("/v1/graders", response_model=S.SavedGrader, tags=["graders"])
    async def save_grader(body: S.SaveGraderBody, owner: str = Depends(tenant)) -> dict[str, Any]:
        """Ours: save a grader spec for the tenant, after the checks of graders/validate."""
        await validate(body.grader, owner, "grader")
        return saved_grader_json(await asyncio.to_thread(store.save_grader, owner, body.name, body.grader))

    @app.get("/v1/graders", response_model=S.SavedGraderPage, tags=["graders"])
    async def list_saved_graders(
        after: str | None = Query(None),
        limit: int = Query(20, ge=1, le=100),
        order: str = Query("desc", pattern="^(asc|desc)$", description="By creation time; newest first by default."),
        owner: str = Depends(tenant),
    ) -> dict[str, Any]:
        """Ours: the tenant's saved graders."""
        try:
            records = await asyncio.to_thread(store.list_graders, owner, limit + 1, after or "", order)
        except UnknownCursor as exc:
            raise cursor_error(exc) from None
        return page_of([saved_grader_json(r) for r in records], limit)

    @app.get("/v1/graders/{grader_id}", response_model=S.SavedGrader, tags=["graders"])
    async def retrieve_saved_grader(grader_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        """Ours: one saved grader."""
        return saved_grader_json(await owned("grader", "grader_id", grader_id, store.get_grader, grader_id, owner))

    @app.delete("/v1/graders/{grader_id}", response_model=S.SavedGraderDeleted, tags=["graders"])
    async def delete_saved_grader(grader_id: str, owner: str = Depends(tenant)) -> dict[str, Any]:
        """Ours: delete a saved grader (evals and jobs that copied its spec keep their copy)."""
        await owned("grader", "grader_id", grader_id, store.delete_grader, grader_id, owner)
        return {"id": grader_id, "object": "grader.deleted", "deleted": True}


# -- the engine's adapters ---------------------------------------------------------------------
@contextlib.asynccontextmanager
async def _inference_sampler(inference, model, owner: str, settings: SamplingSettings):
    """A sampler of `model` through its vLLM server, held for the whole run."""
    try:
        async with inference.serving(model.id, model.directory) as server:

            async def sample(messages, n: int, temperature: float, seed: int | None) -> Answers:
                body: dict[str, Any] = {
                    "model": model.id,
                    "messages": messages,
                    "n": n,
                    "temperature": temperature,
                    "top_p": settings.top_p if temperature > 0 else 1.0,
                    "max_tokens": settings.max_completion_tokens,
                    "cache_salt": tenant_cache_salt(owner),
                }
                if seed is not None:
                    body["seed"] = seed
                headers = {"Authorization": f"Bearer {server.api_key}"}
                try:
                    response = await inference.client.post(
                        server.url + "/v1/chat/completions", json=body, headers=headers, timeout=600
                    )
                except httpx.HTTPError as exc:
                    raise RunFailure(
                        "model_unavailable", f"the inference server for {model.id} failed: {exc}"
                    ) from None
                except RuntimeError as exc:  # the client was closed: the learner is stopping
                    raise RunFailure(INTERRUPTED, f"the learner stopped during this run ({exc})") from None
                if response.status_code == 400:  # this row's request (e.g. a prompt over the context)
                    raise SamplingError(_upstream_message(response))
                if response.status_code != 200:
                    raise RunFailure(
                        "model_error", f"the inference server for {model.id} answered {response.status_code}:"
                        f" {_upstream_message(response)}"
                    )  # fmt: skip
                reply = response.json()
                choices = sorted(reply["choices"], key=lambda c: c["index"])
                usage = reply.get("usage") or {}
                details = usage.get("prompt_tokens_details") or {}
                return Answers(
                    texts=[c["message"].get("content") or "" for c in choices],
                    finish_reasons=[c.get("finish_reason") or "" for c in choices],
                    prompt_tokens=usage.get("prompt_tokens", 0),
                    completion_tokens=usage.get("completion_tokens", 0),
                    cached_tokens=details.get("cached_tokens") or 0,
                )

            yield sample
    except ApiError as exc:  # no vLLM, the server failed to start, every slot busy
        raise RunFailure(exc.code or "model_unavailable", exc.message) from None


def _offered_tool_servers(owner: str) -> list[str] | None:
    """Names of the tool servers in the operator's file that `owner` may use (the rollout's
    allowed_tenants rule), or None when the file cannot be read here (the rollout decides)."""
    try:
        servers = json.loads(pathlib.Path(os.environ[TOOL_SERVERS_ENV]).read_text())["servers"]
        return [
            str(s["name"])
            for s in servers
            if "*" in s.get("allowed_tenants", ["default"]) or owner in s.get("allowed_tenants", ["default"])
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _check_episode_settings(settings: SamplingSettings, owner: str) -> None:
    """Refuse (400) a tool-using run this learner cannot run: no rollout service to start,
    or tool servers that it does not offer to the tenant (checked again, authoritatively,
    by the rollout when the run starts)."""
    param = "data_source.sampling_params.tool_servers"
    command = default_rollout_command()
    if not (pathlib.Path(command).is_file() or shutil.which(command)):
        raise ApiError(
            400,
            "data_source.sampling_params: this learner cannot run tool-using evaluations (max_turns, tool_servers):"
            " the rollout service (rft-rollout) is not installed beside it",
            param="data_source.sampling_params.max_turns",
            code="episodes_unavailable",
        )
    if not settings.tool_servers:
        return
    if settings.max_turns < 2:
        raise ApiError(
            400,
            f"data_source.sampling_params.max_turns: {settings.max_turns} with tool_servers, whose tools would never"
            " run (an episode's last turn ends it without running its tool calls); set 2 or more",
            param="data_source.sampling_params.max_turns",
            code="invalid_max_turns",
        )
    if not os.environ.get(TOOL_SERVERS_ENV):
        raise ApiError(
            400,
            f"{param}: this learner offers no tool servers to evaluation runs (its operator gives them with"
            f" {TOOL_SERVERS_ENV})",
            param=param,
            code="unknown_tool_server",
        )
    offered = _offered_tool_servers(owner)
    unknown = [name for name in settings.tool_servers if offered is not None and name not in offered]
    if unknown:
        raise ApiError(
            400,
            f"{param}: unknown tool server{'s' if len(unknown) > 1 else ''} {', '.join(unknown)};"
            f" offered: {', '.join(offered) if offered else 'none'}",
            param=param,
            code="unknown_tool_server",
        )


FINISH_REASONS = {
    rollout_pb2.FINISH_REASON_STOP: "stop",
    rollout_pb2.FINISH_REASON_LENGTH: "length",
    rollout_pb2.FINISH_REASON_ABORT: "abort",
}


@contextlib.asynccontextmanager
async def _rollout_sampler(model, owner: str, settings: SamplingSettings):
    """A sampler of tool-using episodes: a rollout service for `model` started for the run
    (stopped at its end), episodes acting for `owner` (its tool servers only), graded as
    the learner's validation grades them."""
    episode = episode_params(settings.max_turns, settings.tool_servers, owner)
    # A failed start's log names the operator's tool servers (other tenants' too), targets
    # and paths: the tenant gets a reference, the learner's log the details.
    rollout = RolloutProcess(
        default_rollout_command(),
        str(model.directory),
        ready_timeout=EPISODE_ROLLOUT_READY_SECONDS,
        detailed_errors=False,
    )
    try:
        address = await rollout.__aenter__()
    except RolloutStartError as exc:
        raise RunFailure(
            "model_unavailable",
            f"the rollout service for {model.id} did not start (reference {exc.reference}; the operator finds "
            "the details in the learner's log)",
        ) from None
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = rollout_pb2_grpc.RolloutServiceStub(channel)
            info = await stub.GetModelInfo(rollout_pb2.GetModelInfoRequest(tenant=owner), timeout=60)
            offered = [server.name for server in info.tool_servers]
            unknown = [name for name in settings.tool_servers if name not in offered]
            if unknown:
                raise RunFailure(
                    "unknown_tool_server",
                    f"sampling_params.tool_servers: unknown tool server{'s' if len(unknown) > 1 else ''}"
                    f" {', '.join(unknown)}; offered: {', '.join(offered) or 'none'}",
                )
            limit = info.limits.max_episode_turns
            if limit and settings.max_turns > limit:
                raise RunFailure(
                    "invalid_max_turns",
                    f"sampling_params.max_turns {settings.max_turns} is above the rollout's limit of {limit}",
                )

            async def sample(messages, n: int, temperature: float, seed: int | None) -> Answers:
                sampling = rollout_pb2.SamplingParams(
                    n=n,
                    temperature=temperature,
                    top_p=settings.top_p if temperature > 0 else 1.0,
                    max_tokens=settings.max_completion_tokens,
                )
                if seed is not None:
                    sampling.seed = seed
                chat = [
                    common_pb2.ChatMessage(role=m.get("role", "user"), content=_text(m.get("content")))
                    for m in messages
                ]
                request = rollout_pb2.GenerateRequest(
                    prompts=[rollout_pb2.Prompt(chat=rollout_pb2.ChatPrompt(messages=chat))],
                    sampling=sampling,
                    episode=episode,
                )
                try:
                    response = await stub.Generate(request, timeout=600)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # this row (e.g. a prompt too long)
                        raise SamplingError(exc.details() or "invalid request") from None
                    raise RunFailure(
                        "model_error", f"the rollout service for {model.id}: {exc.code().name}: {exc.details()}"
                    ) from None
                result = response.results[0]
                samples = sorted(result.samples, key=lambda s: s.sample_index)
                return Answers(
                    texts=[s.text for s in samples],
                    finish_reasons=[FINISH_REASONS.get(s.finish_reason, "") for s in samples],
                    prompt_tokens=response.prompt_tokens,
                    completion_tokens=response.completion_tokens,
                    graded_as=[grader_sample(s) for s in samples],
                    episodes=[
                        {**episode_json(s.episode), "messages": episode_chat_messages(s.episode)} for s in samples
                    ],
                )

            yield sample
    except grpc.aio.AioRpcError as exc:
        raise RunFailure("model_unavailable", f"the rollout service for {model.id}: {exc.code().name}") from None
    finally:
        await rollout.stop()
        pathlib.Path(rollout.log_path).unlink(missing_ok=True)


def _text(content: Any) -> str:
    if isinstance(content, list):  # OpenAI text parts
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _upstream_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", response.json())
        return str(error.get("message", error) if isinstance(error, dict) else error)[:2000]
    except ValueError:
        return response.text[:2000]


def _grader(stub, owner: str, spec: dict[str, Any]):
    """A Grader (evaluations.py) over the grader service, with the tenant's name."""
    struct = to_struct(spec)

    async def grade_batch(pairs) -> list[Graded]:
        request = grader_pb2.GradeRequest(tenant=owner, spec=struct)
        for answer, item in pairs:  # a text, or an episode's SampleOutput (its tool calls and messages)
            output = sample_output(answer) if isinstance(answer, str) else answer
            request.items.append(grader_pb2.GradeItem(sample=output, item=to_struct(item)))
        try:
            response = await retry_transient(
                lambda: stub.Grade(request, timeout=600), "grader Grade", GRADER_PATIENCE_SECONDS
            )
        except RemoteError as exc:
            cause = exc.__cause__
            if isinstance(cause, grpc.aio.AioRpcError) and cause.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
            ):
                raise RunFailure("invalid_grader", f"grader: {cause.details()}") from None
            raise RunFailure("grader_unavailable", str(exc)) from None
        if len(response.results) != len(pairs):
            raise RunFailure("grader_error", f"the grader returned {len(response.results)} results for {len(pairs)}")
        return [_graded(r) for r in response.results]

    async def grade(pairs) -> list[Graded]:
        out: list[Graded] = []
        for start in range(0, len(pairs), GRADE_BATCH):
            out += await grade_batch(pairs[start : start + GRADE_BATCH])
        return out

    return grade


def _graded(result: grader_pb2.GradeResult) -> Graded:
    if result.HasField("error"):
        kind = grader_pb2.GradeErrorKind.Name(result.error.kind).removeprefix("GRADE_ERROR_KIND_").lower()
        return Graded(error={"code": kind, "message": result.error.message})
    return Graded(result.score, bool(result.passed), dict(result.sub_scores), dict(result.metrics))
