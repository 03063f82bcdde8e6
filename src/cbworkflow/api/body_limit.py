"""Refuse request bodies over `CBW_MAX_BODY_BYTES` with 413 before any route reads them."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .json_guard import json_problem


async def _reply(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
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


class BodyLimit:
    """Buffers the body (at most `limit` bytes) and replays it to the app, so no route sees an oversized one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than the limit of {self.limit} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "Content-Length is not a number")
                    return
                if declared > self.limit:
                    await _reply(send, 413, too_large)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _reply(send, 413, too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        scope.setdefault("state", {})["raw_body"] = body
        if body:
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
