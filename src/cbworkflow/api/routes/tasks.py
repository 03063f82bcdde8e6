"""`/api/tasks`: the volunteers' work queue (api.md § Work queue)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from ...models.access import Principal
from ...models.common import Page
from ...models.tasks import Task, TaskQuery
from ..deps import READERS, VOLUNTEER_WORK, PagingDep, ServicesDep, TaskIdPath, allow, record_id, tag_param
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/tasks", tags=["tasks"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, *VOLUNTEER_WORK, doing="see tasks"))]
Doer = Annotated[Principal, Depends(allow(*VOLUNTEER_WORK, doing="claim or give back tasks"))]
Text = Annotated[str | None, Query(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]*$")]


@router.get("", response_model=Page[Task], summary="Tasks waiting for a person, oldest first")
async def list_tasks(
    services: ServicesDep,
    principal: Reader,
    page: PagingDep,
    action: Annotated[Text, Query(description="only tasks of this action (`call`, `door_knock`, ...)")] = None,
    template_id: Annotated[Text, Query(description="only tasks of instances of this template")] = None,
    county: Annotated[
        str | None,
        Query(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$", description="only contacts in this county"),
    ] = None,
    tag: Annotated[Text, Query(description="only tasks whose contact has this tag")] = None,
) -> Page[Task]:
    """A volunteer sees the tasks it holds; other roles see every task, held or not."""
    query = TaskQuery(action=action, template_id=template_id, county=county, tag=tag_param(tag) if tag else None)
    found = await services.tasks.list(principal, query, page)
    return Page[Task](items=found.items, next_cursor=found.next_cursor)


@router.post(
    "/claim",
    response_model=Task,
    summary="Take the oldest open task (held for you for 15 minutes); 204 when there is none",
    responses={204: {"description": "no open task matches"}},
)
async def claim_task(services: ServicesDep, principal: Doer, body: TaskQuery | None = None) -> Task | Response:
    """Hold the oldest open task that matches the filters for 15 minutes; 204 when there is none."""
    task = await services.tasks.claim(principal, body or TaskQuery())
    return Response(status_code=204) if task is None else task


@router.post(
    "/{instance_id}/release", response_model=Task, summary="Give a held task back", responses=error_responses(404, 409)
)
async def release_task(services: ServicesDep, principal: Doer, instance_id: TaskIdPath) -> Task:
    """Give a held task back to the queue before its hold ends. 409 if no one holds it; a volunteer may give back
    only its own."""
    return await services.tasks.release(principal, record_id(instance_id, "task"))
