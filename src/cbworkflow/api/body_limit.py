"""Refuse request bodies over `CBW_MAX_BODY_BYTES` with 413 before any route reads them.

`POST /api/contacts/import` is the one route whose body is a file: it may be far larger (`CBW_IMPORT_MAX_BYTES`),
so it is streamed to a temporary file instead of being buffered, and the route reads it from there
(`scope["state"]["import_file"]`); the file is removed once the answer is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CbwError
from ..models.access import Role
from ..models.imports import import_format
from .json_guard import json_problem

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Not sent · cbworkflow</title>
<link rel="stylesheet" href="/static/app.css"></head><body><main><section class="card narrow"><h1>Not sent</h1>
<p role="alert">{detail}.</p><p>Go back to change it, or <a href="/">start again</a>.</p>
</section></main></body></html>"""


def wants_page(scope: Scope) -> bool:
    """A browser sending a page's form (outside /api): its errors are a page, not JSON."""
    accept = dict(scope["headers"]).get(b"accept", b"")
    return not scope["path"].startswith("/api/") and b"text/html" in accept


async def _reply(send: Send, status: int, detail: str, page: bool = False) -> None:
    if page:
        text = html.escape(detail[:1].upper() + detail[1:])
        body, kind = PAGE.replace("{detail}", text).encode(), b"text/html; charset=utf-8"
    else:
        body, kind = json.dumps({"detail": detail}).encode(), b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


_UNTYPED = (b"", b"application/x-www-form-urlencoded")


def _json_unless_typed(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Read a body sent without a real type (curl -d sends a form type) as JSON: this API speaks only JSON."""
    content_type = dict(headers).get(b"content-type", b"").split(b";")[0].strip().lower()
    if content_type not in _UNTYPED:
        return headers
    return [(k, v) for k, v in headers if k != b"content-type"] + [(b"content-type", b"application/json")]


IMPORT_PATH = "/api/contacts/import"
FORM_ROUTES = frozenset({"/api/inbound/sms"})  # API routes that read a provider's form, not JSON
FORM_LIMIT = 64 * 1024  # a provider's form (a text of 1,600 characters and its fields) is a few KiB; anyone may post
IMPORTERS = frozenset({Role.SUPERADMIN, Role.ADMIN, Role.STAFF})  # the route's roles (api/deps.py STAFF)


async def _declared_too_large(scope: Scope, send: Send, limit: int, too_large: str) -> bool:
    """Answer 400 for a Content-Length that is not a number, 413 for one over `limit`; true when answered."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number", wants_page(scope))
                return True
            if declared > limit:
                await _reply(send, 413, too_large, wants_page(scope))
                return True
    return False


async def _may_import(scope: Scope) -> bool:
    """Whether the caller may import and the body is of a type the route reads: otherwise not a byte of it is
    written to disk (an unauthenticated client cannot fill the temporary folder). The principal found is kept for
    the route, as the idempotency middleware does."""
    headers = dict(scope["headers"])
    if import_format(headers.get(b"content-type", b"").decode("latin-1")) is None:
        return False
    services = scope["app"].state.services
    scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    try:
        principal = await services.access.authenticate(secret.strip() if scheme.lower() == "bearer" else None)
    except CbwError:
        return False
    if principal.role not in IMPORTERS:
        return False
    scope.setdefault("state", {})["principal"] = principal
    return True


class _Stopped(Exception):
    """The client went away, or the body passed its limit (and 413 was sent): the request ends here."""


async def _chunks(receive: Receive, send: Send, limit: int, too_large: str, page: bool = False) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; `_Stopped` once it passes `limit` (after answering 413) or the client
    disconnects."""
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Stopped
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _reply(send, 413, too_large, page)
            raise _Stopped
        yield chunk
        if not message.get("more_body", False):
            return


class BodyLimit:
    """Buffers the body (at most `limit` bytes) and replays it to the app, so no route sees an oversized one."""

    def __init__(self, app: ASGIApp, limit: int, import_limit: int = 256 * 1024 * 1024) -> None:
        self.app = app
        self.limit = limit
        self.import_limit = import_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] == IMPORT_PATH:
            await self._spool(scope, receive, send)
            return
        page = wants_page(scope)
        limit = min(self.limit, FORM_LIMIT) if scope["path"] in FORM_ROUTES else self.limit
        too_large = f"the request body is larger than the limit of {limit} bytes"
        if page:
            too_large = (
                f"what you sent is larger than {limit // 1024} KiB, the most a page takes; "
                "a bigger contacts file goes through `cbworkflow contacts import` or the API"
            )
        if await _declared_too_large(scope, send, limit, too_large):
            return
        try:
            body = b"".join([chunk async for chunk in _chunks(receive, send, limit, too_large, page)])
        except _Stopped:
            return
        scope.setdefault("state", {})["raw_body"] = body
        if body and scope["path"].startswith("/api/") and scope["path"] not in FORM_ROUTES:  # pages' forms stay forms
            scope["headers"] = _json_unless_typed(scope["headers"])
            problem = json_problem(body)
            if problem:
                await _reply(send, 400, f"the request body cannot be accepted: {problem}")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _spool(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream an import's body to a temporary file (at most `import_limit` bytes), hashing it on the way for
        `Idempotency-Key`; the route reads the file, which is removed after the answer."""
        too_large = (
            f"the file is larger than the import limit of {self.import_limit} bytes (CBW_IMPORT_MAX_BYTES); "
            "split it, or import it with `cbworkflow contacts import`"
        )
        if await _declared_too_large(scope, send, self.import_limit, too_large):
            return
        if not await _may_import(scope):  # the route answers 401, 403 or 415 without the body: none is stored
            await self.app(scope, receive, send)
            return
        handle, name = await asyncio.to_thread(tempfile.mkstemp, prefix="cbw-import-", suffix=".upload")
        path = Path(name)
        try:
            digest = hashlib.sha256(scope.get("query_string", b"") + b"\n")  # a dry run is another request
            with os.fdopen(handle, "wb") as out:
                try:
                    async for chunk in _chunks(receive, send, self.import_limit, too_large):
                        if chunk:
                            digest.update(chunk)
                            await asyncio.to_thread(out.write, chunk)
                except _Stopped:
                    return
            state = scope.setdefault("state", {})
            state["import_file"] = path
            state["raw_body_hash"] = digest.hexdigest()
            done = False

            async def empty() -> Message:
                nonlocal done
                if not done:
                    done = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                return await receive()

            await self.app(scope, empty, send)
        finally:
            await asyncio.to_thread(path.unlink, True)
