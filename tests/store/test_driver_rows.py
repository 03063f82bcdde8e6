"""`rows.execute_many`: an executemany straight through the driver writes what SQLAlchemy's would, counts the
rows it changed, and raises SQLAlchemy's errors (so the store maps them as any other)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import bindparam, update
from sqlalchemy.exc import IntegrityError

from cbworkflow.errors import Conflict
from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact
from cbworkflow.models.events import Event, EventType
from cbworkflow.store import schema as s
from cbworkflow.store.base import PageRequest, Tx
from cbworkflow.store.filters import ContactFilter
from cbworkflow.store.sql import SqlStore, SqlTx
from cbworkflow.store.sql.rows import execute_many
from cbworkflow.store.sqlite import SQLiteStore
from conftest import migrated_postgres_store

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
_C = s.contacts.c
RENAME = update(s.contacts).where(_C.tenant == bindparam("w_tenant"), _C.id == bindparam("w_id"))


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "postgresql":
        with migrated_postgres_store() as made:
            yield made
        return
    opened = SQLiteStore(tmp_path / "rows.db")
    asyncio.run(opened.migrate())
    try:
        yield opened
    finally:
        asyncio.run(opened.close())


def _people(store: SqlStore) -> None:
    people = [
        Contact(id=f"c{i}", tenant="t", name=f"Voter {i}", external_id=f"x{i}", created_at=T0, updated_at=T0)
        for i in range(3)
    ]

    def insert(tx: Tx) -> None:
        tx.insert_contacts(people)

    asyncio.run(store.write("t", insert))


def test_it_writes_what_sqlalchemy_would_and_counts_the_rows(store: SqlStore) -> None:
    _people(store)
    later = T0 + timedelta(hours=3, microseconds=7)
    params = [
        {"name": f"Renamed {i}", "metadata": {"n": i, "text": 'a "quote", Ωμέγα'}, "updated_at": later, "w_id": f"c{i}"}
        for i in (0, 2, 9)  # c9 does not exist
    ]
    with store._engine.begin() as conn:
        changed = execute_many(conn, RENAME, [{**one, "w_tenant": "t"} for one in params])
    assert changed == 2
    page = asyncio.run(store.read("t", lambda tx: tx.list_contacts(ContactFilter(), PageRequest(10))))
    found = {c.id: c for c in page.items}
    assert [found[f"c{i}"].name for i in range(3)] == ["Renamed 0", "Voter 1", "Renamed 2"]
    assert found["c2"].metadata == {"n": 2, "text": 'a "quote", Ωμέγα'}
    assert [found[f"c{i}"].updated_at for i in range(3)] == [later, T0, later]


def test_a_driver_error_is_sqlalchemys(store: SqlStore) -> None:
    _people(store)
    clash = [{"external_id": "x0", "w_tenant": "t", "w_id": "c1"}]  # another contact's external id
    with pytest.raises(IntegrityError), store._engine.begin() as conn:
        execute_many(conn, RENAME, clash)


def test_sqlite_events_by_the_driver_map_their_errors(tmp_path: Path) -> None:
    """SQLite writes every event through the driver: a clash there is a 409 like any other, not a driver error."""
    opened = SQLiteStore(tmp_path / "events.db")
    asyncio.run(opened.migrate())
    note = {"type": EventType.USER_NOTE, "timestamp": T0, "actor": "tester", "message": "m", "contact_id": "c1"}

    def clash(tx: Tx) -> None:
        assert isinstance(tx, SqlTx)
        tx.write_events([Event(id=new_id(), **note), Event(id=new_id(), **note)], 100)
        tx.write_events([Event(id=new_id(), **note)], 101)  # the tenant's sequence 101 again

    try:
        with pytest.raises(Conflict):
            asyncio.run(opened.write("t", clash))
    finally:
        asyncio.run(opened.close())
