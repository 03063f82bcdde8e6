"""The worker's batched timers (runtime/timers.py), on each store: many due timers of a tenant moved on in one
transaction, each still checked at the revision claimed; one that moved meanwhile is left alone, a batch that
fails is fired one by one, and two workers never fire a timer twice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import flows
from cbworkflow.clock import FakeClock
from cbworkflow.engine import steps
from cbworkflow.ids import new_id
from cbworkflow.models.access import Tenant
from cbworkflow.models.contacts import Contact
from cbworkflow.models.events import EventType
from cbworkflow.models.templates import TemplateCreate, WorkflowTemplate
from cbworkflow.runtime.worker import Worker
from cbworkflow.services.instances import new_instance
from cbworkflow.settings import Settings
from cbworkflow.store.base import DueWork, InstanceFilter, PageRequest, Store, Tx
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import PostgresDatabase, store_url

TIMER = flows.one_timer()


class Place:
    """Services on one store, a fake clock, the timer template, and a helper that starts instances at it."""

    def __init__(self, services: Any, clock: FakeClock, loop: asyncio.AbstractEventLoop) -> None:
        self.services = services
        self.store: Store = services.store
        self.clock = clock
        self.loop = loop
        body = TemplateCreate.model_validate(TIMER)
        self.template: WorkflowTemplate = self.run(services.templates.create(SYSTEM, body))

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def waiting(self, tenant: str, count: int, tags: tuple[str, ...] = ()) -> list[str]:
        """`count` instances of `tenant` at the one-minute timer, with `tags`; their ids."""

        def put(tx: Tx) -> list[str]:
            now = self.clock.now()
            made = []
            for _ in range(count):
                contact = Contact(id=new_id(), tenant=tenant, name="Timer", created_at=now, updated_at=now)
                tx.insert_contact(contact)
                inst, snapshot = new_instance(tenant, contact.id, self.template, now)
                inst = inst.model_copy(update={"tags": list(tags)})
                tx.put_snapshot(snapshot)
                tx.insert_instance(inst, snapshot.id)
                step = steps.start(inst, now, "test")
                tx.update_instance(step.instance)
                tx.append_events(step.events)
                made.append(inst.id)
            return made

        return list(self.run(self.store.write(tenant, put)))

    def worker(self, name: str) -> Worker:
        return Worker(self.store, self.clock, _NoHandlers(), worker_id=name)

    def claim(self, worker: Worker, limit: int = 200) -> list[DueWork]:
        now = self.clock.now()
        return list(
            self.run(self.store.system_write(lambda stx: stx.claim_due(now, worker.id, now + worker.lease, limit)))
        )

    def fired(self, tenant: str, instance_id: str) -> int:
        """How many `wait_completed` events the instance has."""

        def read(tx: Tx) -> int:
            page = tx.instance_events(instance_id, PageRequest(limit=100), newest_first=True)
            return sum(1 for e in page.items if e.type is EventType.WAIT_COMPLETED)

        return int(self.run(self.store.read(tenant, read)))

    def status(self, tenant: str, instance_id: str) -> str:
        found = self.run(self.store.read(tenant, lambda tx: tx.get_instance(instance_id)))
        return str(found.status.value)


class _NoHandlers:
    """Timers need none of the outside world."""

    async def decide(self, request: Any) -> Any:
        raise AssertionError("no model here")

    async def call_webhook(self, call: Any) -> Any:
        raise AssertionError("no webhook here")

    async def run_action(self, request: Any) -> Any:
        raise AssertionError("no executor here")

    async def close(self) -> None:
        """Nothing to let go of."""


@pytest.fixture(params=["sqlite", "postgresql", "json"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    database = PostgresDatabase(migrated=True) if request.param == "postgresql" else None
    loop = asyncio.new_event_loop()
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url(request.param, tmp_path, database),
        admin_token="timer-test-token-0123456789",
    )
    clock = FakeClock()
    services = loop.run_until_complete(build_services(settings, clock=clock))
    loop.run_until_complete(bootstrap(services, load_example=False))
    try:
        yield Place(services, clock, loop)
    finally:
        loop.run_until_complete(services.store.close())
        loop.close()
        if database is not None:
            database.drop()


def test_a_batch_fires_every_timer_but_the_one_moved_since_the_claim(place: Place) -> None:
    ids = place.waiting("default", 6)
    place.clock.advance(timedelta(minutes=1))
    worker = place.worker("w1")
    claimed = place.claim(worker)
    assert {w.instance_id for w in claimed} == set(ids)
    assert all(w.timer for w in claimed)
    moved = ids[2]
    place.run(place.services.instances.pause(SYSTEM, moved))  # after the claim, before the batch
    assert place.run(worker.timers.fire(claimed)) == []
    assert place.status("default", moved) == "paused"
    assert place.fired("default", moved) == 0
    for other in set(ids) - {moved}:
        assert (place.status("default", other), place.fired("default", other)) == ("completed", 1)


def test_a_batch_keeps_the_instances_tags_and_counts(place: Place) -> None:
    tagged = place.waiting("default", 3, tags=("donor", "kent"))
    plain = place.waiting("default", 2)
    place.clock.advance(timedelta(minutes=1))
    worker = place.worker("w1")
    assert place.run(worker.timers.fire(place.claim(worker))) == []
    for instance_id in tagged + plain:
        assert (place.status("default", instance_id), place.fired("default", instance_id)) == ("completed", 1)
    where = InstanceFilter(tags=("donor",), status="completed")
    found = place.run(place.store.read("default", lambda tx: tx.list_instances(where, PageRequest(limit=10))))
    assert sorted(i.id for i in found.items) == sorted(tagged)
    stats = place.run(place.services.stats.of_template("default", "timer"))
    assert {k: v for k, v in stats.statuses.items() if v} == {"completed": 5}  # the counts moved with the batch


def test_a_batch_spans_tenants_each_in_its_own_transaction(place: Place) -> None:
    now = place.clock.now()
    place.run(place.store.system_write(lambda stx: stx.insert_tenant(Tenant(id="b", name="B", created_at=now))))
    mine = place.waiting("default", 3)
    theirs = place.waiting("b", 3)
    place.clock.advance(timedelta(minutes=1))
    worker = place.worker("w1")
    claimed = place.claim(worker)
    assert sorted(w.tenant for w in claimed) == ["b"] * 3 + ["default"] * 3
    assert place.run(worker.timers.fire(claimed)) == []
    for tenant, ids in (("default", mine), ("b", theirs)):
        for instance_id in ids:
            assert (place.status(tenant, instance_id), place.fired(tenant, instance_id)) == ("completed", 1)


def test_a_batch_that_fails_is_fired_one_by_one(place: Place, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = place.waiting("default", 4)
    broken = ids[1]
    fire = steps.fire_timer

    def fire_but_one(instance: Any, now: Any, ctx: Any = steps.NO_CONTEXT) -> steps.Step:
        if instance.id == broken:
            raise RuntimeError("a bug in one instance's step")
        return fire(instance, now, ctx)

    monkeypatch.setattr(steps, "fire_timer", fire_but_one)
    place.clock.advance(timedelta(minutes=1))
    worker = place.worker("w1")

    async def once() -> int:
        claimed = await worker.run_once()  # the batch fails whole, then each timer runs on its own
        await worker.drain()
        return claimed

    assert place.run(once()) == 4
    assert (place.status("default", broken), place.fired("default", broken)) == ("waiting", 0)
    for other in set(ids) - {broken}:
        assert (place.status("default", other), place.fired("default", other)) == ("completed", 1)
    assert place.claim(place.worker("w2")) == []  # the broken one keeps its lease: retried when it runs out


def test_a_claim_leaves_slow_work_it_cannot_start(place: Place) -> None:
    ids = place.waiting("default", 3)

    def to_webhook(tx: Tx) -> None:
        inst = tx.get_instance(ids[0])
        assert inst is not None
        tx.update_instance(inst.model_copy(update={"waiting_for": "webhook", "revision": inst.revision + 1}))

    place.run(place.store.write("default", to_webhook))
    place.clock.advance(timedelta(minutes=1))
    now = place.clock.now()
    lease = now + timedelta(minutes=5)
    claimed = place.run(place.store.system_write(lambda stx: stx.claim_due(now, "w1", lease, 10, 0)))
    assert {w.instance_id for w in claimed} == set(ids[1:])  # timers only: no free slot for the webhook
    slow = place.run(place.store.system_write(lambda stx: stx.claim_due(now, "w2", lease, 10, 1)))
    assert [(w.instance_id, w.timer) for w in slow] == [(ids[0], False)]


def test_timers_due_behind_a_backlog_of_slow_work_are_claimed(place: Place) -> None:
    """Thirty model decisions fell due before three timers; a worker with no free slot, claiming ten at a time,
    still gets the timers (the slow work stays for a worker that can start it)."""
    slow_ids, timer_ids = place.waiting("default", 30), place.waiting("default", 3)
    earlier = place.clock.now()

    def to_models(tx: Tx) -> None:
        for inst in tx.get_instances(slow_ids):
            update = {"waiting_for": "ai_decision", "wake_at": earlier, "revision": inst.revision + 1}
            tx.update_instance(inst.model_copy(update=update))

    place.run(place.store.write("default", to_models))
    place.clock.advance(timedelta(minutes=1))
    now = place.clock.now()
    lease = now + timedelta(minutes=5)
    claimed = place.run(place.store.system_write(lambda stx: stx.claim_due(now, "w1", lease, 10, 0)))
    assert sorted(w.instance_id for w in claimed) == sorted(timer_ids)
    assert all(w.timer for w in claimed)
    models = place.run(place.store.system_write(lambda stx: stx.claim_due(now, "w2", lease, 10, 10)))
    assert [w.waiting_for for w in models] == ["ai_decision"] * 10  # earliest first; the timers are leased to w1


def test_a_lease_taken_over_makes_the_first_workers_batch_stale(place: Place) -> None:
    ids = place.waiting("default", 5)
    place.clock.advance(timedelta(minutes=1))
    first, second = place.worker("w1"), place.worker("w2")
    held = place.claim(first)
    assert len(held) == 5
    assert place.claim(second) == []  # leased to the first
    place.clock.advance(first.lease + timedelta(seconds=1))  # the first stalls past its lease
    taken = place.claim(second)
    assert {w.instance_id for w in taken} == set(ids)
    assert place.run(second.timers.fire(taken)) == []
    assert place.run(first.timers.fire(held)) == []  # every one moved on: all stale, nothing applied again
    for instance_id in ids:
        assert (place.status("default", instance_id), place.fired("default", instance_id)) == ("completed", 1)


def test_two_workers_fire_many_timers_exactly_once(place: Place) -> None:
    ids = place.waiting("default", 450)
    place.clock.advance(timedelta(minutes=1))
    workers = [place.worker("w1"), place.worker("w2")]

    async def settle(worker: Worker) -> int:
        done = 0
        while claimed := await worker.run_once():
            done += claimed
            await worker.drain()
        return done

    async def both() -> list[int]:
        return list(await asyncio.gather(*(settle(w) for w in workers)))

    assert sum(place.run(both())) == len(ids)  # claims never overlap

    def count(tx: Tx) -> tuple[int, int]:
        page = tx.instance_events
        fired = sum(
            1
            for instance_id in ids
            for e in page(instance_id, PageRequest(limit=100), newest_first=True).items
            if e.type is EventType.WAIT_COMPLETED
        )
        done = sum(1 for instance_id in ids if (i := tx.get_instance(instance_id)) and i.status.value == "completed")
        return fired, done

    assert place.run(place.store.read("default", count)) == (len(ids), len(ids))
