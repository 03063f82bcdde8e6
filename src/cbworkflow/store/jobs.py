"""Jobs, the same on every backend: which job a worker may claim, and what claiming it saves."""

from __future__ import annotations

from datetime import datetime

from ..models.jobs import JobRecord, JobStatus

FIXED = ("tenant", "id", "kind", "created_at")  # what an update of a job never changes


def claimable(status: str, lease_until: datetime | None, now: datetime) -> bool:
    """An unfinished job that no live lease holds: `queued`, or `running` with its lease run out."""
    if status == JobStatus.QUEUED:
        return True
    return status == JobStatus.RUNNING and (lease_until is None or lease_until < now)


def claimed(job: JobRecord, now: datetime, worker_id: str, lease_until: datetime) -> JobRecord:
    """The job leased to `worker_id` until `lease_until`: running, started at `now` unless it had started."""
    return job.model_copy(
        update={
            "status": JobStatus.RUNNING,
            "held_by": worker_id,
            "lease_until": lease_until,
            "started_at": job.started_at or now,
            "revision": job.revision + 1,
        }
    )
