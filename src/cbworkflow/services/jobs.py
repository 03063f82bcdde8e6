"""Jobs as the API and the CLI see them: queue one, list them, read one, cancel one.

The worker runs them (`runtime/jobs.py`); the work of each kind is its own service's (`services/bulk.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..clock import Clock
from ..errors import Conflict, NotFound
from ..ids import new_id
from ..models.access import Principal
from ..models.jobs import UNFINISHED_JOBS, Job, JobKind, JobProgress, JobRecord, JobStatus
from ..store.base import Page, PageRequest, Store, Tx


class JobService:
    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.notify: Callable[[], None] = lambda: None  # wakes this process's worker when a job was queued

    async def queue(
        self,
        principal: Principal,
        kind: JobKind,
        params: dict[str, Any],
        total: int | None,
        *,
        stage: Callable[[Tx, str], None] | None = None,
    ) -> Job:
        """Queue a job. `stage(tx, job_id)`, when given, writes what the job will read (an import's rows) in the
        job's own transaction, before the job is saved with `params` as it leaves them."""
        job_id = new_id()
        job = JobRecord(
            id=job_id,
            tenant=principal.tenant,
            kind=kind,
            params=params,
            progress=JobProgress(done=0, total=total),
            created_by=principal.token_id,
            created_at=self.clock.now(),
        )

        def run(tx: Tx) -> JobRecord:
            if stage is None:
                tx.insert_job(job)
                return job
            stage(tx, job_id)
            staged = job.model_copy(update={"params": dict(params)})
            tx.insert_job(staged)
            return staged

        queued = await self.store.write(principal.tenant, run)
        self.notify()
        return queued.public()

    async def get(self, tenant: str, job_id: str) -> Job:
        found = await self.store.read(tenant, lambda tx: tx.get_job(job_id))
        if found is None:
            raise NotFound(f"no job with id {job_id!r}")
        return found.public()

    async def list(self, tenant: str, page: PageRequest) -> Page[Job]:
        found = await self.store.read(tenant, lambda tx: tx.list_jobs(page))
        return Page([job.public() for job in found.items], found.next_cursor)

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one stops before its next batch (the worker sees the
        request in that batch's transaction). What it did stays done, and its `result` says how much."""
        now = self.clock.now()

        def run(tx: Tx) -> JobRecord:
            job = tx.get_job(job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            if job.status not in UNFINISHED_JOBS:
                raise Conflict(f"the job has already finished ({job.status.value}); there is nothing to cancel")
            job.revision += 1
            if job.status is JobStatus.QUEUED:
                job.status, job.finished_at = JobStatus.CANCELLED, now
                tx.delete_job_rows(job_id)  # what it had staged (an import's rows) will never be read
            else:
                job.cancel_requested = True
            if not tx.update_job(job):
                raise Conflict("the job changed while it was being cancelled; try again")
            return job

        return (await self.store.write(principal.tenant, run)).public()
