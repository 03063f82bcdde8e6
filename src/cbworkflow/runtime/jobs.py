"""The worker's side of jobs: claim one, run its batches, each in one transaction with the job's own update.

A batch's writes and the job's new cursor, progress and lease commit together, so a worker killed at any moment
leaves the job exactly at its last committed batch; when the lease runs out another worker claims it and goes on
from there. Each batch's transaction first checks the job is still this worker's (a worker that stalled past its
lease finds another's name on it and stops), and sees a cancel asked for meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from functools import partial

from ..clock import Clock
from ..errors import CbwError
from ..models.jobs import JobKind, JobRecord, JobStatus
from ..store.base import Store, Tx

log = logging.getLogger("cbworkflow.jobs")

BatchFn = Callable[[Tx, JobRecord, datetime], bool]
"""One batch of a kind of job, in the transaction given: moves the job's cursor, progress and result; true when
the job is done."""


class _NotMine(Exception):
    """The job was taken over by another worker (this one's lease ran out): its batch is rolled back."""


class JobRunner:
    def __init__(
        self, store: Store, clock: Clock, kinds: Mapping[JobKind, BatchFn], *, worker_id: str, lease: timedelta
    ) -> None:
        self.store = store
        self.clock = clock
        self.kinds = kinds
        self.worker_id = worker_id
        self.lease = lease

    async def run_next(self, stop: asyncio.Event) -> bool:
        """Claim the oldest job no one runs and run it until it ends or `stop` is set; false when there was none."""
        now = self.clock.now()
        job = await self.store.system_write(lambda stx: stx.claim_job(now, self.worker_id, now + self.lease))
        if job is None:
            return False
        log.info("job %s (%s, tenant %s) taken up at %s done", job.id, job.kind.value, job.tenant, job.progress.done)
        await self.run(job, stop)
        return True

    async def run(self, job: JobRecord, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                job = await self.store.write(job.tenant, partial(self._batch, job_id=job.id))
            except _NotMine:
                log.warning("job %s was taken over by another worker; this one stops", job.id)
                return
            except CbwError as exc:  # the work cannot go on (its template was deleted, say): the job fails
                await self._fail(job, exc.detail)
                return
            except Exception:  # a bug: logged, and the job fails rather than spinning
                log.exception("job %s failed", job.id)
                await self._fail(job, "internal error; it has been logged")
                return
            if job.status is not JobStatus.RUNNING:
                log.info("job %s %s: %s", job.id, job.status.value, job.result)
                return
        await self._let_go(job)

    def _batch(self, tx: Tx, *, job_id: str) -> JobRecord:
        now = self.clock.now()
        job = tx.get_job(job_id)
        if job is None or job.held_by != self.worker_id or job.status is not JobStatus.RUNNING:
            raise _NotMine
        job.revision += 1
        if job.cancel_requested:
            job.status = JobStatus.CANCELLED
        elif self.kinds[job.kind](tx, job, now):
            job.status = JobStatus.SUCCEEDED
        if job.status is JobStatus.RUNNING:
            job.lease_until = now + self.lease
        else:
            job.finished_at, job.held_by, job.lease_until = now, None, None
            tx.delete_job_rows(job.id)  # what it staged and did not read (a cancelled import's rest)
        if not tx.update_job(job):
            raise _NotMine
        return job

    async def _fail(self, job: JobRecord, reason: str) -> None:
        def run(tx: Tx) -> None:
            found = tx.get_job(job.id)
            if found is None or found.held_by != self.worker_id:
                return
            found.revision += 1
            found.status, found.error = JobStatus.FAILED, reason
            found.finished_at, found.held_by, found.lease_until = self.clock.now(), None, None
            tx.update_job(found)
            tx.delete_job_rows(found.id)

        await self.store.write(job.tenant, run)

    async def _let_go(self, job: JobRecord) -> None:
        """A graceful stop between batches: the job stays `running`, free for the next worker at once."""

        def run(tx: Tx) -> None:
            found = tx.get_job(job.id)
            if found is None or found.held_by != self.worker_id or found.status is not JobStatus.RUNNING:
                return
            found.revision += 1
            found.held_by, found.lease_until = None, None  # no lease: free for any worker at once
            tx.update_job(found)

        await self.store.write(job.tenant, run)
