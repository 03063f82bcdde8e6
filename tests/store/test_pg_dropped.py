"""PostgreSQL connections the server dropped (a restart, a failover, an idle timeout) are never handed to a step:
one that rested in the pool is tried first and replaced (store/pg_ping.py), and a transaction whose connection
dropped before it began to commit runs again on a fresh one (store/sql/store.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from cbworkflow.ids import new_id
from cbworkflow.models.contacts import Contact
from cbworkflow.store.pg_ping import ping_rested_connections
from cbworkflow.store.postgres import PostgresStore, engine_url
from conftest import PostgresDatabase


@pytest.fixture
def database() -> Iterator[PostgresDatabase]:
    made = PostgresDatabase(migrated=True)
    try:
        yield made
    finally:
        made.drop()


def drop_connections(database: PostgresDatabase) -> int:
    """End every server connection to the database, as a restart would; how many there were."""
    with psycopg.connect(database.admin_url, autocommit=True) as conn:
        query = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
        ended = len(conn.execute(query, (database.name,)).fetchall())
        for _ in range(200):  # pg_terminate_backend only asks: the backends leave a moment later
            left = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            if conn.execute(left, (database.name,)).fetchone() == (0,):
                return ended
            time.sleep(0.01)
    raise AssertionError("the connections did not end")


def test_a_connection_that_rested_is_tried_and_a_dropped_one_replaced(database: PostgresDatabase) -> None:
    engine = create_engine(engine_url(database.url), pool_size=1, max_overflow=0)
    ping_rested_connections(engine, rested_s=0.2)
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        assert drop_connections(database) == 1
        time.sleep(0.3)
        with engine.connect() as conn:  # without the try, the dead connection is handed out and this fails
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    finally:
        engine.dispose()


def test_a_connection_back_in_use_at_once_is_not_tried(database: PostgresDatabase) -> None:
    """The saving: a connection back in use at once is handed out untried (no `SELECT 1`), so a drop meets the
    statement itself; the store runs such a transaction again (the test below)."""
    engine = create_engine(engine_url(database.url), pool_size=1, max_overflow=0)
    ping_rested_connections(engine, rested_s=60)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        drop_connections(database)
        with pytest.raises(OperationalError) as raised, engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert raised.value.connection_invalidated
    finally:
        engine.dispose()


def _contact(name: str) -> Contact:
    now = datetime.now(UTC)
    return Contact(id=new_id(), tenant="default", name=name, created_at=now, updated_at=now)


def test_a_step_whose_connection_just_dropped_runs_again_on_a_fresh_one(database: PostgresDatabase) -> None:
    store = PostgresStore(database.url, pool_size=2)

    async def scenario() -> None:
        await store.migrate()
        kept = _contact("Before")
        await store.write("default", lambda tx: tx.insert_contact(kept))
        drop_connections(database)
        # At once (not rested): the first statement meets the dead connection; the transaction runs again.
        again = _contact("After")
        await store.write("default", lambda tx: tx.insert_contact(again))
        found = await store.read("default", lambda tx: [tx.read_contact(kept.id), tx.read_contact(again.id)])
        assert [c.name if c else None for c in found] == ["Before", "After"]
        drop_connections(database)  # a read too
        assert await store.read("default", lambda tx: tx.read_contact(again.id)) == found[1]

    try:
        asyncio.run(scenario())
    finally:
        asyncio.run(store.close())
