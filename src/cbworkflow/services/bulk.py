"""Bulk enrolment (`POST /api/instances/bulk`, `cbworkflow enrol`): every matching contact that has no unfinished
instance of the template gets one, a batch of contacts per transaction.

Each batch writes its instances, their first events (and, with `start`, what entering the start node makes: a
task, a timer) in one transaction, so a batch is done whole or not at all. Enrolment is idempotent by nature: a
contact that already has an unfinished instance is skipped, so a batch done twice, or a run begun again after a
crash, never enrols anyone twice. Up to `inline_limit` contacts are enrolled inside the request; more become a job
the worker runs (`runtime/jobs.py`), whose cursor moves in each batch's transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from ..clock import Clock
from ..engine import steps
from ..errors import InvalidInput
from ..models.access import Principal
from ..models.events import Event
from ..models.instances import BulkEnrol, BulkResult, WorkflowInstance
from ..models.jobs import Job, JobKind, JobRecord
from ..store.base import ContactFilter, PageRequest, Store, Tx
from .instances import InstanceService, enrollable, pending_instance, template_snapshot
from .jobs import JobService


@dataclass(frozen=True)
class Batch:
    """What one batch did, and where the next one starts (None: there is no next one)."""

    enrolled: int
    skipped: int
    next_cursor: str | None

    @property
    def seen(self) -> int:
        """Contacts this batch went through: enrolled, or skipped (already enrolled, or deleted since)."""
        return self.enrolled + self.skipped


def _filter(body: BulkEnrol) -> ContactFilter:
    chosen = body.contacts
    return ContactFilter(
        tags=[chosen.tag] if chosen.tag else [], county=chosen.county, organization=chosen.organization
    )


class BulkEnrolment:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        instances: InstanceService,
        jobs: JobService,
        *,
        batch_size: int = 500,
        inline_limit: int = 5_000,
    ) -> None:
        self.store = store
        self.clock = clock
        self.instances = instances
        self.jobs = jobs
        self.batch_size = batch_size
        self.inline_limit = inline_limit

    async def count(self, principal: Principal, body: BulkEnrol) -> int:
        """How many contacts the request takes: 404 for an unknown template, 422 for an invalid one or an
        unknown contact id."""

        def run(tx: Tx) -> int:
            enrollable(tx, body.template_id)
            ids = list(dict.fromkeys(body.contacts.ids))
            if not ids:
                return tx.count_contacts(_filter(body))
            missing = [contact_id for contact_id in ids if tx.get_contact(contact_id) is None]
            if missing:
                more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
                raise InvalidInput(f"contacts.ids: no contact with id {missing[0]!r}{more}")
            return len(ids)

        return await self.store.read(principal.tenant, run)

    async def enrol(self, principal: Principal, body: BulkEnrol) -> BulkResult | Job:
        """Enrol inside the request when the run is small, else queue a job (the caller answers 202)."""
        total = await self.count(principal, body)
        if total > self.inline_limit:
            return await self.jobs.queue(principal, JobKind.BULK_ENROL, body.model_dump(mode="json"), total)
        enrolled = skipped = 0
        async for batch in self.batches(principal.tenant, principal.token_id, body):
            enrolled, skipped = enrolled + batch.enrolled, skipped + batch.skipped
        return BulkResult(enrolled=enrolled, skipped=skipped)

    async def batches(
        self, tenant: str, actor: str, body: BulkEnrol, cursor: str | None = None
    ) -> AsyncIterator[Batch]:
        """Run the batches one transaction each, yielding each one's counts (the CLI draws its progress bar)."""
        while True:
            batch = await self.store.write(tenant, partial(self.batch, body=body, cursor=cursor, actor=actor))
            if body.start and batch.enrolled:
                self.instances.notify()
            yield batch
            if batch.next_cursor is None:
                return
            cursor = batch.next_cursor

    def batch(self, tx: Tx, *, body: BulkEnrol, cursor: str | None, actor: str, now: datetime | None = None) -> Batch:
        """One batch, in `tx`: the next `batch_size` contacts after `cursor`, each enrolled unless it has an
        unfinished instance of the template already."""
        now = now or self.clock.now()
        template = enrollable(tx, body.template_id)  # it may have been deleted or broken since the run began
        ids, consumed, next_cursor = self._next_ids(tx, body, cursor)
        existing = tx.enrolled_contacts(template.id, ids) if ids else set()
        snapshot = template_snapshot(tx.tenant, template)
        tx.put_snapshot(snapshot)
        made: list[WorkflowInstance] = []
        events: list[Event] = []
        for contact_id in ids:
            if contact_id in existing:
                continue
            instance = pending_instance(tx.tenant, contact_id, template, now)
            instance.state, instance.tags = dict(body.initial_state), list(body.tags)
            events.extend(steps.created_events(instance, actor))
            if body.start:  # started before it is stored: one row written, not written and then changed
                step = steps.start(instance, now, actor, ctx=self.instances.context(tx, instance))
                instance = step.instance
                events.extend(step.events)
            made.append(instance)
        tx.insert_instances(made, snapshot.id)  # the whole batch in a few statements
        tx.append_events(events)
        return Batch(len(made), consumed - len(made), next_cursor)

    def _next_ids(self, tx: Tx, body: BulkEnrol, cursor: str | None) -> tuple[list[str], int, str | None]:
        """The next batch's contact ids (those that still exist), how many it went through, and the cursor after."""
        if body.contacts.ids:
            ids = list(dict.fromkeys(body.contacts.ids))
            start = int(cursor or 0)
            chunk = ids[start : start + self.batch_size]
            chosen = [contact_id for contact_id in chunk if tx.get_contact(contact_id) is not None]
            end = start + len(chunk)
            return chosen, len(chunk), (str(end) if end < len(ids) else None)
        page = tx.list_contact_ids(_filter(body), PageRequest(limit=self.batch_size, cursor=cursor))
        return page.items, len(page.items), page.next_cursor

    # ---------------------------------------------------------------- as a job
    def job_batch(self, tx: Tx, job: JobRecord, now: datetime) -> bool:
        """The job's next batch, in `tx`: its counts and cursor move with the batch's writes. True when done."""
        body = BulkEnrol.model_validate(job.params)
        batch = self.batch(tx, body=body, cursor=job.cursor, actor=job.created_by or "system", now=now)
        job.result = {
            "enrolled": int(job.result.get("enrolled", 0)) + batch.enrolled,
            "skipped": int(job.result.get("skipped", 0)) + batch.skipped,
        }
        job.progress.done += batch.seen
        job.cursor = batch.next_cursor
        return batch.next_cursor is None
