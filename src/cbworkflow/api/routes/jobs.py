"""`/api/jobs`: background work too large for one request, and how far it has come (api.md § Campaign work)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from ...models.access import Principal
from ...models.common import Page
from ...models.jobs import Job
from ..deps import READERS, STAFF, PagingDep, ServicesDep, allow, record_id
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/jobs", tags=["jobs"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, doing="see jobs"))]
Staff = Annotated[Principal, Depends(allow(*STAFF, doing="cancel jobs"))]
JobIdPath = Annotated[str, Path(description="the job's id, as a 202 answer's `Location` names it")]


@router.get("", response_model=Page[Job], summary="List jobs, newest first")
async def list_jobs(services: ServicesDep, principal: Reader, page: PagingDep) -> Page[Job]:
    """The tenant's jobs, newest first, finished or not."""
    found = await services.jobs.list(principal.tenant, page)
    return Page[Job](items=found.items, next_cursor=found.next_cursor)


@router.get("/{job_id}", response_model=Job, responses=error_responses(404))
async def get_job(services: ServicesDep, principal: Reader, job_id: JobIdPath) -> Job:
    """One job: its status, progress (`done` of `total`), and `result` (counted so far while it runs)."""
    return await services.jobs.get(principal.tenant, record_id(job_id, "job"))


@router.post("/{job_id}/cancel", response_model=Job, responses=error_responses(404, 409))
async def cancel_job(services: ServicesDep, principal: Staff, job_id: JobIdPath) -> Job:
    """A queued job is cancelled at once; a running one stops before its next batch (`cancel_requested` shows it
    was asked). What it did stays done, and `result` counts it. 409 for a job that has finished."""
    return await services.jobs.cancel(principal, record_id(job_id, "job"))
