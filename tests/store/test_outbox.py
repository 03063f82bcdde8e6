"""The outbox contract, on every backend: events numbered per tenant as their transaction commits, with no gap
and in commit order; nothing numbered for a rollback; readers' filters and cursors; the commit listener."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import test_store
from sqlalchemy import create_engine, delete, insert
from test_store import BACKENDS, Backend, contact, event, instance, run, system

from cbworkflow.errors import Conflict
from cbworkflow.ids import new_id
from cbworkflow.models.events import Event, EventType
from cbworkflow.models.instances import InstanceStatus
from cbworkflow.runtime.outbox import OutboxSignal
from cbworkflow.store import schema
from cbworkflow.store.base import EventFilter, Store, Tx
from cbworkflow.store.postgres import PostgresStore

store = test_store.store
backend = test_store.backend


def _instance_with_events(tx: Tx, cid: str, n: int, kind: EventType = EventType.USER_NOTE) -> Any:
    tx.insert_contact(contact(tx.tenant, cid=cid))
    inst = instance(tx, cid)
    tx.append_events([event(inst, kind) for _ in range(n)])
    return inst


def _sequences(found: list[Event]) -> list[int | None]:
    return [e.sequence for e in found]


def test_events_are_numbered_per_tenant_from_one(store: Store) -> None:
    run(store, "a", lambda tx: _instance_with_events(tx, "c1", 3))
    run(store, "b", lambda tx: _instance_with_events(tx, "c1", 2))
    run(store, "a", lambda tx: _instance_with_events(tx, "c2", 2))
    assert _sequences(run(store, "a", lambda tx: tx.events_after(0, 100), write=False)) == [1, 2, 3, 4, 5]
    assert _sequences(run(store, "b", lambda tx: tx.events_after(0, 100), write=False)) == [1, 2]
    assert _sequences(run(store, "a", lambda tx: tx.events_after(3, 1), write=False)) == [4]
    assert _sequences(run(store, "a", lambda tx: tx.events_after(1, 100, until=3), write=False)) == [2, 3]
    assert run(store, "a", lambda tx: tx.last_sequence(), write=False) == 5
    assert run(store, "c", lambda tx: tx.last_sequence(), write=False) == 0
    heads = system(store, lambda stx: stx.sequence_heads(), write=False)
    assert heads == {"a": 5, "b": 2}
    timeline = run(store, "a", lambda tx: tx.contact_events("c2", test_store.PageRequest()), write=False)
    assert sorted(_sequences(timeline.items)) == [4, 5]  # the timeline shows the same numbers


def test_a_rolled_back_change_takes_no_number(store: Store) -> None:
    run(store, "a", lambda tx: _instance_with_events(tx, "c1", 2))

    def fails(tx: Tx) -> None:
        _instance_with_events(tx, "c2", 3)
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        run(store, "a", fails)
    run(store, "a", lambda tx: _instance_with_events(tx, "c3", 1))
    found = run(store, "a", lambda tx: tx.events_after(0, 100), write=False)
    assert _sequences(found) == [1, 2, 3]
    assert {e.contact_id for e in found} == {"c1", "c3"}


def test_readers_filter_the_outbox(store: Store) -> None:
    first = run(store, "a", lambda tx: _instance_with_events(tx, "c1", 2))
    second = run(store, "a", lambda tx: _instance_with_events(tx, "c2", 1, EventType.NODE_ENTERED))
    run(store, "a", lambda tx: tx.append_events([event(None, EventType.CONTACT_UPDATED, contact_id="c1")]))

    def after(where: EventFilter) -> list[int | None]:
        return _sequences(run(store, "a", lambda tx: tx.events_after(0, 100, where), write=False))

    assert after(EventFilter(instance_id=first.id)) == [1, 2]
    assert after(EventFilter(contact_id="c1")) == [1, 2, 4]
    assert after(EventFilter(template_id="tpl")) == [1, 2, 3]
    assert after(EventFilter(types=["node_entered", "contact_updated"])) == [3, 4]
    assert after(EventFilter(held_by="volunteer-1")) == []
    held = second.model_copy(update={"held_by": "volunteer-1", "revision": 1, "status": InstanceStatus.ACTIVE})
    run(store, "a", lambda tx: tx.update_instance(held))
    assert after(EventFilter(held_by="volunteer-1")) == [3]
    assert after(EventFilter(contact_id="nobody")) == []


def test_a_tenant_level_event_is_in_the_outbox_only(store: Store) -> None:
    lone = event(None, EventType.DELIVERY_DISABLED).model_copy(update={"contact_id": None})
    run(store, "a", lambda tx: tx.append_events([lone]))
    found = run(store, "a", lambda tx: tx.events_after(0, 10), write=False)
    assert [(e.id, e.sequence, e.instance_id, e.contact_id) for e in found] == [(lone.id, 1, None, None)]


def test_deleted_records_take_their_events_out_of_the_outbox(store: Store) -> None:
    gone = run(store, "a", lambda tx: _instance_with_events(tx, "c1", 2))
    run(store, "a", lambda tx: _instance_with_events(tx, "c2", 1))
    run(store, "a", lambda tx: tx.append_events([event(None, EventType.CONTACT_UPDATED, contact_id="c2")]))
    run(store, "a", lambda tx: tx.delete_instance(gone.id))
    assert _sequences(run(store, "a", lambda tx: tx.events_after(0, 10), write=False)) == [3, 4]
    run(store, "a", lambda tx: tx.delete_contact("c2"))
    assert _sequences(run(store, "a", lambda tx: tx.events_after(0, 10), write=False)) == [3]
    run(store, "a", lambda tx: _instance_with_events(tx, "c3", 1))
    assert _sequences(run(store, "a", lambda tx: tx.events_after(0, 10), write=False)) == [3, 5]  # never reused


def test_cursors_remember_how_far_a_reader_came(store: Store) -> None:
    assert run(store, "a", lambda tx: tx.outbox_cursor("subscriptions")) == 0
    run(store, "a", lambda tx: tx.set_outbox_cursor("subscriptions", 7))
    assert run(store, "a", lambda tx: tx.outbox_cursor("subscriptions")) == 7
    assert run(store, "b", lambda tx: tx.outbox_cursor("subscriptions")) == 0
    assert run(store, "a", lambda tx: tx.outbox_cursor("stream")) == 0


def test_the_commit_listener_hears_commits_not_rollbacks(store: Store) -> None:
    heard: list[dict[str, int]] = []
    store.on_commit(heard.append)
    run(store, "a", lambda tx: _instance_with_events(tx, "c1", 2))
    run(store, "a", lambda tx: tx.insert_contact(contact("a", cid="quiet")))  # no event: nothing to say

    def fails(tx: Tx) -> None:
        _instance_with_events(tx, "c2", 1)
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        run(store, "a", fails)
    run(store, "b", lambda tx: _instance_with_events(tx, "c1", 1))
    assert heard == [{"a": 2}, {"b": 1}]


def test_this_process_commits_wake_a_waiter_and_wait_for_a_reader_otherwise(shared: Backend) -> None:
    """A commit wakes the loop only while someone waits; with nobody waiting the next reader still sees it."""
    here = shared.open()

    async def go() -> None:
        await here.migrate()
        signal = OutboxSignal(here, poll_interval=600)  # no poll within the test: only this process's commits
        await signal.start()
        try:
            waiting = asyncio.ensure_future(signal.wait_past("a", 0, timeout=20))
            await asyncio.sleep(0.05)  # the waiter is waiting
            await here.write("a", lambda tx: _instance_with_events(tx, "c1", 2))
            assert await waiting  # woken by the commit (the poll would have taken 600 s)
            for n in range(3):  # nobody waits: no wake-up is scheduled, the heads wait for a reader
                await here.write("a", lambda tx, n=n: _instance_with_events(tx, f"d{n}", 1))
            assert signal.head("a") == 5
            assert not await signal.wait_past("a", 5, timeout=0.2)  # nothing new
        finally:
            await signal.stop()
            await here.close()

    asyncio.run(go())


@pytest.fixture(params=sorted(BACKENDS))
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    yield made
    made.cleanup()


def test_concurrent_writers_commit_in_sequence_order_without_gaps(shared: Backend) -> None:
    """Writers in threads (two store objects: two processes' worth of connections) while a reader follows the
    outbox: every batch it reads starts right after the last one it saw, and in the end it has them all."""
    writers_store, reader_store = shared.open(), shared.open()
    asyncio.run(writers_store.migrate())
    per_writer, writers = 15, 4
    done = threading.Event()
    problems: list[str] = []
    seen: list[int] = []

    def write(n: int) -> None:
        for k in range(per_writer):
            run(writers_store, "a", lambda tx, k=k: _instance_with_events(tx, f"w{n}-{k}", 1 + k % 3))

    def read() -> None:
        last = 0
        while True:
            finished = done.is_set()
            found = run(reader_store, "a", lambda tx, last=last: tx.events_after(last, 1000), write=False)
            for e in found:
                if e.sequence != last + 1:
                    problems.append(f"after {last} came {e.sequence}")
                last = e.sequence or last
                seen.append(last)
            if finished and not found:
                return

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    reader.join()
    try:
        total = writers * sum(1 + k % 3 for k in range(per_writer))
        assert problems == []
        assert seen == list(range(1, total + 1))
    finally:
        asyncio.run(writers_store.close())
        asyncio.run(reader_store.close())


def test_the_signal_hears_another_store_object_commit(shared: Backend) -> None:
    """What another process commits wakes this one: by LISTEN/NOTIFY on PostgreSQL, by polling elsewhere."""
    here, elsewhere = shared.open(), shared.open()
    listens = isinstance(here, PostgresStore)  # then only NOTIFY can wake it within the test's time

    async def go() -> None:
        await here.migrate()
        signal = OutboxSignal(here, poll_interval=600 if listens else 0.2)
        await signal.start()
        try:
            assert signal.head("a") == 0
            await elsewhere.write("a", lambda tx: _instance_with_events(tx, "c1", 2))
            assert await signal.wait_past("a", 0, timeout=20)
            assert signal.head("a") == 2
            assert not await signal.wait_past("a", 2, timeout=0.3)  # nothing new
            await here.write("a", lambda tx: _instance_with_events(tx, "c2", 1))  # this process's own: at once
            assert signal.head("a") == 3
        finally:
            await signal.stop()
            await here.close()
            await elsewhere.close()

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_events_stored_before_the_outbox_get_their_numbers(kind: str, tmp_path: Path) -> None:
    """Migration 8 numbers the events a version without the outbox stored, per tenant in the order written, and
    later events go on from there."""
    made = BACKENDS[kind](tmp_path)
    try:
        old = made.open()
        asyncio.run(old.migrate())
        run(old, "a", lambda tx: _instance_with_events(tx, "c1", 3))
        run(old, "b", lambda tx: _instance_with_events(tx, "c1", 2))
        run(old, "a", lambda tx: _instance_with_events(tx, "c2", 1))
        asyncio.run(old.close())
        engine = create_engine(test_store.store_url(made))
        with engine.begin() as conn:  # back to what version 7 made
            conn.exec_driver_sql("DROP INDEX ix_events_sequence")
            conn.exec_driver_sql("UPDATE events SET sequence = NULL")
            conn.exec_driver_sql("DROP TABLE event_sequences")
            conn.exec_driver_sql("DROP TABLE outbox_cursors")
            conn.exec_driver_sql("DELETE FROM schema_migrations WHERE version >= 8")
        engine.dispose()
        upgraded = made.open()
        try:
            assert 8 in asyncio.run(upgraded.migrate())
            found = run(upgraded, "a", lambda tx: tx.events_after(0, 100), write=False)
            assert _sequences(found) == [1, 2, 3, 4]
            assert [e.contact_id for e in found] == ["c1", "c1", "c1", "c2"]
            assert _sequences(run(upgraded, "b", lambda tx: tx.events_after(0, 100), write=False)) == [1, 2]
            run(upgraded, "a", lambda tx: _instance_with_events(tx, "c3", 1))
            assert run(upgraded, "a", lambda tx: tx.last_sequence(), write=False) == 5
        finally:
            asyncio.run(upgraded.close())
    finally:
        made.cleanup()


def test_one_change_over_two_tenants_numbers_each_and_is_heard_once(store: Store) -> None:
    """Each tenant's events numbered in its own order, the counts of both moved, this process's commit listener
    told once with both heads (other processes hear by NOTIFY: `test_the_signal_hears_another_store_object_commit`);
    the same when one tenant's part is a batch (written by another path on PostgreSQL)."""
    heard: list[dict[str, int]] = []
    store.on_commit(heard.append)

    def both(a_events: int) -> Any:
        def change(stx: Any) -> None:
            _instance_with_events(stx.for_tenant("b"), f"c{a_events}", 3)
            _instance_with_events(stx.for_tenant("a"), f"c{a_events}", a_events)

        return change

    system(store, both(2))
    system(store, both(150))
    assert heard == [{"a": 2, "b": 3}, {"a": 152, "b": 6}]
    assert _sequences(run(store, "a", lambda tx: tx.events_after(0, 1000), write=False)) == list(range(1, 153))
    assert _sequences(run(store, "b", lambda tx: tx.events_after(0, 1000), write=False)) == list(range(1, 7))
    for tenant in ("a", "b"):
        placed = run(store, tenant, lambda tx: tx.workflow_counts("tpl", None), write=False)
        assert sum(count.n for count in placed if count.metric == "placed") == 2  # two instances, each placed once


def test_an_event_reads_back_as_it_was_written(store: Store) -> None:
    """Every field through the store's write path: nested JSON with a number beyond 64 bits, text beyond ASCII,
    a time with microseconds in another zone, empty optional fields; in the timeline's order."""
    when = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=timezone(timedelta(hours=-5)))
    data = {"nested": {"list": [1, 2.5, None, True, 'é 😀 "quoted"']}, "big": 2**70, "empty": {}}
    written = [
        Event(id=new_id(), type=EventType.USER_NOTE, timestamp=when, actor="Zoë", message="note ✓", data=data),
        Event(id=new_id(), type=EventType.CONTACT_UPDATED, timestamp=when, actor="a", contact_id="c1", node_id="n"),
    ]

    def write(tx: Tx) -> None:
        tx.insert_contact(contact(tx.tenant, cid="c1"))
        tx.append_events(written)

    run(store, "a", write)
    found = run(store, "a", lambda tx: tx.events_after(0, 10), write=False)
    assert [e.model_dump(exclude={"sequence"}) for e in found] == [e.model_dump(exclude={"sequence"}) for e in written]
    assert found[0].timestamp == when
    assert found[0].data["big"] == 2**70
    # the contact's timeline (newest first) is in the order each change appended its events
    later = [written[1].model_copy(update={"id": new_id()}), written[1].model_copy(update={"id": new_id()})]
    run(store, "a", lambda tx: tx.append_events(later))
    timeline = run(store, "a", lambda tx: tx.contact_events("c1", test_store.PageRequest()), write=False)
    assert [e.id for e in timeline.items] == [later[1].id, later[0].id, written[1].id]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_change_whose_events_cannot_be_numbered_commits_nothing(kind: str, tmp_path: Path) -> None:
    """A row already holding the next number (as a damaged copy might): the change is refused as a conflict, none
    of it stays (not its contact, not its counts, not the numbers it took), and the store goes on afterwards."""
    made = BACKENDS[kind](tmp_path)
    opened = made.open()
    try:
        asyncio.run(opened.migrate())
        run(opened, "a", lambda tx: _instance_with_events(tx, "c1", 2))
        engine = opened._engine  # type: ignore[attr-defined]
        row = {"tenant": "a", "id": "in-the-way", "type": "user_note", "actor": "x", "data": {}, "message": ""}
        with engine.begin() as conn:
            conn.execute(insert(schema.events), {**row, "timestamp": datetime.now(UTC), "sequence": 3})
        with pytest.raises(Conflict):
            run(opened, "a", lambda tx: _instance_with_events(tx, "c2", 2))
        assert run(opened, "a", lambda tx: tx.last_sequence(), write=False) == 2
        assert run(opened, "a", lambda tx: tx.get_contact("c2"), write=False) is None
        placed = run(opened, "a", lambda tx: tx.workflow_counts("tpl", None), write=False)
        assert sum(count.n for count in placed if count.metric == "placed") == 1
        with engine.begin() as conn:
            conn.execute(delete(schema.events).where(schema.events.c.id == "in-the-way"))
        run(opened, "a", lambda tx: _instance_with_events(tx, "c2", 2))
        assert _sequences(run(opened, "a", lambda tx: tx.events_after(2, 10), write=False)) == [3, 4]
    finally:
        asyncio.run(opened.close())
        made.cleanup()


