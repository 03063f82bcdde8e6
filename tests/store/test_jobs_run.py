"""Bulk enrolment and the jobs that run it, in-process on each of the three stores with a clock moved by hand.

A job's batches each commit with the job's cursor, so whatever stops a worker (a cancel, a graceful stop, a lease
that ran out and another worker taking over), every contact is enrolled exactly once in the end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.errors import Conflict, InvalidInput, NotFound
from cbworkflow.models.contacts import Contact
from cbworkflow.models.instances import BulkEnrol, BulkResult, InstanceStatus
from cbworkflow.models.jobs import Job, JobStatus
from cbworkflow.settings import Settings
from cbworkflow.store.base import InstanceFilter, PageRequest, Tx
from cbworkflow.wiring import SYSTEM, Services, bootstrap, build_services, job_runner
from conftest import PostgresDatabase, store_url

TEMPLATE = "county-outreach-v1"
BATCH = 10
TENANT = SYSTEM.tenant


class World:
    def __init__(self, services: Services, clock: FakeClock, loop: asyncio.AbstractEventLoop) -> None:
        self.services, self.clock, self.loop = services, clock, loop

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def contacts(self, count: int, **fields: Any) -> list[str]:
        """`count` contacts written in one transaction (fast), oldest first."""
        now = self.clock.now()
        made = [
            Contact(
                id=f"c{i:05d}-{fields.get('county', 'x').lower()}",
                tenant=TENANT,
                name=f"Voter {i}",
                created_at=now,
                updated_at=now,
                **fields,
            )
            for i in range(count)
        ]

        def write(tx: Tx) -> None:
            for contact in made:
                tx.insert_contact(contact)

        self.run(self.services.store.write(TENANT, write))
        return [c.id for c in made]

    def instances_by_contact(self) -> Counter[str]:
        seen: Counter[str] = Counter()
        cursor = None
        while True:
            page = self.run(
                self.services.instances.list(TENANT, InstanceFilter(template_id=TEMPLATE), PageRequest(500, cursor))
            )
            seen.update(i.contact_id for i in page.items)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    def job(self, job_id: str) -> Job:
        found: Job = self.run(self.services.jobs.get(TENANT, job_id))
        return found


@pytest.fixture(params=["sqlite", "postgresql", "json"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    database = PostgresDatabase(migrated=True) if request.param == "postgresql" else None
    loop = asyncio.new_event_loop()
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url(request.param, tmp_path, database),
        admin_token="jobs-test-token-0123456789",
        job_batch_size=BATCH,
        bulk_inline_limit=5,
        job_lease_s=60,
    )
    clock = FakeClock()
    services = loop.run_until_complete(build_services(settings, clock=clock))
    loop.run_until_complete(bootstrap(services, load_example=True))
    try:
        yield World(services, clock, loop)
    finally:
        loop.run_until_complete(services.store.close())
        loop.close()
        if database is not None:
            database.drop()


def enrol(world: World, **contacts: Any) -> BulkResult | Job:
    body = BulkEnrol(template_id=TEMPLATE, contacts=contacts, start=True)
    done: BulkResult | Job = world.run(world.services.bulk.enrol(SYSTEM, body))
    return done


def test_a_small_run_enrols_in_the_request_and_a_second_run_skips_everyone(world: World) -> None:
    chosen = world.contacts(4, county="Adams")
    world.contacts(3, county="Baker")
    assert enrol(world, county="Adams") == BulkResult(enrolled=4, skipped=0)
    assert enrol(world, county="Adams") == BulkResult(enrolled=0, skipped=4)
    by_contact = world.instances_by_contact()
    assert by_contact == Counter(chosen)
    page = world.run(world.services.instances.list(TENANT, InstanceFilter(template_id=TEMPLATE), PageRequest(50)))
    assert {i.status for i in page.items} == {InstanceStatus.ACTIVE}  # started: at the first call, a task
    assert {i.current_node for i in page.items} == {"initial_call"}


def test_a_large_run_is_a_job_the_worker_finishes_batch_by_batch(world: World) -> None:
    chosen = world.contacts(35, county="Adams")
    world.contacts(2, county="Baker")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    assert (queued.status, queued.progress.done, queued.progress.total) == (JobStatus.QUEUED, 0, 35)
    runner = job_runner(world.services, "w1")
    assert world.run(runner.run_next(asyncio.Event())) is True
    finished = world.job(queued.id)
    assert finished.status is JobStatus.SUCCEEDED
    assert finished.result == {"enrolled": 35, "skipped": 0}
    assert (finished.progress.done, finished.progress.total) == (35, 35)
    assert finished.started_at is not None
    assert finished.finished_at is not None
    assert world.instances_by_contact() == Counter(chosen)
    assert world.run(runner.run_next(asyncio.Event())) is False  # nothing left to run


def test_a_cancel_stops_a_running_job_before_its_next_batch_and_keeps_what_it_did(world: World) -> None:
    world.contacts(35, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    runner = job_runner(world.services, "w1")
    now = world.clock.now()
    claimed = world.run(world.services.store.system_write(lambda stx: stx.claim_job(now, "w1", now + runner.lease)))
    assert claimed.id == queued.id
    world.run(world.services.store.write(TENANT, partial(runner._batch, job_id=queued.id)))  # one batch done
    asked = world.run(world.services.jobs.cancel(SYSTEM, queued.id))
    assert (asked.status, asked.cancel_requested) == (JobStatus.RUNNING, True)
    world.run(runner.run(claimed, asyncio.Event()))
    cancelled = world.job(queued.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.result == {"enrolled": BATCH, "skipped": 0}
    assert sum(world.instances_by_contact().values()) == BATCH
    with pytest.raises(Conflict, match="already finished"):
        world.run(world.services.jobs.cancel(SYSTEM, queued.id))


def test_a_queued_job_is_cancelled_at_once_and_never_runs(world: World) -> None:
    world.contacts(12, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    assert world.run(world.services.jobs.cancel(SYSTEM, queued.id)).status is JobStatus.CANCELLED
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is False
    assert not world.instances_by_contact()


def test_a_worker_whose_lease_ran_out_stops_and_the_next_one_finishes_without_doubles(world: World) -> None:
    chosen = world.contacts(35, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    slow, other = job_runner(world.services, "slow"), job_runner(world.services, "other")
    now = world.clock.now()
    claimed = world.run(world.services.store.system_write(lambda stx: stx.claim_job(now, "slow", now + slow.lease)))
    world.run(world.services.store.write(TENANT, partial(slow._batch, job_id=queued.id)))
    world.clock.advance(timedelta(seconds=61))  # the slow worker stalled past its lease
    assert world.run(other.run_next(asyncio.Event())) is True
    world.run(slow.run(claimed, asyncio.Event()))  # it wakes up: the job is not its own any more
    finished = world.job(queued.id)
    assert finished.status is JobStatus.SUCCEEDED
    assert finished.result == {"enrolled": 35, "skipped": 0}
    assert world.instances_by_contact() == Counter(chosen)


def test_a_graceful_stop_leaves_the_job_for_the_next_worker_at_once(world: World) -> None:
    chosen = world.contacts(25, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    stopping = asyncio.Event()
    stopping.set()  # stop asked before the first batch: the worker lets the job go
    first = job_runner(world.services, "first")
    assert world.run(first.run_next(stopping)) is True
    assert world.job(queued.id).status is JobStatus.RUNNING
    assert world.run(job_runner(world.services, "second").run_next(asyncio.Event())) is True  # no lease to wait out
    assert world.job(queued.id).status is JobStatus.SUCCEEDED
    assert world.instances_by_contact() == Counter(chosen)


def test_a_job_whose_template_was_deleted_fails_with_the_reason(world: World) -> None:
    world.contacts(12, county="Adams")
    queued = enrol(world, county="Adams")
    assert isinstance(queued, Job)
    world.run(world.services.templates.delete(SYSTEM, TEMPLATE))
    assert world.run(job_runner(world.services, "w1").run_next(asyncio.Event())) is True
    failed = world.job(queued.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == f"no workflow template with id {TEMPLATE!r}"


def test_ids_are_checked_before_anything_is_enrolled(world: World) -> None:
    known = world.contacts(3, county="Adams")
    with pytest.raises(InvalidInput, match=r"contacts.ids: no contact with id 'nobody' \(and 1 more\)"):
        enrol(world, ids=[known[0], "nobody", "nobody-else"])
    assert not world.instances_by_contact()
    assert enrol(world, ids=[known[0], known[0], known[2]]) == BulkResult(enrolled=2, skipped=0)
    with pytest.raises(NotFound, match="no workflow template with id 'nope'"):
        world.run(world.services.bulk.enrol(SYSTEM, BulkEnrol(template_id="nope")))
