"""`/api/instances` (api.md § Instances)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from ...models.access import Principal
from ...models.common import Page
from ...models.events import Event
from ...models.instances import (
    ActorBody,
    BulkEnrol,
    BulkResult,
    InstanceCreate,
    InstanceStatus,
    MoveRequest,
    NoteCreate,
    RetryRequest,
    StateUpdate,
    TransitionRequest,
    WorkflowInstance,
)
from ...models.jobs import Job
from ...store.base import InstanceFilter
from ..deps import (
    ADMINS,
    READERS,
    STAFF,
    VOLUNTEER_WORK,
    InstanceIdPath,
    PagingDep,
    PrincipalDep,
    ServicesDep,
    TagPath,
    allow,
    record_id,
    tag_filters,
    tag_param,
)
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/instances", tags=["instances"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, doing="list instances"))]
Staff = Annotated[Principal, Depends(allow(*STAFF, doing="change instances"))]
Worker = Annotated[Principal, Depends(allow(*VOLUNTEER_WORK, doing="record outcomes or notes"))]
Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="move instances to another node"))]
Text = Annotated[str | None, Query(max_length=64, pattern=r"^[^\x00-\x1f]*$")]
CHANGE = error_responses(404, 409)


@router.get("", response_model=Page[WorkflowInstance], summary="List instances, newest first (without timelines)")
async def list_instances(
    services: ServicesDep,
    principal: Reader,
    page: PagingDep,
    contact_id: Annotated[Text, Query(description="only this contact's instances")] = None,
    template_id: Annotated[Text, Query(description="only instances of this template (any version)")] = None,
    status: Annotated[InstanceStatus | None, Query(description="only instances with this status")] = None,
    current_node: Annotated[Text, Query(description="only instances at this node now")] = None,
    tag: Annotated[list[str] | None, Query(description="repeatable: every tag must match")] = None,
) -> Page[WorkflowInstance]:
    """The tenant's instances, newest first, filtered by the fields given (all must match); no timelines."""
    where = InstanceFilter(
        contact_id=contact_id,
        template_id=template_id,
        status=status.value if status else None,
        current_node=current_node,
        tags=tag_filters(tag),
    )
    found = await services.instances.list(principal.tenant, where, page)
    return Page[WorkflowInstance](items=found.items, next_cursor=found.next_cursor)


@router.post("", response_model=WorkflowInstance, status_code=201, responses=error_responses(404))
async def create_instance(services: ServicesDep, principal: Staff, body: InstanceCreate) -> WorkflowInstance:
    """Enrol a contact: 404 for an unknown contact or template, 422 for a template with validation errors."""
    return await services.instances.create(principal, body)


@router.post(
    "/bulk",
    response_model=BulkResult,
    responses={
        202: {"model": Job, "description": "Too many contacts for one request: a job does it (see `Location`)"},
        **error_responses(404),
    },
    summary="Enrol every matching contact not yet in the template",
)
async def bulk_enrol(services: ServicesDep, principal: Staff, body: BulkEnrol) -> BulkResult | JSONResponse:
    """Each matching contact without an unfinished instance of the template gets one (with `start`, started);
    the others are counted as `skipped`, so sending it again enrols no one twice. Up to `CBW_BULK_INLINE_LIMIT`
    contacts (5,000) are enrolled before the answer; more answer 202 with the job, whose `result` is this answer."""
    done = await services.bulk.enrol(principal, body)
    if isinstance(done, BulkResult):
        return done
    location = f"/api/jobs/{done.id}"
    return JSONResponse(done.model_dump(mode="json"), status_code=202, headers={"Location": location})


@router.get("/{instance_id}", response_model=WorkflowInstance, responses=error_responses(404))
async def get_instance(services: ServicesDep, principal: PrincipalDep, instance_id: InstanceIdPath) -> WorkflowInstance:
    """One instance with its timeline (the first 500 events; page the rest at `/timeline`)."""
    return await services.instances.get(principal, record_id(instance_id, "instance"))


@router.delete("/{instance_id}", status_code=204, responses=error_responses(404))
async def delete_instance(services: ServicesDep, principal: Staff, instance_id: InstanceIdPath) -> Response:
    """Delete an instance; its contact stays."""
    await services.instances.delete(principal, record_id(instance_id, "instance"))
    return Response(status_code=204)


@router.post("/{instance_id}/start", response_model=WorkflowInstance, responses=CHANGE)
async def start_instance(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: ActorBody | None = None
) -> WorkflowInstance:
    """Start a `pending` instance at its template's start node. 409 if it has started already."""
    return await services.instances.start(principal, record_id(instance_id, "instance"), body.actor if body else None)


