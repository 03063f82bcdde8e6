"""PostgreSQL's plans for pages and lookups that must not read a whole table.

A page after a cursor starts at the cursor in the index: it does not read the rows before it. (Written as
`created_at < x OR (created_at = x AND pk < y)`, PostgreSQL walked from the newest row down to the cursor on every
page: an export of a million contacts slowed as it went. SQLite's plan is checked beside the jobs' in
test_jobs_store.py.) An import batch's lookup searches each key along its own b-tree once the rows the import
writes have been analysed (growth.py)."""

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
from cbworkflow.store.postgres import _BTREE_ONLY, PostgresStore
from conftest import migrated_postgres_store

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def _load(store: PostgresStore, people: list[Contact], *, analyse: bool = True) -> None:
    """Insert `people` in one batch (the bulk path), then (unless `analyse` is false) fresh statistics, as after an
    import."""

    def insert(tx: Tx) -> None:
        tx.insert_contacts(people)

    asyncio.run(store.write("t", insert))
    if analyse:
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


def test_a_batch_lookup_searches_each_key_along_its_own_btree(store: PostgresStore) -> None:
    """As an import fills an empty table: its statistics are those of the store's start until the rows written
    are analysed (growth.py), and each later lookup probes each key's own b-tree. Planned by cost, the lookup
    read the whole table, the whole tenant along another index, or the emails' trigram index (seconds a batch)."""
    people = [
        Contact(
            id=f"c{i:05d}",
            tenant="t",
            name=f"Voter {i}",
            email=f"voter{i}@example.org",
            phone_e164=f"+1555{i:07d}",
            external_id=f"vf-{i}",
            created_at=T0,
            updated_at=T0,
        )
        for i in range(3_000)
    ]
    _load(store, people, analyse=False)
    store._growth.wait()
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if "UNION ALL" in statement:
            statements.append((statement, params))

    keys = range(0, 3_000, 6)
    event.listen(store._engine, "before_cursor_execute", seen)
    found = asyncio.run(
        store.write(
            "t",
            lambda tx: tx.find_contacts(
                ids=[f"c{i:05d}" for i in keys],
                external_ids=[f"vf-{i + 1}" for i in keys],
                emails=[f"voter{i + 2}@example.org" for i in keys],
                phones=[f"+1555{i + 3:07d}" for i in keys] + ["+15559999999"],
            ),
        )
    )
    event.remove(store._engine, "before_cursor_execute", seen)
    assert sorted(c.id for c in found) == sorted(f"c{i + n:05d}" for i in keys for n in range(4))
    [(statement, params)] = statements
    with store._engine.begin() as conn:
        conn.exec_driver_sql(_BTREE_ONLY)
        plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, params))
    lines = plan.splitlines()
    for index, key in (
        ("uq_contacts_tenant_id", "(id)::text = k"),
        ("uq_contacts_tenant_external_id", "(external_id)::text = k"),
        ("ix_contacts_email_lower", "lower((email)::text) = k"),
        ("ix_contacts_phone_e164", "(phone_e164)::text = k"),
    ):
        [at] = [n for n, line in enumerate(lines) if f"Index Scan using {index} on contacts" in line]
        assert f"Index Cond: (((tenant)::text = 't'::text) AND ({key}" in lines[at + 1], plan  # the key, not the tenant
    assert plan.count("Nested Loop") == 4, plan
    assert "Seq Scan" not in plan, plan
    assert "Bitmap" not in plan, plan
