"""Jobs: work too large for one request (bulk enrolment, large imports), run by the worker in batches.

Each batch is one transaction that does the batch's work and moves the job's cursor and progress with it, so a
job whose worker died resumes from its last committed batch: no row is done twice and none is skipped.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .common import JSONObject, ResponseModel, Timestamp


class JobStatus(StrEnum):
    """Where a job is: `queued` (waiting for a worker), `running`, and the final `succeeded`, `failed` (an error
    stopped it; `error` says which) and `cancelled` (stopped between batches; what it did stays done)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


UNFINISHED_JOBS = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})


class JobKind(StrEnum):
    """What a job does: `bulk_enrol` (`POST /api/instances/bulk`), `contacts_import` (`POST /api/contacts/import`),
    `migrate` (`POST /api/workflows/{id}/migrate`)."""

    BULK_ENROL = "bulk_enrol"
    CONTACTS_IMPORT = "contacts_import"
    MIGRATE = "migrate"


class JobProgress(BaseModel):
    """How far a job has come."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    done: int = 0
    """Items handled so far (enrolled or skipped, for a bulk enrolment)."""
    total: int | None = None
    """Items the job expects to handle, counted when it was created; null when unknown."""


class JobRecord(BaseModel):
    """A job as stored: what the API shows, and the worker's bookkeeping (cursor, lease, cancel request)."""

    id: str
    tenant: str
    kind: JobKind
    status: JobStatus = JobStatus.QUEUED
    params: JSONObject = Field(default_factory=dict)  # the request, as the job's kind reads it
    progress: JobProgress = Field(default_factory=JobProgress)
    result: JSONObject = Field(default_factory=dict)  # counts so far; the route's answer once finished
    error: str | None = None
    cursor: str | None = None  # where the next batch starts (opaque to the store)
    cancel_requested: bool = False
    held_by: str | None = None  # the worker running it, while its lease holds
    lease_until: datetime | None = None
    created_by: str | None = None  # the token that asked for it
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    revision: int = 0  # raised with every update (a stale writer's update is a bug the store refuses)

    def public(self) -> Job:
        return Job.model_validate(self.model_dump())


class Job(ResponseModel):
    """A background job as `GET /api/jobs/{id}` shows it; `result` is what the route would have answered."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The job's id."""
    kind: JobKind
    """What it does."""
    status: JobStatus
    """Where it is."""
    progress: JobProgress
    """How far it has come."""
    result: dict[str, Any]
    """What the route would have answered (for a bulk enrolment `{"enrolled", "skipped"}`), counted so far while
    it runs and final once it has finished."""
    error: str | None = None
    """Why it failed; null unless `failed`."""
    params: dict[str, Any]
    """What was asked: the request that made the job."""
    cancel_requested: bool = False
    """True once a cancel was asked for while it ran: it stops before its next batch, as `cancelled`."""
    created_at: Timestamp
    """When it was asked for (UTC, ISO 8601)."""
    started_at: Timestamp | None = None
    """When a worker first took it up (UTC, ISO 8601); null while queued."""
    finished_at: Timestamp | None = None
    """When it finished (UTC, ISO 8601); null while unfinished."""
