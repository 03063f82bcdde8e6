"""Many new rows of one table (a batch of an import or a bulk enrolment) go by the backend's bulk path
(PostgreSQL: `COPY`): what is stored is exactly what the plain executemany stores, column by column, tag rows
included, whatever the text and JSON hold."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, select

from cbworkflow.errors import Conflict
from cbworkflow.models.consent import Channel
from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.store import schema as s
from cbworkflow.store.base import Tx
from cbworkflow.store.postgres import PostgresStore
from cbworkflow.store.sql import SqlTx
from cbworkflow.store.sql.tags import MANY_ROWS
from conftest import migrated_postgres_store

AWKWARD = 'a "quote", a \\ backslash, a\ttab,\na newline, \\N, Ωμέγα, 🗳️'
T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def store() -> Iterator[PostgresStore]:
    with migrated_postgres_store() as made:
        yield made


def _contacts(tenant: str, n: int) -> list[Contact]:
    return [
        Contact(
            id=f"c{i:04d}",
            tenant=tenant,
            name=f"{AWKWARD} {i}",
            email=None if i % 4 == 0 else f"v{i}@example.org",
            phone=None if i % 5 == 0 else f"+1555{i:07d}",
            phone_e164=None if i % 5 == 0 else f"+1555{i:07d}",
            county=AWKWARD if i % 2 else None,
            external_id=f"x-{i}" if i % 3 else None,
            timezone="America/Chicago" if i % 7 == 0 else None,
            opted_out={Channel.SMS: T0} if i % 6 == 0 else {},
            tags=[] if i % 8 == 0 else ["voter", f"wave-{i % 3}"],
            metadata={} if i % 9 == 0 else {"text": AWKWARD, "n": i, "nested": {"list": [1, None, True, 2.5]}},
            created_at=T0 + timedelta(microseconds=i),
            updated_at=T0 + timedelta(seconds=i),
        )
        for i in range(n)
    ]


def _instances(tenant: str, n: int) -> list[WorkflowInstance]:
    return [
        WorkflowInstance(
            id=f"i{i:04d}",
            tenant=tenant,
            contact_id=f"c{i:04d}",
            template_id="tpl",
            template_version="1.0",
            start_node="hold",
            current_node="hold" if i % 2 else None,
            node_entered_at=T0 if i % 2 else None,
            status=InstanceStatus.WAITING if i % 2 else InstanceStatus.PENDING,
            state={} if i % 3 else {"text": AWKWARD, "i": i},
            nodes={},
            tags=[] if i % 4 == 0 else ["bulk", f"t-{i % 2}"],
            metadata={"n": i} if i % 5 else {},
            created_at=T0 + timedelta(microseconds=i),
            updated_at=T0,
            started_at=T0 if i % 2 else None,
            wake_at=T0 + timedelta(days=3) if i % 2 else None,
            waiting_for="timer" if i % 2 else None,
            suggestion={"outcome": AWKWARD} if i % 7 == 0 else None,
            retries=2 if i % 11 == 0 else None,
        )
        for i in range(n)
    ]


def _stored(tx: Tx, table: Table, tags: Table, fk: str) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """The tenant's rows of `table` (every column but the key and the tenant) in the keys' order (the rows'
    order as written, which lists of one instant follow), and its tag rows."""
    assert isinstance(tx, SqlTx)
    c = table.c
    found = tx.conn.execute(select(table).where(c.tenant == tx.tenant).order_by(c.pk)).all()
    records = [{k: v for k, v in row._mapping.items() if k not in ("pk", "tenant")} for row in found]
    t = tags.c
    query = select(c.id, t.tag, t.created_at).join(table, c.pk == t[fk]).where(t.tenant == tx.tenant)
    return records, sorted(tuple(row) for row in tx.conn.execute(query))


def _insert(store: PostgresStore, tenant: str, write: Any, bulk: bool) -> None:
    def run(tx: Tx) -> None:
        assert isinstance(tx, SqlTx)
        if not bulk:
            tx.tags.bulk = None  # the plain executemany
        else:
            assert tx.tags.bulk is not None
        write(tx)

    asyncio.run(store.write(tenant, run))


@pytest.mark.parametrize("n", [MANY_ROWS, MANY_ROWS * 3 + 7])
def test_contacts_by_copy_are_the_rows_executemany_writes(store: PostgresStore, n: int) -> None:
    _insert(store, f"copy{n}", lambda tx: tx.insert_contacts(_contacts(tx.tenant, n)), bulk=True)
    _insert(store, f"many{n}", lambda tx: tx.insert_contacts(_contacts(tx.tenant, n)), bulk=False)
    read = [
        asyncio.run(store.read(tenant, lambda tx: _stored(tx, s.contacts, s.contact_tags, "contact_pk")))
        for tenant in (f"copy{n}", f"many{n}")
    ]
    assert len(read[0][0]) == n
    assert read[0] == read[1]
    copied = asyncio.run(store.read(f"copy{n}", lambda tx: tx.get_contact("c0006")))
    assert copied == _contacts(f"copy{n}", 7)[6]  # and reads back as the contact written


def test_instances_by_copy_are_the_rows_executemany_writes(store: PostgresStore) -> None:
    n = MANY_ROWS * 2 + 1
    _insert(store, "icopy", lambda tx: tx.insert_instances(_instances(tx.tenant, n), "snap"), bulk=True)
    _insert(store, "imany", lambda tx: tx.insert_instances(_instances(tx.tenant, n), "snap"), bulk=False)
    read = [
        asyncio.run(store.read(tenant, lambda tx: _stored(tx, s.instances, s.instance_tags, "instance_pk")))
        for tenant in ("icopy", "imany")
    ]
    assert len(read[0][0]) == n
    assert read[0] == read[1]
    rows = read[0][0]
    assert rows[1]["suggestion"] is None
    assert rows[7]["suggestion"] == {"outcome": AWKWARD}


def test_a_failed_copy_writes_nothing(store: PostgresStore) -> None:
    """A batch is atomic on the COPY path too: a duplicate id fails the batch, and none of its rows stay."""
    made = _contacts("dup", MANY_ROWS)
    made[-1] = made[-1].model_copy(update={"id": made[0].id})
    with pytest.raises(Conflict):
        _insert(store, "dup", lambda tx: tx.insert_contacts(made), bulk=True)
    stored = asyncio.run(store.read("dup", lambda tx: _stored(tx, s.contacts, s.contact_tags, "contact_pk")))
    assert stored == ([], [])