def test_batches_and_steps_of_one_tenant_never_deadlock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a batch's events (the COPY path) and single steps (one statement) of one tenant and template,
    written at once from many threads, lock the tenant's sequences and the count rows in the same order. No rerun
    is allowed, so a deadlock would surface as an error."""
    from cbworkflow.store.sql import store as sql_store

    monkeypatch.setattr(sql_store, "RERUNS", 1)
    made = BACKENDS["postgresql"](tmp_path)
    opened = made.open()
    errors: list[BaseException] = []

    def writer(name: str, size: int, times: int) -> None:
        try:
            for k in range(times):
                run(opened, "a", lambda tx, k=k: _instance_with_events(tx, f"{name}-{k}", size))
        except BaseException as exc:
            errors.append(exc)

    try:
        asyncio.run(opened.migrate())
        plan = [("batch", 150, 8)] * 2 + [("step", 1, 40)] * 4
        threads = [
            threading.Thread(target=writer, args=(f"{kind}{n}", size, times))
            for n, (kind, size, times) in enumerate(plan)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        total = 2 * 8 * 150 + 4 * 40
        assert _sequences(run(opened, "a", lambda tx: tx.events_after(0, 10_000), write=False)) == list(
            range(1, total + 1)
        )
    finally:
        asyncio.run(opened.close())
        made.cleanup()


def test_a_naive_time_is_refused(tmp_path: Path) -> None:
    made = BACKENDS["postgresql"](tmp_path)
    opened = made.open()
    try:
        asyncio.run(opened.migrate())
        naive = Event(id=new_id(), type=EventType.USER_NOTE, timestamp=datetime(2026, 3, 1, 9, 30), actor="a")
        with pytest.raises(ValueError, match="naive"):
            run(opened, "a", lambda tx: tx.append_events([naive]))
        assert run(opened, "a", lambda tx: tx.last_sequence(), write=False) == 0
    finally:
        asyncio.run(opened.close())
        made.cleanup()
