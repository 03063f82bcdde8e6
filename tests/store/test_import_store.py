"""The store's calls for contacts import, on every backend: a batch's contacts found by id, external id, email
(without case) and E.164 phone in one call; the ids that kept instances name; a job's staged rows; migration 7.

The backends and fixtures are the contract suite's (test_store.py): each case runs on SQLite, PostgreSQL and the
JSON files.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import test_store
from sqlalchemy import create_engine
from test_jobs_store import enrol
from test_store import BACKENDS, SQLiteBackend, contact, run, store_url

from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import InstanceStatus
from cbworkflow.store.base import ContactFilter, PageRequest, Store, Tx

backend = test_store.backend
store = test_store.store


def names(found: list[Contact]) -> list[str]:
    return sorted(c.name for c in found)


def test_find_contacts_by_every_key_in_one_call(store: Store) -> None:
    def seed(tx: Tx) -> None:
        tx.insert_contact(contact(cid="c1", name="By id"))
        tx.insert_contact(contact(cid="c2", name="By external", external_id="crm/7"))
        tx.insert_contact(contact(cid="c3", name="By email", email="Mixed.Case@Example.org"))
        tx.insert_contact(contact(cid="c4", name="By phone", phone="555 201 3344", phone_e164="+15552013344"))
        tx.insert_contact(contact(cid="c5", name="Nobody", email="other@example.org"))

    run(store, "a", seed)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", cid="c1", name="Theirs", email="mixed.case@example.org")))

    def find(tx: Tx) -> list[Contact]:
        return list(
            tx.find_contacts(
                ids=["c1", "missing"],
                external_ids=["crm/7"],
                emails=["mixed.case@example.org"],
                phones=["+15552013344"],
            )
        )

    for write in (False, True):
        assert names(run(store, "a", find, write=write)) == ["By email", "By external", "By id", "By phone"]
    assert names(run(store, "b", find)) == ["Theirs"]  # another tenant's never
    nothing = run(store, "a", lambda tx: tx.find_contacts(ids=[], external_ids=[], emails=[], phones=[]))
    assert nothing == []
    found = run(store, "a", lambda tx: tx.find_contacts(ids=["c1"], external_ids=["crm/7"], emails=[], phones=[]))
    assert sorted(c.id for c in found) == ["c1", "c2"]  # each contact once, whichever keys found it


def test_contacts_with_instances_names_the_ids_kept_instances_hold(store: Store) -> None:
    run(store, "a", lambda tx: enrol(tx, "gone", InstanceStatus.CANCELLED))  # an instance whose contact was deleted
    run(store, "a", lambda tx: tx.insert_contact(contact(cid="plain")))
    assert run(store, "a", lambda tx: tx.contacts_with_instances(["gone", "plain", "never"])) == {"gone"}
    assert run(store, "b", lambda tx: tx.contacts_with_instances(["gone"])) == set()
    assert run(store, "a", lambda tx: tx.contacts_with_instances([])) == set()


def test_staged_job_rows_round_trip_and_go(store: Store) -> None:
    chunks = {seq: [{"line": seq * 2 + n, "fields": {"name": f"R{seq}-{n}"}} for n in range(2)] for seq in range(3)}

    def stage(tx: Tx) -> None:
        for seq, items in chunks.items():
            tx.stage_job_rows("job1", seq, items)
        tx.stage_job_rows("job2", 0, [{"line": 1}])

    run(store, "a", stage)
    assert run(store, "a", lambda tx: tx.job_rows("job1", 1), write=False) == chunks[1]
    assert run(store, "a", lambda tx: tx.job_rows("job1", 9)) is None
    assert run(store, "b", lambda tx: tx.job_rows("job1", 1)) is None  # another tenant's
    run(store, "a", lambda tx: tx.delete_job_rows("job1", 1))
    assert [run(store, "a", lambda tx, s=seq: tx.job_rows("job1", s)) is None for seq in range(3)] == [
        False,
        True,
        False,
    ]
    run(store, "a", lambda tx: tx.delete_job_rows("job1"))
    assert [run(store, "a", lambda tx, s=seq: tx.job_rows("job1", s)) for seq in range(3)] == [None] * 3
    assert run(store, "a", lambda tx: tx.job_rows("job2", 0)) == [{"line": 1}]  # another job's stay


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_of_version_5_gets_staged_rows_and_match_indexes(kind: str, tmp_path: Path) -> None:
    """Migration 7 adds job_rows and the email and phone indexes to a database made before them."""
    made = BACKENDS[kind](tmp_path)
    try:
        opened = made.open()
        assert 7 in asyncio.run(opened.migrate())
        asyncio.run(opened.close())
        engine = create_engine(store_url(made))
        with engine.begin() as conn:  # back to what version 5 made
            conn.exec_driver_sql("DROP TABLE job_rows")
            conn.exec_driver_sql("DROP INDEX ix_contacts_phone_e164")
            email_index = "ix_contacts_email_nocase" if kind == "sqlite" else "ix_contacts_email_lower"
            conn.exec_driver_sql(f"DROP INDEX {email_index}")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version = 7")
        engine.dispose()
        upgraded = made.open()
        try:
            assert asyncio.run(upgraded.migrate()) == [7]
            assert asyncio.run(upgraded.migrate()) == []
            run(upgraded, "a", lambda tx: tx.stage_job_rows("j", 0, [{"line": 2}]))
            assert run(upgraded, "a", lambda tx: tx.job_rows("j", 0)) == [{"line": 2}]
        finally:
            asyncio.run(upgraded.close())
        if isinstance(made, SQLiteBackend):
            with sqlite3.connect(made.path) as conn:
                indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
                conn.executemany(
                    "INSERT INTO contacts (tenant, id, name, email, phone_e164, tags, metadata, created_at, "
                    "updated_at) VALUES (?, ?, 'N', ?, ?, '[]', '{}', '2026-01-01', '2026-01-01')",
                    [("a", f"c{i}", f"p{i}@example.org", f"+1555000{i:04d}") for i in range(2_000)],
                )
                conn.execute("ANALYZE")
                plan = conn.execute(
                    "EXPLAIN QUERY PLAN SELECT pk FROM contacts WHERE (tenant = 'a' AND "
                    "email COLLATE NOCASE IN ('x@example.org')) OR (tenant = 'a' AND phone_e164 IN ('+15550000000'))"
                ).fetchall()
            assert {"ix_contacts_email_nocase", "ix_contacts_phone_e164"} <= indexes
            details = " ".join(str(row[-1]) for row in plan)
            assert "MULTI-INDEX OR" in details, details
            assert "ix_contacts_email_nocase (tenant=? AND email=?)" in details, details
            assert "ix_contacts_phone_e164 (tenant=? AND phone_e164=?)" in details, details
    finally:
        made.cleanup()


def test_insert_contacts_writes_a_batch_with_its_tags(store: Store) -> None:
    made = [contact(cid=f"n{i}", name=f"New {i}", tags=["voter", f"wave-{i % 2}"], minutes=i) for i in range(5)]
    run(store, "a", lambda tx: tx.insert_contacts(made))
    run(store, "a", lambda tx: tx.insert_contacts([]))
    listed = run(store, "a", lambda tx: tx.list_contacts(ContactFilter(tags=["wave-1"]), PageRequest()))
    assert [c.id for c in listed.items] == ["n3", "n1"]  # newest first, found through their tag rows
    assert run(store, "a", lambda tx: tx.get_contact("n4")) == made[4]
