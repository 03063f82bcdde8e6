"""`/`: volunteers go straight to their task screen; everyone else sees each template with its funnel (how many
voters stand at each node now, and how many finished at each end)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ..models.access import Role
from ..models.stats import WorkflowStats
from ..models.templates import WorkflowTemplate
from ..store.base import PageRequest
from .auth import CallerDep, services_of
from .templating import render

router = APIRouter(include_in_schema=False)
TEMPLATES_SHOWN = 20  # the dashboard's first page of templates; the rest are a link away


@dataclass(frozen=True)
class FunnelRow:
    node_id: str
    name: str
    kind: str  # the node's type; `end` rows count finished instances
    count: int
    share: float  # of the largest count in this funnel, 0..1 (the bar's width)


@dataclass(frozen=True)
class Funnel:
    template: WorkflowTemplate
    rows: list[FunnelRow]
    active: int
    finished: int


def funnel_of(template: WorkflowTemplate, stats: WorkflowStats) -> Funnel:
    """The template's nodes in the order the author wrote them with the unfinished instances at each, then one row
    per end status with the instances that finished there (end nodes sharing a status share a row)."""
    rows: list[tuple[str, str, str, int]] = []
    ends: dict[str, list[str]] = {}
    for node_id, node in template.nodes.items():
        if node.type == "end":
            ends.setdefault(getattr(node, "end_status", "") or "", []).append(node.name or node_id)
            continue
        found = stats.nodes.get(node_id)
        rows.append((node_id, node.name or node_id, node.type, found.current if found else 0))
    for status in dict.fromkeys([*ends, *stats.end_statuses]):
        names = ", ".join(ends.get(status, [])) or status
        rows.append((status, f"{names} ({status})", "end", stats.end_statuses.get(status, 0)))
    top = max((count for *_, count in rows), default=0) or 1
    return Funnel(
        template,
        [FunnelRow(node_id, name, kind, count, count / top) for node_id, name, kind, count in rows],
        active=sum(count for _, _, kind, count in rows if kind != "end"),
        finished=sum(stats.end_statuses.values()),
    )


@router.get("/")
async def dashboard(request: Request, caller: CallerDep) -> Response:
    if caller.principal.role is Role.VOLUNTEER:
        return RedirectResponse("/next", status_code=303)
    services = services_of(request)
    tenant = caller.principal.tenant
    page = await services.templates.list(tenant, None, PageRequest(limit=TEMPLATES_SHOWN))
    funnels = [funnel_of(t, await services.stats.of_template(tenant, t.id)) for t in page.items]
    return render(request, "dashboard.html", caller=caller, funnels=funnels, more=page.next_cursor is not None)
