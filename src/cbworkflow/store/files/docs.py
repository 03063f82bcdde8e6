"""Stored documents and models: what a record's file holds beside the model, and pages over documents."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from ...models.access import Token
from ...models.events import Event
from ...models.jobs import JobRecord
from ..base import PageRequest, TokenRecord
from ..jobs import FIXED as JOB_FIXED
from ..jobs import claimable
from ..paging import cut_page, time_cursor
from .layout import STORED, parse_time

Doc = dict[str, Any]
WORKER = ("worker_id", "worker_lease_until")  # the worker's lease on an instance's due work: not part of the model


def fields(doc: Doc, *drop: str) -> Doc:
    """The model's fields of a stored document (without the store's own stamp and the fields named)."""
    return {k: v for k, v in doc.items() if k not in (STORED, *drop)}


def event(doc: Doc) -> Event:
    return Event.model_validate(fields(doc))


def token_record(doc: Doc) -> TokenRecord:
    return TokenRecord(Token.model_validate(fields(doc, "secret_hash")), doc["secret_hash"])


def job(doc: Doc) -> JobRecord:
    return JobRecord.model_validate(fields(doc))


def job_saved(saved: JobRecord, old: Doc) -> Doc:
    """The document of a stored job after an update: its fixed fields and stamp stay."""
    return {**saved.model_dump(mode="json"), **{key: old[key] for key in (*JOB_FIXED, STORED)}}


def job_free(doc: Doc, now: datetime) -> bool:
    """The job is unfinished and no live lease holds it."""
    until = doc.get("lease_until")
    return claimable(doc["status"], None if until is None else parse_time(until), now)


def by_stored(doc: Doc) -> int:
    stored: int = doc[STORED]
    return stored


def lease_free(doc: Doc, now: datetime) -> bool:
    """No worker holds the instance's due work now."""
    until = doc.get("worker_lease_until")
    return until is None or parse_time(until) < now


def _created(doc: Doc) -> tuple[datetime, int]:
    return parse_time(doc["created_at"]), doc[STORED]


def newest_page(
    docs: Iterable[Doc],
    page: PageRequest,
    key: Callable[[Doc], tuple[datetime, Any]] = _created,
    decode: Callable[[str], tuple[datetime, Any]] = time_cursor,
) -> tuple[list[Doc], str | None]:
    """The page after `page.cursor` in `key` order, newest first; keeps only a page in memory. `key` is
    (created_at, stored) unless said otherwise; `decode` reads a cursor of that key."""
    keyed = ((key(doc), doc) for doc in docs)
    if page.cursor is not None:
        after = decode(page.cursor)
        keyed = (item for item in keyed if item[0] < after)
    best = heapq.nlargest(page.limit + 1, keyed, key=lambda item: item[0])
    chosen, cursor = cut_page(best, page.limit, lambda item: (item[0][0].isoformat(), item[0][1]))
    return [doc for _, doc in chosen], cursor


def newest_stored(docs: Iterable[Doc], page: PageRequest, after: int | None) -> tuple[list[Doc], str | None]:
    """The page of `docs` stored before the stamp `after`, newest stored first (search, a contact's events)."""
    found = docs if after is None else (doc for doc in docs if doc[STORED] < after)
    best = heapq.nlargest(page.limit + 1, found, key=by_stored)
    return cut_page(best, page.limit, lambda doc: (doc[STORED],))
