"""`Idempotency-Key` on POST, at the edge: reads the key, the caller and the body, asks the idempotency service
(`services/idempotency.py`, where the rules live) whether to run the request or replay an answer, and hands
the answer back to it before sending it.

The answer is recorded before it is sent, so a client that repeats the request the moment it has the answer
gets the replay, never "still being processed".
"""

from __future__ import annotations

import hashlib
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import CbwError, StoreError, Unauthorized
from .body_limit import _reply
from .errors import cbw_error_response

HEADER = b"idempotency-key"
MAX_ROUTE = 300


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
        state = scope.get("state", {})
        body_hash = state.get("raw_body_hash") or hashlib.sha256(state.get("raw_body", b"")).hexdigest()
        keys = services.idempotency
        try:
            replay = await keys.begin(principal, route, key, body_hash)
        except StoreError as failed:  # as the routes answer it: counted, logged, with Retry-After
            await cbw_error_response(scope["app"], failed)(scope, receive, send)
            return
        except CbwError as refused:
            await _reply(send, refused.status_code, refused.detail)
            return
        if replay is not None:
            await _replay(send, replay.status_code, replay.body)
            return

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
            answer = b"".join(chunks)
            await keys.finish(principal, route, key, start["status"], answer.decode("utf-8", "replace"))
            await send(start)
            await send({"type": "http.response.body", "body": answer})

        try:
            await self.app(scope, receive, record_then_send)
        except BaseException:
            await keys.release(principal, route, key)
            raise


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
