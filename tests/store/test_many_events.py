"""A large batch of events (a bulk enrolment's) is written past SQLAlchemy (PostgreSQL: `COPY`; SQLite: the
driver's executemany): what is read back is exactly what was appended, in order, whatever the text holds (quotes,
backslashes, tabs, newlines, non-Latin letters)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cbworkflow.models.events import Event, EventType
from cbworkflow.store.base import PageRequest
from cbworkflow.store.postgres import PostgresStore
from cbworkflow.store.sql.rows import MANY_EVENTS
from cbworkflow.store.sqlite import SQLiteStore
from conftest import PostgresDatabase

AWKWARD = 'a "quote", a \\ backslash, a\ttab,\na newline, \\N, Ωμέγα, 🗳️'


def _events(n: int) -> list[Event]:
    at = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
    return [
        Event(
            id=f"e{i:04d}",
            type=EventType.USER_NOTE if i % 2 else EventType.STATE_UPDATED,
            timestamp=at + timedelta(microseconds=i),
            node_id=None if i % 3 else "call",
            actor="system",
            data={"i": i, "text": AWKWARD, "nested": {"list": [1, None, True]}},
            message=f"{AWKWARD} #{i}",
            instance_id="inst-1",
            contact_id="c-1",
            template_id="tpl",
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_large_batch_reads_back_exactly_and_in_order(kind: str, tmp_path: Path) -> None:
    database = PostgresDatabase() if kind == "postgresql" else None
    store = PostgresStore(database.url, pool_size=2) if database else SQLiteStore(tmp_path / "events.db")
    try:
        asyncio.run(store.migrate())
        written = _events(MANY_EVENTS * 3)
        asyncio.run(store.write("t1", lambda tx: tx.append_events(written)))
        asyncio.run(store.write("t1", lambda tx: tx.append_events(_events(3)[:1])))  # a small one: an insert
        page = asyncio.run(store.read("t1", lambda tx: tx.instance_events("inst-1", PageRequest(limit=1000))))
        numbered = [e.model_copy(update={"sequence": n}) for n, e in enumerate(written, start=1)]
        assert page.items[: len(written)] == numbered  # numbered in the outbox as they were written
        assert len(page.items) == len(written) + 1
        assert page.items[-1].sequence == len(written) + 1
        other = asyncio.run(store.read("t2", lambda tx: tx.instance_events("inst-1", PageRequest(limit=10))))
        assert other.items == []  # the tenant column was written
    finally:
        asyncio.run(store.close())
        if database is not None:
            database.drop()
