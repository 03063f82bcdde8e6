"""`/api/workflows` (api.md § Workflow templates)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from ...models.access import Principal
from ...models.common import Page
from ...models.jobs import Job
from ...models.migration import MigrateRequest, MigrationResult
from ...models.simulation import SimulateRequest, SimulationResult
from ...models.stats import WorkflowStats
from ...models.templates import (
    CloneRequest,
    TemplateCreate,
    TemplatePatch,
    TemplateVersion,
    ValidationReport,
    WorkflowTemplate,
)
from ..deps import ADMINS, READERS, PagingDep, ServicesDep, TemplateIdPath, allow, record_id, tag_param
from ..errors import api_errors, error_responses

router = APIRouter(prefix="/api/workflows", tags=["workflows"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, doing="read workflow templates"))]
Admin = Annotated[Principal, Depends(allow(*ADMINS, doing="change workflow templates"))]


@router.get("", response_model=Page[WorkflowTemplate], summary="List templates, newest first")
async def list_templates(
    services: ServicesDep,
    principal: Reader,
    page: PagingDep,
    tag: Annotated[str | None, Query(max_length=64, description="only templates with this tag")] = None,
) -> Page[WorkflowTemplate]:
    """The tenant's workflow templates, newest first, optionally only those with one tag."""
    found = await services.templates.list(principal.tenant, tag_param(tag) if tag else None, page)
    return Page[WorkflowTemplate](items=found.items, next_cursor=found.next_cursor)


@router.post("", response_model=WorkflowTemplate, status_code=201, responses=error_responses(409))
async def create_template(services: ServicesDep, principal: Admin, body: TemplateCreate) -> WorkflowTemplate:
    """Saved even with validation errors (a draft); instances cannot be created from it until they are fixed."""
    return await services.templates.create(principal, body)


@router.get("/{template_id}", response_model=WorkflowTemplate, responses=error_responses(404))
async def get_template(services: ServicesDep, principal: Reader, template_id: TemplateIdPath) -> WorkflowTemplate:
    """One template: its graph, version, triggers and tags."""
    return await services.templates.get(principal.tenant, record_id(template_id, "workflow template"))


@router.patch("/{template_id}", response_model=WorkflowTemplate, responses=error_responses(404))
async def patch_template(
    services: ServicesDep, principal: Admin, template_id: TemplateIdPath, body: TemplatePatch
) -> WorkflowTemplate:
    """A change to `nodes` or `start_node` without a higher `version` bumps the minor version."""
    return await services.templates.patch(principal, record_id(template_id, "workflow template"), body)


@router.delete("/{template_id}", status_code=204, responses=error_responses(404))
async def delete_template(services: ServicesDep, principal: Admin, template_id: TemplateIdPath) -> Response:
    """Existing instances keep running on their frozen copy."""
    await services.templates.delete(principal, record_id(template_id, "workflow template"))
    return Response(status_code=204)


@router.get("/{template_id}/versions", response_model=Page[TemplateVersion], responses=error_responses(404))
async def template_versions(
    services: ServicesDep, principal: Reader, template_id: TemplateIdPath, page: PagingDep
) -> Page[TemplateVersion]:
    """Every saved version of the template, newest first: instances run on the version they began with."""
    found = await services.templates.versions(principal.tenant, record_id(template_id, "workflow template"), page)
    return Page[TemplateVersion](items=found.items, next_cursor=found.next_cursor)


@router.post(
    "/{template_id}/clone",
    response_model=WorkflowTemplate,
    status_code=201,
    responses=error_responses(404, 409),
)
async def clone_template(
    services: ServicesDep, principal: Admin, template_id: TemplateIdPath, body: CloneRequest | None = None
) -> WorkflowTemplate:
    """A copy under a new id (generated when the body names none), at version 1.0.0, named `<name> (copy)`
    unless the body names it."""
    return await services.templates.clone(
        principal, record_id(template_id, "workflow template"), body or CloneRequest()
    )


@router.get("/{template_id}/validate", response_model=ValidationReport, responses=error_responses(404))
async def validate_template(services: ServicesDep, principal: Reader, template_id: TemplateIdPath) -> ValidationReport:
    """The template's validation report: `errors` stop enrolment, `warnings` do not."""
    return await services.templates.validate(principal.tenant, record_id(template_id, "workflow template"))