@router.post("/{instance_id}/pause", response_model=WorkflowInstance, responses=CHANGE)
async def pause_instance(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: ActorBody | None = None
) -> WorkflowInstance:
    """Pause an unfinished instance: no step runs and no timer fires until it is resumed."""
    return await services.instances.pause(principal, record_id(instance_id, "instance"), body.actor if body else None)


@router.post("/{instance_id}/resume", response_model=WorkflowInstance, responses=CHANGE)
async def resume_instance(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: ActorBody | None = None
) -> WorkflowInstance:
    """Resume a paused instance where it stopped, with the wait or task it had. 409 if it is not paused."""
    return await services.instances.resume(principal, record_id(instance_id, "instance"), body.actor if body else None)


@router.post("/{instance_id}/cancel", response_model=WorkflowInstance, responses=CHANGE)
async def cancel_instance(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: ActorBody | None = None
) -> WorkflowInstance:
    """Cancel an unfinished instance for good; `reason` goes into the timeline. 409 if finished."""
    return await services.instances.cancel(
        principal, record_id(instance_id, "instance"), body.actor if body else None, body.reason if body else None
    )


@router.post("/{instance_id}/transition", response_model=WorkflowInstance, responses=CHANGE)
async def transition_instance(
    services: ServicesDep, principal: Worker, instance_id: InstanceIdPath, body: TransitionRequest
) -> WorkflowInstance:
    """Record the outcome of the current node. 409 if the instance is not at `expected_node`, paused or finished;
    422 listing the allowed outcomes if `outcome` is not one of the node's."""
    return await services.instances.transition(principal, record_id(instance_id, "instance"), body)


@router.post("/{instance_id}/retry", response_model=WorkflowInstance, responses=CHANGE)
async def retry_instance(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: RetryRequest | None = None
) -> WorkflowInstance:
    """A `failed` instance enters again the node where it failed, after `state_updates` are merged (as `/state`
    does): `active` or `waiting` as entering that node gives (or `failed` again if the cause remains);
    `instance_retried` in the timeline. 409 for an instance that is not failed."""
    return await services.instances.retry(principal, record_id(instance_id, "instance"), body or RetryRequest())


@router.post("/{instance_id}/move", response_model=WorkflowInstance, responses=CHANGE)
async def move_instance(
    services: ServicesDep, principal: Admin, instance_id: InstanceIdPath, body: MoveRequest
) -> WorkflowInstance:
    """Admins: put an unfinished or failed instance at any node of its frozen graph, entering it as usual
    (`instance_moved` with `moved_from` and `reason`). 422 for a node not in the graph; 409 for a completed or
    cancelled instance. A paused instance stays paused at its new node."""
    return await services.instances.move(principal, record_id(instance_id, "instance"), body)


@router.post("/{instance_id}/state", response_model=WorkflowInstance, responses=CHANGE)
async def update_state(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, body: StateUpdate
) -> WorkflowInstance:
    """Merge `updates` into the state as a JSON Merge Patch (RFC 7386): `null` deletes a key."""
    return await services.instances.update_state(
        principal, record_id(instance_id, "instance"), body.updates, body.actor
    )


@router.post("/{instance_id}/notes", response_model=WorkflowInstance, responses=CHANGE)
async def add_note(
    services: ServicesDep, principal: Worker, instance_id: InstanceIdPath, body: NoteCreate
) -> WorkflowInstance:
    """Add a note to the timeline (a volunteer's words at the door, say); the instance does not move."""
    return await services.instances.add_note(principal, record_id(instance_id, "instance"), body.text, body.actor)


@router.post("/{instance_id}/tags/{tag}", response_model=WorkflowInstance, responses=CHANGE)
async def add_instance_tag(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, tag: TagPath
) -> WorkflowInstance:
    """Add one tag to the instance (nothing changes if it has it already)."""
    return await services.instances.change_tag(principal, record_id(instance_id, "instance"), tag_param(tag), True)


@router.delete("/{instance_id}/tags/{tag}", response_model=WorkflowInstance, responses=CHANGE)
async def remove_instance_tag(
    services: ServicesDep, principal: Staff, instance_id: InstanceIdPath, tag: TagPath
) -> WorkflowInstance:
    """Remove one tag from the instance (nothing changes if it does not have it)."""
    return await services.instances.change_tag(principal, record_id(instance_id, "instance"), tag_param(tag), False)


@router.get("/{instance_id}/timeline", response_model=Page[Event], responses=error_responses(404))
async def instance_timeline(
    services: ServicesDep, principal: PrincipalDep, instance_id: InstanceIdPath, page: PagingDep
) -> Page[Event]:
    """The events, oldest first, paged."""
    found = await services.instances.timeline(principal, record_id(instance_id, "instance"), page)
    return Page[Event](items=found.items, next_cursor=found.next_cursor)
