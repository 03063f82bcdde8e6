"""`Idempotency-Key` on POST: a repeated key (same tenant, same route, within 24 h) replays the first response.

The key is reserved in the store before the request runs, so two concurrent requests with one key cannot both
act: the second gets 409 while the first is running, and the stored response once it has finished. A 5xx is not
stored (the key is released), so the client may retry. Reusing a key with a different body is a 422.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import Unauthorized
from .body_limit import _reply

HEADER = b"idempotency-key"
WINDOW = timedelta(hours=24)


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        raw_key = headers.get(HEADER)
        if raw_key is None:
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
        route = scope["path"]
        body = scope.get("state", {}).get("raw_body", b"")
        request_hash = hashlib.sha256(body).hexdigest()
        now = services.clock.now()

        def reserve(tx):  # type: ignore[no-untyped-def]
            found = tx.get_idempotency(route, key, now - WINDOW)
            if found is not None:
                return found
            if not tx.reserve_idempotency(route, key, request_hash, now):
                return tx.get_idempotency(route, key, now - WINDOW)
            return None

        found = await services.store.write(principal.tenant, reserve)
        if found is not None:
            if found.request_hash != request_hash:
                await _reply(send, 422, "this Idempotency-Key was already used with a different request body")
            elif not found.done:
                await _reply(send, 409, "a request with this Idempotency-Key is still being processed")
            else:
                await _replay(send, found.status_code or 200, found.body or "")
            return

        status = 500
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            text = b"".join(chunks).decode("utf-8", "replace")
            if status < 500:
                await services.store.write(principal.tenant, lambda tx: tx.finish_idempotency(route, key, status, text))
            else:
                await services.store.write(principal.tenant, lambda tx: tx.release_idempotency(route, key))


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
