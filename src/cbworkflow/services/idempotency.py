"""`Idempotency-Key` (api.md § Idempotency): a repeated key (same tenant, same route, within 24 h) replays the
first answer and does nothing again. These are the rules; `api/idempotency.py` only carries requests to them.

- The key is reserved before the request runs, so two concurrent requests with one key cannot both act: the
  second gets 409 while the first is running, and the stored answer once it has finished.
- A key belongs to the token that first used it: another token sending it gets 409, never the stored answer
  (which may hold what that token may not see). Reusing a key with a different body is a 422.
- Answers that are not outcomes of the request (401, 403, 404, 405, 413, 5xx) are not kept: the key is released
  so the request can be sent again.
- Secrets are shown once: a kept answer of `POST /api/tokens` or `/api/tenants` has them removed.
- A key older than 24 h is forgotten (it may be used again); such keys are purged every few minutes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..clock import Clock
from ..errors import Conflict, InvalidInput
from ..models.access import Principal
from ..store.base import IdempotencyRecord, Store, Tx

WINDOW = timedelta(hours=24)
PURGE_EVERY = timedelta(minutes=10)
NOT_KEPT = frozenset({401, 403, 404, 405, 413, 415})
SECRET_FIELDS = ("token", "admin_token")

ANOTHER_TOKEN = "this Idempotency-Key was already used by another token; use a new key"
ANOTHER_BODY = "this Idempotency-Key was already used with a different request body"
STILL_RUNNING = "a request with this Idempotency-Key is still being processed"


@dataclass(frozen=True)
class Replay:
    """The first answer to a request, to send again as it was."""

    status_code: int
    body: str


def without_secrets(body: str) -> str:
    """The answer as kept: a token or admin token in it is replaced by a note that it was shown once."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and any(field in data for field in SECRET_FIELDS):
        for field in SECRET_FIELDS:
            data.pop(field, None)
        data["secret"] = "shown only in the first answer"
        return json.dumps(data)
    return body


class IdempotencyService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._last_purge: datetime | None = None

    async def begin(self, principal: Principal, route: str, key: str, request_hash: str) -> Replay | None:
        """Reserve `key` for this request (None: run it, then `finish`), or the first answer to replay.

        Raises Conflict (another token's key, or the first request is still running) or InvalidInput (the key was
        sent with another body)."""
        now = self.clock.now()
        await self.purge_if_due(now)
        mine = IdempotencyRecord(route, key, principal.token_id, request_hash, now)

        def reserve(tx: Tx) -> IdempotencyRecord | None:
            found = tx.get_idempotency(route, key)
            if found is not None and found.created_at >= now - WINDOW:
                return found
            if found is not None:  # forgotten: the key may be used again
                tx.delete_idempotency(route, key)
            if tx.insert_idempotency(mine):
                return None
            return tx.get_idempotency(route, key)  # a concurrent first use came first

        found = await self.store.write(principal.tenant, reserve)
        if found is None:
            return None
        if found.token_id != principal.token_id:
            raise Conflict(ANOTHER_TOKEN)
        if found.request_hash != request_hash:
            raise InvalidInput(ANOTHER_BODY)
        if not found.done:
            raise Conflict(STILL_RUNNING)
        return Replay(found.status_code or 200, found.body or "")

    async def finish(self, principal: Principal, route: str, key: str, status_code: int, body: str) -> None:
        """Keep the answer for replays, or release the key when the answer is not an outcome of the request."""
        if status_code >= 500 or status_code in NOT_KEPT:
            await self.release(principal, route, key)
            return
        kept = without_secrets(body)
        await self.store.write(principal.tenant, lambda tx: tx.finish_idempotency(route, key, status_code, kept))

    async def release(self, principal: Principal, route: str, key: str) -> None:
        """Forget the key: the request may be sent again (it failed before it had an answer)."""
        await self.store.write(principal.tenant, lambda tx: tx.delete_idempotency(route, key))

    async def purge_if_due(self, now: datetime) -> int:
        """Forget keys past the window, in every tenant, at most every `PURGE_EVERY`; returns how many."""
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return 0
        self._last_purge = now
        return await self.store.system_write(lambda stx: stx.purge_idempotency(now - WINDOW))
