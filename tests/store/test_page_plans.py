"""A page after a cursor starts at the cursor in the index on PostgreSQL: it does not read the rows before it.

(Written as `created_at < x OR (created_at = x AND pk < y)`, PostgreSQL walked from the newest row down to the
cursor on every page: an export of a million contacts slowed as it went. SQLite's plan is checked beside the
jobs' in test_jobs_store.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event

from cbworkflow.models.contacts import Contact
from cbworkflow.store.base import Page, PageRequest, Tx
from cbworkflow.store.filters import ContactFilter
from cbworkflow.store.postgres import PostgresStore
from conftest import migrated_postgres_store

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def _load(store: PostgresStore, people: list[Contact]) -> None:
    """Insert `people` in one batch (the bulk path), then fresh statistics, as after an import."""

    def insert(tx: Tx) -> None:
        tx.insert_contacts(people)

    asyncio.run(store.write("t", insert))
    with store._engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


@pytest.fixture
def store() -> Iterator[PostgresStore]:
    with migrated_postgres_store() as made:
        yield made


def test_a_page_after_a_cursor_starts_at_it_in_the_index(store: PostgresStore) -> None:
    people = [
        Contact(id=f"c{i:05d}", tenant="t", name=f"Voter {i}", created_at=T0 + timedelta(seconds=i // 7), updated_at=T0)
        for i in range(3_000)
    ]
    _load(store, people)
    first = asyncio.run(store.read("t", lambda tx: tx.list_contacts(ContactFilter(), PageRequest(1_500))))
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if "ORDER BY contacts.created_at DESC" in statement:
            statements.append((statement, params))

    event.listen(store._engine, "before_cursor_execute", seen)
    following = asyncio.run(
        store.read("t", lambda tx: tx.list_contacts(ContactFilter(), PageRequest(1_500, first.next_cursor)))
    )
    event.remove(store._engine, "before_cursor_execute", seen)
    assert [c.id for c in first.items + following.items] == [c.id for c in reversed(people)]
    [(statement, params)] = statements
    with store._engine.connect() as conn:
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))
    assert "Index Cond: (((tenant)::text = 't'::text) AND (ROW(created_at, pk) < ROW(" in plan, plan


def test_a_list_by_tag_and_county_walks_the_rarer_of_the_two(store: PostgresStore) -> None:
    """By the planner's estimates: a common tag with a county walks the county's index and checks the tag per
    row; a rare tag walks the tag's rows and checks the county. The pages are the same either way."""
    people = [
        Contact(
            id=f"c{i:04d}",
            tenant="t",
            name=f"Voter {i}",
            county="Kent" if i % 3 == 0 else f"County {i % 40}",
            tags=["voter"] + (["captain"] if i % 50 == 0 else []),
            created_at=T0 + timedelta(seconds=i // 2),
            updated_at=T0,
        )
        for i in range(3_000)
    ]
    _load(store, people)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, _params: Any, _context: Any, _many: bool) -> None:
        if "ORDER BY" in statement and "LIMIT" in statement:
            statements.append(statement)

    event.listen(store._engine, "before_cursor_execute", seen)
    for tag, walked in (("voter", "county"), ("captain", "tag")):
        expected = [c.id for c in reversed(people) if tag in c.tags and c.county == "Kent"]
        where = ContactFilter(tags=[tag], county="Kent")
        listed, cursor = [], None
        while True:
            asked = PageRequest(37, cursor)

            def read(tx: Tx, asked: PageRequest = asked, where: ContactFilter = where) -> Page[Contact]:
                return tx.list_contacts(where, asked)

            page = asyncio.run(store.read("t", read))
            listed += [c.id for c in page.items]
            if (cursor := page.next_cursor) is None:
                break
        assert listed == expected
        assert all(("first_tag" in sql) == (walked == "tag") for sql in statements), (tag, statements)
        statements.clear()
    event.remove(store._engine, "before_cursor_execute", seen)
