"""OpenAI's error envelope: every failure is `{"error": {"message", "type", "param",
"code"}}` with the HTTP status the `openai` SDK maps to its exception classes (400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 409 ConflictError, 413, 503)."""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)

TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error"}


class ApiError(Exception):
    """A refusal with the fields of OpenAI's error object."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        extra: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.extra = extra or {}
        """Fields beyond OpenAI's four (e.g. `lines` of a rejected file); SDKs ignore them."""


def not_found(what: str, identifier: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"No {what} found with id '{identifier}'.", param=param, code=f"{what}_not_found")


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, extra: dict | None = None
) -> JSONResponse:
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code, **(extra or {})}}
    return JSONResponse(body, status_code=status)


def field_path(location: tuple) -> str:
    """('body', 'method', 'reinforcement', 'hyperparameters', 'batch_size') -> the dotted param."""
    parts = [str(p) for p in location if p not in ("body", "query", "path", "form")]
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            where = field_path(tuple(error.get("loc", ())))
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # its location is a character offset, not a field
            return error_response(400, f"the body is not valid JSON: {first.get('msg')}", code="invalid_json")
        param = field_path(tuple(first.get("loc", ()))) or None
        return error_response(400, "Invalid request: " + "; ".join(problems), param=param, code="invalid_request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        code = {413: "request_too_large", 405: "method_not_allowed"}.get(exc.status_code)
        if exc.status_code == 404:
            message = f"Unknown path {request.url.path}; this server implements the paths in /openapi.json."
        return error_response(exc.status_code, message, code=code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The details (paths, SQL, tracebacks) go to the log, not to the caller.
        incident = uuid.uuid4().hex[:12]
        log.exception("HTTP API request failed", extra={"path": request.url.path, "incident": incident})
        return error_response(500, f"internal error; the server log has the details under incident {incident}")
