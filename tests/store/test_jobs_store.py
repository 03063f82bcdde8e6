"""The store's jobs and bulk-work calls, on every backend: jobs stored, listed and updated by revision, claimed by
workers (never one job by two), contacts counted by filter, and which contacts a template has already.

The backends and fixtures are the contract suite's (test_store.py): each case runs on SQLite, PostgreSQL and the
JSON files.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import test_store
from sqlalchemy import create_engine, event
from test_store import BACKENDS, T0, Backend, SQLiteBackend, contact, run, store_url, system, template

from cbworkflow.errors import InvalidInput
from cbworkflow.ids import new_id
from cbworkflow.models.instances import TERMINAL, InstanceStatus, WorkflowInstance
from cbworkflow.models.jobs import UNFINISHED_JOBS, JobKind, JobProgress, JobRecord, JobStatus
from cbworkflow.services.instances import snapshot_of
from cbworkflow.store import schema
from cbworkflow.store.base import ContactFilter, InstanceFilter, PageRequest, Store, SystemTx, Tx
from cbworkflow.store.sqlite import SQLiteStore

backend = test_store.backend  # the contract suite's fixtures: each case runs on every backend
store = test_store.store

NOW = T0 + timedelta(days=1)
LEASE = NOW + timedelta(minutes=5)


def job(tenant: str = "a", minutes: int = 0, **fields: Any) -> JobRecord:
    return JobRecord(
        id=fields.pop("id", None) or new_id(),
        tenant=tenant,
        kind=JobKind.BULK_ENROL,
        created_at=T0 + timedelta(minutes=minutes),
        **fields,
    )


def insert(store: Store, *jobs: JobRecord) -> None:
    for made in jobs:
        run(store, made.tenant, lambda tx, j=made: tx.insert_job(j))


def get(store: Store, found: JobRecord) -> JobRecord | None:
    got: JobRecord | None = run(store, found.tenant, lambda tx: tx.get_job(found.id), write=False)
    return got


def claim(store: Store, now: datetime = NOW, worker: str = "w1", lease: datetime = LEASE) -> JobRecord | None:
    claimed: JobRecord | None = system(store, lambda stx: stx.claim_job(now, worker, lease))
    return claimed


# ---------------------------------------------------------------------------------------------- jobs stored
def test_a_job_round_trips_and_stays_in_its_tenant(store: Store) -> None:
    made = job(
        params={"template_id": "tpl", "contacts": {"county": "Adams"}, "start": True},
        progress=JobProgress(done=0, total=12_000),
        created_by="tok-1",
    )
    insert(store, made)
    assert get(store, made) == made
    assert run(store, "a", lambda tx: tx.get_job(made.id), write=True) == made  # read for a write, locked
    assert run(store, "b", lambda tx: tx.get_job(made.id)) is None
    assert run(store, "b", lambda tx: tx.list_jobs(PageRequest())).items == []
    taken = made.model_copy(update={"status": JobStatus.CANCELLED, "revision": 1})
    assert run(store, "b", lambda tx: tx.update_job(taken)) is False  # another tenant's job: nothing to update
    assert get(store, made) == made
    assert run(store, "a", lambda tx: tx.get_job("no-such-job")) is None
    assert run(store, "a", lambda tx: tx.get_job("../b/jobs/x")) is None  # an id that names no record


def test_jobs_are_listed_newest_first_in_pages(store: Store) -> None:
    made = [job(minutes=n // 2) for n in range(8)]  # ties on created_at are broken stably
    insert(store, *made, job("b", minutes=99))
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        page = run(store, "a", lambda tx, c=cursor: tx.list_jobs(PageRequest(3, c)), write=False)
        pages += 1
        assert len(page.items) <= 3
        seen += [found.id for found in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8
    order = {found.id: (found.created_at, n) for n, found in enumerate(made)}  # stored later: newer
    assert seen == sorted(order, key=order.__getitem__, reverse=True)
    with pytest.raises(InvalidInput):
        run(store, "a", lambda tx: tx.list_jobs(PageRequest(3, "not-a-cursor")))


def test_a_job_is_updated_only_from_the_revision_before(store: Store) -> None:
    made = job(params={"x": 1})
    insert(store, made)
    later = T0 + timedelta(hours=1)
    done = made.model_copy(
        update={
            "status": JobStatus.FAILED,
            "progress": JobProgress(done=500, total=1000),
            "result": {"enrolled": 400, "skipped": 100},
            "error": "the template was deleted",
            "cursor": "opaque-cursor",
            "cancel_requested": True,
            "held_by": "w1",
            "lease_until": later,
            "started_at": T0,
            "finished_at": later,
            "params": {"x": 2},
            "created_by": "tok-2",
            "revision": 1,
        }
    )
    assert run(store, "a", lambda tx: tx.update_job(done)) is True
    assert get(store, made) == done
    # What a job is never changes: its kind, tenant and creation time stay as stored.
    moved = done.model_copy(update={"created_at": later, "error": "again", "revision": 2})
    assert run(store, "a", lambda tx: tx.update_job(moved)) is True
    assert get(store, made) == moved.model_copy(update={"created_at": made.created_at})
    # A stale writer (a worker whose lease was taken over) saves nothing.
    for stale in (moved, done.model_copy(update={"error": "stale"}), moved.model_copy(update={"revision": 9})):
        assert run(store, "a", lambda tx, j=stale: tx.update_job(j)) is False
    assert get(store, made) == moved.model_copy(update={"created_at": made.created_at})
    assert run(store, "a", lambda tx: tx.update_job(job(id="no-such-job", revision=1))) is False


def test_a_job_survives_closing_and_reopening_the_store(store: Store, backend: Backend) -> None:
    made = job(params={"template_id": "tpl"}, progress=JobProgress(total=3), created_by="tok")
    insert(store, made)
    asyncio.run(store.close())
    reopened = backend.open()
    try:
        asyncio.run(reopened.migrate())
        assert get(reopened, made) == made
        assert [found.id for found in run(reopened, "a", lambda tx: tx.list_jobs(PageRequest())).items] == [made.id]
        claimed = claim(reopened)
        assert claimed is not None
        assert claimed.id == made.id
    finally:
        asyncio.run(reopened.close())
    again = backend.open()
    try:
        assert get(again, made) == claimed
    finally:
        asyncio.run(again.close())


# ---------------------------------------------------------------------------------------------- jobs claimed
def test_the_oldest_free_job_is_claimed_across_tenants(store: Store) -> None:
    held = job(minutes=0, status=JobStatus.RUNNING, held_by="w0", lease_until=LEASE, started_at=T0, revision=3)
    oldest = job(minutes=1)
    other_tenant = job("b", minutes=2)
    lapsed = job(minutes=3, status=JobStatus.RUNNING, held_by="w0", lease_until=NOW - timedelta(seconds=1))
    lapsed = lapsed.model_copy(update={"started_at": T0 + timedelta(minutes=4), "cursor": "c-7", "revision": 5})
    finished = [job(minutes=-1, status=status) for status in JobStatus if status not in UNFINISHED_JOBS]
    insert(store, held, lapsed, other_tenant, oldest, *finished)

    first = claim(store, worker="w1")
    assert first == oldest.model_copy(
        update={"status": JobStatus.RUNNING, "held_by": "w1", "lease_until": LEASE, "started_at": NOW, "revision": 1}
    )
    assert get(store, oldest) == first
    second = claim(store, worker="w2")
    assert second is not None
    assert (second.tenant, second.id, second.held_by) == ("b", other_tenant.id, "w2")
    taken = claim(store, worker="w3")  # a running job whose lease ran out: taken over where it was
    assert taken == lapsed.model_copy(update={"held_by": "w3", "lease_until": LEASE, "revision": 6})
    assert get(store, lapsed) == taken
    assert claim(store, worker="w4") is None  # the lease of `held` holds; finished jobs are never claimed
    for done in finished:
        assert get(store, done) == done
    # The worker whose lease was taken over can no longer save.
    assert run(store, "a", lambda tx: tx.update_job(lapsed.model_copy(update={"revision": 6}))) is False
    # Once every lease has run out, each is claimed again, oldest first; started_at stays the first start.
    after = LEASE + timedelta(seconds=1)
    again = [claim(store, after, "w5", after + timedelta(minutes=5)) for _ in range(5)]
    assert [found.id if found else None for found in again] == [held.id, oldest.id, other_tenant.id, lapsed.id, None]
    assert [found.started_at for found in again if found] == [T0, NOW, NOW, lapsed.started_at]
    assert {found.held_by for found in again if found} == {"w5"}


def test_jobs_made_at_the_same_time_are_claimed_in_id_order(store: Store) -> None:
    insert(store, job(id="job-b"), job(id="job-c"), job(id="job-a"))
    assert [getattr(claim(store), "id", None) for _ in range(4)] == ["job-a", "job-b", "job-c", None]


def test_two_claimers_never_get_the_same_job(store: Store, backend: Backend) -> None:
    """Threads on two store objects over one database (or folder), claiming at once until nothing is left."""
    made = [job("a" if n % 2 else "b", minutes=n % 5) for n in range(24)]

    def insert_all(stx: SystemTx) -> None:
        for found in made:
            stx.for_tenant(found.tenant).insert_job(found)

    system(store, insert_all)
    second = backend.open()
    claimed: dict[str, list[JobRecord]] = {}
    failed: list[BaseException] = []
    start = threading.Barrier(6)

    def worker(opened: Store, name: str) -> None:
        got = claimed.setdefault(name, [])
        start.wait()
        try:
            while (found := opened.run_system(lambda stx: stx.claim_job(NOW, name, LEASE), True)) is not None:
                got.append(found)
        except BaseException as exc:
            failed.append(exc)

    threads = [
        threading.Thread(target=worker, args=(opened, f"w{n}-{i}"))
        for n, opened in enumerate((store, second))
        for i in range(3)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        asyncio.run(second.close())
    assert failed == []
    assert len(claimed) == 6
    everything = [found.id for got in claimed.values() for found in got]
    assert sorted(everything) == sorted(found.id for found in made)  # each once, none twice
    holders = {found.id: name for name, got in claimed.items() for found in got}
    assert all(found.held_by == name for name, got in claimed.items() for found in got)
    for found in made:
        stored = get(store, found)
        assert stored is not None
        assert (stored.held_by, stored.revision) == (holders[found.id], 1)


# ---------------------------------------------------------------------------------------------- bulk work
def test_contacts_are_counted_as_they_are_listed(store: Store) -> None:
    people = [
        contact(cid="c1", county="Adams", organization="Union", tags=["x", "y"], external_id="e1"),
        contact(cid="c2", county="Adams", organization="Church", tags=["x"]),
        contact(cid="c3", county="Kent", organization="Union", tags=["y"]),
        contact(cid="c4", county="Kent"),
        contact(cid="c5", county="adams", organization="union"),  # filters are exact
    ]

    def insert_all(tx: Tx) -> None:
        for person in people:
            tx.insert_contact(person)

    run(store, "a", insert_all)
    run(store, "b", lambda tx: tx.insert_contact(contact("b", county="Adams", organization="Union", tags=["x", "y"])))
    cases: list[tuple[ContactFilter, int]] = [
        (ContactFilter(), 5),
        (ContactFilter(county="Adams"), 2),
        (ContactFilter(county="Nowhere"), 0),
        (ContactFilter(organization="Union"), 2),
        (ContactFilter(tags=["x"]), 2),
        (ContactFilter(tags=["x", "y"]), 1),
        (ContactFilter(tags=["y", "zz"]), 0),
        (ContactFilter(external_id="e1"), 1),
        (ContactFilter(external_id="e2"), 0),
        (ContactFilter(county="Adams", tags=["x"], organization="Church"), 1),
        (ContactFilter(county="Kent", tags=["y"]), 1),
    ]
    for where, expected in cases:
        assert run(store, "a", lambda tx, w=where: tx.count_contacts(w), write=False) == expected, where
        listed = run(store, "a", lambda tx, w=where: tx.list_contacts(w, PageRequest(limit=100)), write=False)
        assert len(listed.items) == expected, where
    assert run(store, "b", lambda tx: tx.count_contacts(ContactFilter())) == 1
    assert run(store, "c", lambda tx: tx.count_contacts(ContactFilter())) == 0


def enrol(tx: Tx, contact_id: str, status: InstanceStatus, template_id: str = "tpl") -> None:
    """An instance of `template_id` (the contract suite's graph) for the contact, stored with `status`."""
    tpl = template(tx.tenant, template_id)
    snapshot = snapshot_of(tx.tenant, "call", {k: v.model_dump(mode="json") for k, v in tpl.nodes.items()})
    tx.put_snapshot(snapshot)
    made = WorkflowInstance.model_validate(
        {"id": new_id(), "tenant": tx.tenant, "contact_id": contact_id, "template_id": template_id}
        | {"template_version": tpl.version, "start_node": "call", "nodes": tpl.nodes, "status": status}
        | {"created_at": T0, "updated_at": T0}
    )
    tx.insert_instance(made, snapshot.id)


def test_enrolled_contacts_are_those_with_an_unfinished_instance_of_the_template(store: Store) -> None:
    def setup(tx: Tx) -> None:
        for status in InstanceStatus:  # one contact per status: c-pending, c-active, ...
            enrol(tx, f"c-{status.value}", status)
        enrol(tx, "c-completed", InstanceStatus.CANCELLED)  # two finished ones are still not enrolled
        enrol(tx, "c-other", InstanceStatus.PENDING, template_id="other")
        enrol(tx, "c-both", InstanceStatus.PAUSED, template_id="other")
        enrol(tx, "c-both", InstanceStatus.WAITING)

    run(store, "a", setup)

    def in_b(tx: Tx) -> None:  # another tenant's instances are never counted
        enrol(tx, "c-completed", InstanceStatus.PENDING)
        enrol(tx, "c-b", InstanceStatus.ACTIVE)

    run(store, "b", in_b)
    asked = [f"c-{status.value}" for status in InstanceStatus] + ["c-other", "c-both", "c-b", "nobody", "c-both"]
    unfinished = {f"c-{status.value}" for status in InstanceStatus if status not in TERMINAL}
    assert unfinished == {"c-pending", "c-active", "c-waiting", "c-paused"}

    def enrolled(template_id: str, ids: list[str], tenant: str = "a") -> set[str]:
        found: set[str] = run(store, tenant, lambda tx: tx.enrolled_contacts(template_id, ids), write=False)
        return found

    assert enrolled("tpl", asked) == unfinished | {"c-both"}
    assert enrolled("other", asked) == {"c-other", "c-both"}
    assert enrolled("none", asked) == set()
    assert enrolled("tpl", []) == set()
    assert enrolled("tpl", ["c-paused"]) == {"c-paused"}
    assert enrolled("tpl", asked, tenant="b") == {"c-completed", "c-b"}
    many = [f"x{n}" for n in range(1000)] + ["c-active"]  # a whole batch in one call
    assert enrolled("tpl", many) == {"c-active"}


def test_a_finished_instance_no_longer_counts_as_enrolled(store: Store) -> None:
    run(store, "a", lambda tx: enrol(tx, "c1", InstanceStatus.ACTIVE))
    found = run(store, "a", lambda tx: tx.list_instances(InstanceFilter(contact_id="c1"), PageRequest())).items[0]
    assert run(store, "a", lambda tx: tx.enrolled_contacts("tpl", ["c1"])) == {"c1"}
    done = found.model_copy(update={"status": InstanceStatus.COMPLETED, "revision": found.revision + 1})
    run(store, "a", lambda tx: tx.update_instance(done))
    assert run(store, "a", lambda tx: tx.enrolled_contacts("tpl", ["c1"])) == set()


# ---------------------------------------------------------------------------------------------- the SQL schema
def statuses(condition: Any) -> set[str]:
    return set(re.findall(r"'([a-z_]+)'", str(condition)))


def test_the_partial_index_conditions_name_the_models_statuses() -> None:
    assert statuses(schema.ENROLLED_SQL) == {status.value for status in InstanceStatus if status not in TERMINAL}
    assert statuses(schema.UNFINISHED_JOBS_SQL) == {status.value for status in UNFINISHED_JOBS}


@pytest.fixture
def plans(tmp_path: Path) -> Iterator[tuple[Store, list[str]]]:
    """A SQLite store, and the query plan of every SELECT it runs from now on."""
    made = SQLiteBackend(tmp_path)
    opened = made.open()
    assert isinstance(opened, SQLiteStore)
    asyncio.run(opened.migrate())
    found: list[str] = []
    engine = create_engine(f"sqlite:///{made.path}")

    def explain(_conn: Any, _cursor: Any, statement: str, params: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params).all()
            found.append(" | ".join(row[-1] for row in rows))

    event.listen(opened._engine, "before_cursor_execute", explain)
    yield opened, found
    asyncio.run(opened.close())
    engine.dispose()


def test_sqlite_walks_the_indexes_for_jobs_and_enrolments(plans: tuple[Store, list[str]]) -> None:
    opened, found = plans
    insert(opened, *(job(minutes=n) for n in range(3)))
    run(opened, "a", lambda tx: enrol(tx, "c1", InstanceStatus.PENDING))
    found.clear()
    run(opened, "a", lambda tx: tx.enrolled_contacts("tpl", ["c1", "c2"]))
    assert found == ["SEARCH instances USING INDEX ix_instances_enrolled (tenant=? AND template_id=? AND contact_id=?)"]
    found.clear()
    first = run(opened, "a", lambda tx: tx.list_jobs(PageRequest(1)))
    run(opened, "a", lambda tx: tx.list_jobs(PageRequest(1, first.next_cursor)))
    assert found == [  # the next page starts at its cursor in the index, not by reading the rows before it
        "SEARCH jobs USING INDEX ix_jobs_created (tenant=?)",
        "SEARCH jobs USING INDEX ix_jobs_created (tenant=? AND created_at<?)",
    ]
    found.clear()
    claim(opened)
    assert found == ["SCAN jobs USING INDEX ix_jobs_unfinished"]  # in claim order: no sort, finished jobs absent


# ---------------------------------------------------------------------------------------------- migration 5
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_of_version_4_gets_jobs(kind: str, tmp_path: Path) -> None:
    """Migration 5 adds the jobs table and the index of unfinished instances to a database made before them."""
    made = BACKENDS[kind](tmp_path)
    try:
        opened = made.open()
        assert 5 in asyncio.run(opened.migrate())
        run(opened, "a", lambda tx: enrol(tx, "c1", InstanceStatus.ACTIVE))
        asyncio.run(opened.close())
        engine = create_engine(store_url(made))
        with engine.begin() as conn:  # back to what version 4 made
            conn.exec_driver_sql("DROP TABLE jobs")
            conn.exec_driver_sql("DROP INDEX ix_instances_enrolled")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 5")
        engine.dispose()
        upgraded = made.open()
        try:
            assert asyncio.run(upgraded.migrate())[0] == 5
            assert asyncio.run(upgraded.migrate()) == []
            insert(upgraded, job(id="j1"))
            assert getattr(claim(upgraded), "id", None) == "j1"
            assert run(upgraded, "a", lambda tx: tx.enrolled_contacts("tpl", ["c1"])) == {"c1"}
        finally:
            asyncio.run(upgraded.close())
        if isinstance(made, SQLiteBackend):
            with sqlite3.connect(made.path) as conn:
                indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
            assert {"ix_instances_enrolled", "ix_jobs_created", "ix_jobs_unfinished"} <= indexes
    finally:
        made.cleanup()
