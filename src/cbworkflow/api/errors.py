"""Every error leaves the API as JSON `{"detail": "<sentence>"}` with the right status; never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import CbwError, StoreError
from .metrics import count_store_error, count_unhandled_error

log = logging.getLogger("cbworkflow.api")


class ErrorItem(BaseModel):
    """One problem: a request field that is wrong, or a template problem (with its `code` and `node`)."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    message: str
    """What is wrong, in words a user understands."""
    field: str | None = None
    """The request field, as a dotted path (`nodes.call.action`); `body` for the body as a whole."""
    code: str | None = None
    """For a template that does not validate: the problem's code (workflows.md § Validation)."""
    node: str | None = None
    """For a template that does not validate: the node the problem is about, if one."""


class Error(BaseModel):
    """The body of every error answer. `detail` is always there; the other fields when they apply."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    detail: str
    """What went wrong and, where it helps, what to do, in one sentence a user understands."""
    errors: list[ErrorItem] | None = Field(default=None, examples=[[{"field": "name", "message": "required"}]])
    """On a 422: every problem found, one per field (or per template problem)."""
    current_node: str | None = None
    """On a 409 from a transition: the node the instance is at now (someone else moved it first)."""


def _where(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    # Discriminated unions add the tag to the location (nodes.x.action.action): keep the first of a repeat.
    cleaned: list[str] = []
    for part in parts:
        if cleaned and cleaned[-1] == part:
            continue
        cleaned.append(part)
    return ".".join(cleaned) or "body"


def describe_validation(errors: list[dict[str, Any]]) -> tuple[int, str, list[dict[str, str]]]:
    """(status, sentence, per-field list) for a failed request validation."""
    if any(e.get("type") == "json_invalid" for e in errors):
        first = next(e for e in errors if e.get("type") == "json_invalid")
        reason = (first.get("ctx") or {}).get("error", "")
        return 400, f"the request body is not valid JSON{': ' + reason if reason else ''}", []
    fields = []
    for e in errors:
        where = _where(tuple(e.get("loc", ())))
        message = e.get("msg", "invalid value")
        if e.get("type") == "extra_forbidden":
            message = "unknown field (not accepted here)"
        elif e.get("type") == "missing":
            message = "required"
        fields.append({"field": where, "message": message})
    sentence = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:10])
    if len(fields) > 10:
        sentence += f"; and {len(fields) - 10} more"
    return 422, sentence, fields


INTERNAL_ERROR = "internal error; it has been logged"
STORE_RETRY_AFTER_S = 5  # a store that failed (locked, restarting, failing over) is usually back within seconds


def cbw_error_response(app: Any, exc: CbwError) -> JSONResponse:
    """The answer for one of our own errors; a store failure is counted and logged (without its SQL)."""
    if isinstance(exc, StoreError):
        count_store_error(app)
        cause = exc.__cause__
        original = getattr(cause, "orig", None) or cause  # the driver's error: no statement, no parameters
        reason = str(original).strip().splitlines()[0][:300] if original is not None and str(original).strip() else ""
        log.warning(
            "store error: %s",
            exc.detail,
            extra={"error": type(original).__name__ if original is not None else "StoreError", "reason": reason},
        )
    body: dict[str, Any] = {"detail": exc.detail, **exc.extra}
    if exc.status_code == 422 and "errors" not in body:
        field, _, message = exc.detail.partition(": ")
        body["errors"] = [{"field": field, "message": message} if message else {"field": "body", "message": field}]
    headers = None
    if exc.status_code == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif exc.status_code == 429:
        headers = {"Retry-After": str(body.pop("retry_after"))}
    elif exc.status_code == 503:
        headers = {"Retry-After": str(body.pop("retry_after", STORE_RETRY_AFTER_S))}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def unexpected_error_response(app: Any, exc: BaseException, method: str, path: str) -> JSONResponse:
    """A 500 for a bug: the traceback goes to the log (with the request id), never to the client."""
    count_unhandled_error(app)
    log.error("unexpected error on %s %s", method, path, exc_info=exc)
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


def error_response(app: Any, exc: Exception, method: str, path: str) -> JSONResponse:
    """The answer for an exception no handler inside the app took (it came from a middleware, or was a bug)."""
    if isinstance(exc, CbwError):
        return cbw_error_response(app, exc)
    return unexpected_error_response(app, exc, method, path)


def _page(request: Request, status_code: int, detail: str) -> Response | None:
    """The web pages' error page, when a browser asked for a page (`web/`, which installs the hook)."""
    wants_page = getattr(request.app.state, "wants_page", None)
    if wants_page is None or not wants_page(request):
        return None
    response: Response = request.app.state.page_error(request, status_code, detail)
    return response


def install(app: FastAPI) -> None:
    @app.exception_handler(CbwError)
    async def _cbw(request: Request, exc: CbwError) -> Response:
        answer = cbw_error_response(request.app, exc)
        return _page(request, exc.status_code, exc.detail) or answer

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        status, sentence, fields = describe_validation(list(exc.errors()))
        body: dict[str, Any] = {"detail": sentence}
        if fields:
            body["errors"] = fields
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "no such route or record"
        elif exc.status_code == 405:
            detail = "this method is not allowed on this route"
        page = _page(request, exc.status_code, "no such page" if exc.status_code == 404 else detail)
        return page or JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Only reached if an exception gets past api/request_log.py, which answers (and logs) the others.
        return unexpected_error_response(request.app, exc, request.method, request.url.path)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can answer (api/openapi.py adds their headers)."""
    words = {
        400: "Malformed request (e.g. invalid JSON)",
        401: "Missing or unknown token",
        403: "The token's role may not do this",
        404: "No such record in this tenant",
        409: "Conflicts with the current state",
        413: "Request body too large",
        415: "A body of a type this route does not read; the detail names the types it does",
        422: "Invalid input; the detail names the field",
        429: "Too many requests for this token; see Retry-After",
        503: "The store failed or is busy (not the client's fault); try again after Retry-After",
    }
    return {code: {"model": Error, "description": words[code]} for code in codes}


def api_errors() -> dict[int | str, dict[str, Any]]:
    """The errors any `/api` route can answer, whatever it does: bad request, auth, size, input, rate, store."""
    return error_responses(400, 401, 403, 413, 422, 429, 503)