def _utc(value: datetime | None) -> datetime | None:
    """A time without a zone is taken as UTC, as every time the API writes is."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


@router.post("/{template_id}/simulate", response_model=SimulationResult, responses=error_responses(404))
async def simulate_template(
    services: ServicesDep, principal: Reader, template_id: TemplateIdPath, body: SimulateRequest
) -> SimulationResult:
    """Every path of the template on a simulated clock, with no side effect at all: nothing is stored, nothing is
    sent, no model is asked. Waits, contact hours (in the given contact's local time), opt-outs, retries and
    heuristic rules apply as for real; where a person, a model, a webhook or an event would choose, each outcome
    is taken in turn (or the one `choose` fixes); a split takes each branch. 422 when the template has errors."""
    return await services.simulation.of_stored(principal, record_id(template_id, "workflow template"), body)


@router.post(
    "/{template_id}/migrate",
    response_model=MigrationResult,
    responses={
        202: {"model": Job, "description": "Too many instances for one request: a job does it (see `Location`)"},
        **error_responses(404),
    },
)
async def migrate_template(
    services: ServicesDep, principal: Admin, template_id: TemplateIdPath, body: MigrateRequest
) -> MigrationResult | JSONResponse:
    """Move the unfinished instances frozen at `from_version` onto the template's current version, each at its
    node as `node_map` says (else the node of the same id). With `dry_run` (the default) nothing changes and the
    answer says what would move. Each move is atomic and an `instance_migrated` event on the instance's timeline;
    instances at a node the current version lacks and the map does not name stay, counted in `unmapped`. More than
    `CBW_BULK_INLINE_LIMIT` instances (5,000): 202 with a job, whose `result` is this answer."""
    done = await services.migration.migrate(principal, record_id(template_id, "workflow template"), body)
    if isinstance(done, MigrationResult):
        return done
    return JSONResponse(done.model_dump(mode="json"), status_code=202, headers={"Location": f"/api/jobs/{done.id}"})


@router.get("/{template_id}/stats", response_model=WorkflowStats, responses=error_responses(404))
async def template_stats(
    services: ServicesDep,
    principal: Reader,
    template_id: TemplateIdPath,
    since: Annotated[
        datetime | None,
        Query(description="count only what happened from this time on (ISO 8601; rounded down to the hour)"),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="count only what happened before this time (ISO 8601; rounded up to the hour)"),
    ] = None,
) -> WorkflowStats:
    """Campaign numbers: per node, the instances there now, times entered, each outcome's count and the median
    time spent; per status; per end status. `since`/`until` narrow what happened (not where instances are now)."""
    tid = record_id(template_id, "workflow template")
    return await services.stats.of_template(principal.tenant, tid, _utc(since), _utc(until))


DIAGRAM_TYPES = {"svg": "image/svg+xml", "mermaid": "text/vnd.mermaid; charset=utf-8"}


@router.get(
    "/{template_id}/diagram",
    response_class=Response,
    responses={
        200: {
            "description": "the drawing: an SVG picture, or Mermaid flowchart text",
            "content": {
                "image/svg+xml": {"schema": {"type": "string"}},
                "text/vnd.mermaid": {"schema": {"type": "string"}},
            },
        },
        **error_responses(404),
    },
)
async def template_diagram(
    services: ServicesDep,
    principal: Reader,
    template_id: TemplateIdPath,
    format: Annotated[Literal["svg", "mermaid"], Query(description="`svg` (a picture) or `mermaid` (text)")] = "svg",
    stats: Annotated[bool, Query(description="label each node with how many instances are there now")] = False,
    instance_id: Annotated[
        str | None,
        Query(max_length=64, description="highlight this instance's path and current node, on the graph it runs on"),
    ] = None,
) -> Response:
    """A picture of the template: nodes by type (shape and colour), outcomes on the edges, end statuses; with
    `stats=true` the number of instances at each node, with `instance_id` one instance's way through it."""
    tid = record_id(template_id, "workflow template")
    iid = record_id(instance_id, "instance") if instance_id is not None else None
    text = await services.diagrams.draw(principal, tid, format, stats=stats, instance_id=iid)
    return Response(text, media_type=DIAGRAM_TYPES[format])
