"""`Idempotency-Key` on POST: a repeated key (same tenant, same route, within 24 h) replays the first response.

The key is reserved in the store before the request runs, so two concurrent requests with one key cannot both
act: the second gets 409 while the first is running, and the stored response once it has finished.
- A key belongs to the token that first used it: another token sending it gets 409, never the stored answer
  (which may hold what that token may not see).
- Answers that are not outcomes of the request (401, 403, 404, 405, 413, 5xx) are not kept: the key is
  released so the request can be sent again.
- Secrets are shown once: a replayed answer of `POST /api/tokens` or `/api/tenants` has them removed.
- Reusing a key with a different body is a 422. Keys older than 24 h are purged every few minutes.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Unauthorized
from ..services.access import DEFAULT_TENANT
from ..store.base import IdempotentResponse, Tx
from .body_limit import _reply

HEADER = b"idempotency-key"
WINDOW = timedelta(hours=24)
PURGE_EVERY = timedelta(minutes=10)
NOT_KEPT = frozenset({401, 403, 404, 405, 413})
SECRET_FIELDS = ("token", "admin_token")
MAX_ROUTE = 300


def _without_secrets(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and any(field in data for field in SECRET_FIELDS):
        for field in SECRET_FIELDS:
            data.pop(field, None)
        data["secret"] = "shown only in the first answer"
        return json.dumps(data)
    return text


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._last_purge: datetime | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER)
        route = scope["path"]
        if raw_key is None or not route.startswith("/api/") or len(route) > MAX_ROUTE:
            await self.app(scope, receive, send)
            return
        key = raw_key.decode("latin-1").strip()
        if not key or len(key) > 255:
            await _reply(send, 400, "Idempotency-Key must be 1 to 255 characters")
            return
        services = scope["app"].state.services
        scheme, _, secret = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        try:
            principal = await services.access.authenticate(secret.strip() if scheme.lower() == "bearer" else None)
        except Unauthorized:
            await self.app(scope, receive, send)  # the route answers 401
            return
        scope.setdefault("state", {})["principal"] = principal
        body = scope.get("state", {}).get("raw_body", b"")
        request_hash = hashlib.sha256(body).hexdigest()
        now = services.clock.now()
        await self._purge(services, now)

        def reserve(tx: Tx) -> IdempotentResponse | None:
            found = tx.get_idempotency(route, key, now - WINDOW)
            if found is not None:
                return found
            if not tx.reserve_idempotency(route, key, principal.token_id, request_hash, now):
                return tx.get_idempotency(route, key, now - WINDOW)
            return None

        found = await services.store.write(principal.tenant, reserve)
        if found is not None:
            if found.token_id != principal.token_id:
                await _reply(send, 409, "this Idempotency-Key was already used by another token; use a new key")
            elif found.request_hash != request_hash:
                await _reply(send, 422, "this Idempotency-Key was already used with a different request body")
            elif not found.done:
                await _reply(send, 409, "a request with this Idempotency-Key is still being processed")
            else:
                await _replay(send, found.status_code or 200, found.body or "")
            return

        # The answer is recorded before it is sent, so a client that repeats the request the moment it has the
        # answer gets the replay, never "still being processed".
        start: Message | None = None
        chunks: list[bytes] = []

        async def record_then_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            status = start["status"]
            if status >= 500 or status in NOT_KEPT:
                await services.store.write(principal.tenant, lambda tx: tx.release_idempotency(route, key))
            else:
                text = _without_secrets(b"".join(chunks))
                await services.store.write(principal.tenant, lambda tx: tx.finish_idempotency(route, key, status, text))
            await send(start)
            await send({"type": "http.response.body", "body": b"".join(chunks)})

        try:
            await self.app(scope, receive, record_then_send)
        except BaseException:
            await services.store.write(principal.tenant, lambda tx: tx.release_idempotency(route, key))
            raise

    async def _purge(self, services: Any, now: datetime) -> None:
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        await services.store.write(DEFAULT_TENANT, lambda tx: tx.purge_idempotency(now - WINDOW))


async def _replay(send: Send, status: int, body: str) -> None:
    data = body.encode()
    headers = [(b"idempotent-replayed", b"true"), (b"content-length", str(len(data)).encode())]
    if data:
        try:
            json.loads(data)
            headers.append((b"content-type", b"application/json"))
        except ValueError:
            pass
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
