"""Request ids and the access log: one line per request, and every line logged meanwhile carries the request's id.

- The id is the request's `X-Request-ID` when it is a sane token (1 to 128 of `A-Z a-z 0-9 . _ -`; nginx's
  `$request_id` is one), otherwise a new one (32 hex digits). Every answer carries it back in `X-Request-ID`,
  errors included, so a user's report can be matched to the server's lines.
- The access line (logger `cbworkflow.access`) has `method`, `path` (never the query string: it holds search
  terms, that is, personal data), `route` (the template), `status`, `duration_ms`, `client`, and `tenant` and
  `token_id` when the request was authenticated. Never a header, a token or a body. Successful answers of
  `/healthz`, `/readyz` and `/metrics` are logged at DEBUG: probes and scrapes would drown the rest.
- An exception that no handler took is answered here (500, or the status of one of our errors raised by a
  middleware, such as a store failure: 503), logged with its traceback and the request id.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import logs
from .errors import error_response
from .metrics import count_unhandled_error, route_template

HEADER = b"x-request-id"
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_LOGGED_PATH = 1000

access_log = logging.getLogger("cbworkflow.access")
log = logging.getLogger("cbworkflow.api")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID if it is a sane token, else a new id."""
    for name, value in headers:
        if name == HEADER:
            given = value.decode("latin-1")
            if SANE_ID.fullmatch(given):
                return given
            break
    return uuid.uuid4().hex


class RequestLog:
    """Outermost middleware but for the metrics: sets the request id, answers escaped errors, logs the access line."""

    def __init__(self, app: ASGIApp, fallback_routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.fallback_routes = fallback_routes  # see metrics.route_template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        scope.setdefault("state", {})["request_id"] = request_id
        context = logs.request_id.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:  # the answer has begun: it cannot become an error answer any more
                count_unhandled_error(scope.get("app"))
                log.error("unexpected error while answering %s %s", scope["method"], scope["path"], exc_info=exc)
                raise
            answer = error_response(scope.get("app"), exc, scope["method"], scope["path"])
            await answer(scope, receive, send_with_id)
        finally:
            try:
                _log_access(scope, route_template(scope, self.fallback_routes), status, time.perf_counter() - started)
            finally:
                logs.request_id.reset(context)


# `/invite/<tenant>.<id>.<secret>`: the secret is a password until used, so logs keep only the tenant and id.
INVITATION_SECRET = re.compile(r"^(/invite/[^/.]*\.[^/.]*\.)[^/]+")


def _log_access(scope: Scope, route: str, status: int, seconds: float) -> None:
    if status >= 500 or not status:
        level = logging.WARNING
    elif route in QUIET_ROUTES and status < 400:
        level = logging.DEBUG
    else:
        level = logging.INFO
    if not access_log.isEnabledFor(level):
        return
    path = INVITATION_SECRET.sub(r"\1…", scope["path"])[:MAX_LOGGED_PATH]  # no invitation secret in logs
    fields: dict[str, Any] = {
        "method": scope["method"],
        "path": path,
        "route": route,
        "status": status or None,
        "duration_ms": round(seconds * 1000, 2),
    }
    client = scope.get("client")
    if client:
        fields["client"] = client[0]
    principal = scope.get("state", {}).get("principal")
    if principal is not None:
        fields["tenant"] = principal.tenant
        fields["token_id"] = principal.token_id
    outcome = str(status) if status else "no answer"
    access_log.log(level, "%s %s %s", scope["method"], path, outcome, extra=fields)
