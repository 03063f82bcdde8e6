"""/instances and /instances/{id}: the runs of the campaign's workflows, for organisers (web.md).

The list filters by template, node, status and tags, a page of 50 at a time. An instance's page shows where it
stands, its drawing with the way it went, its state and its timeline, which updates live: /static/timeline.js
follows `/instances/{id}/events` (Server-Sent Events from the outbox, resumed after the last event on the page) and
appends each new event. Without JavaScript the page is complete when it loads. The lifecycle buttons a role allows
post plain forms; a change the instance no longer allows (someone else moved it) is shown next to the buttons.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError
from sse_starlette import EventSourceResponse
from starlette.responses import RedirectResponse, Response

from ..api.deps import record_id
from ..errors import CbwError, NotFound
from ..ids import SLUG_RE
from ..models.access import Role
from ..models.events import Event
from ..models.instances import TERMINAL, MoveRequest, NoteCreate, RetryRequest, WorkflowInstance
from ..models.templates import WorkflowTemplate
from ..services.instances import InstancePage
from ..services.stream import StreamRequest
from ..store.base import InstanceFilter, PageRequest
from .auth import SESSION_COOKIE, WebCaller, checked_form, role_in, services_of
from .templating import humanize, render, when

router = APIRouter(include_in_schema=False)
Reader = Annotated[WebCaller, Depends(role_in(Role.ADMIN, Role.STAFF, Role.VIEWER, doing="see instances"))]
Staff = Annotated[WebCaller, Depends(role_in(Role.ADMIN, Role.STAFF, doing="change instances"))]
Admin = Annotated[WebCaller, Depends(role_in(Role.ADMIN, doing="move instances to another node"))]

PAGE_SIZE = 50
TEMPLATE_CHOICES = 50  # the newest templates offered in the filter; past that the field takes a typed id
MAX_TAGS = 20
TEXT_FILTER = re.compile(r"^[^\x00-\x1f\x7f]{1,64}$")
UNFINISHED = ("pending", "active", "waiting", "paused")
SVG_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
}

# What each lifecycle button does, and in which statuses it applies (the page hides the others; timeline.js shows
# and hides them as the status changes live).
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "start": ("Start", ("pending",)),
    "pause": ("Pause", ("active", "waiting")),
    "resume": ("Resume", ("paused",)),
    "retry": ("Retry", ("failed",)),
    "cancel": ("Cancel", UNFINISHED),
}
MOVABLE = (*UNFINISHED, "failed")
PAST = {"start": "started", "pause": "paused", "resume": "resumed", "retry": "retried", "cancel": "cancelled"}
DONE = {
    "started": "Started.",
    "paused": "Paused: nothing runs until it is resumed.",
    "resumed": "Resumed where it was.",
    "retried": "Retried: it entered again the step where it failed.",
    "cancelled": "Cancelled.",
    "moved": "Moved.",
    "noted": "Note added.",
}
STATUS_WORDS = {
    "pending": "Not started",
    "active": "Active",
    "waiting": "Waiting",
    "paused": "Paused",
    "completed": "Completed",
    "failed": "Failed",
    "cancelled": "Cancelled",
}


# ---------------------------------------------------------------------------------------------------- shown
def status_word(status: str) -> str:
    return STATUS_WORDS.get(status, humanize(status))


def node_name(instance: WorkflowInstance, node_id: str | None) -> str:
    if not node_id:
        return ""
    node = instance.nodes.get(node_id)
    return (node.name if node is not None and node.name else None) or node_id


def where_now(instance: WorkflowInstance) -> str:
    return node_name(instance, instance.current_node) or "Not started yet"


@dataclass(frozen=True)
class EventView:
    """One timeline entry as the page (and the live stream) shows it."""

    sequence: int | None
    type: str
    iso: str
    when: str
    message: str
    node: str  # the step's name, unless the message names it already
    actor: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "type": self.type,
            "iso": self.iso,
            "when": self.when,
            "message": self.message,
            "node": self.node,
            "actor": self.actor,
        }


def event_view(event: Event, instance: WorkflowInstance, actors: Mapping[str, str]) -> EventView:
    on_behalf = event.data.get("on_behalf_of")
    actor = actors.get(event.actor, event.actor)
    if isinstance(on_behalf, str) and on_behalf:
        actor = f"{actor}, for {on_behalf}"
    message = event.message or humanize(event.type.value)
    node = node_name(instance, event.node_id)
    return EventView(
        sequence=event.sequence,
        type=event.type.value,
        iso=event.timestamp.isoformat(),
        when=when(event.timestamp, seconds=True),
        message=message,
        node="" if node in message else node,
        actor=actor,
    )


def instance_json(instance: WorkflowInstance) -> dict[str, Any]:
    """Where the instance stands, for the live page."""
    return {
        "status": instance.status.value,
        "status_word": status_word(instance.status.value),
        "current_node": instance.current_node,
        "where": where_now(instance),
    }


# ---------------------------------------------------------------------------------------------------- the list
@dataclass(frozen=True)
class Row:
    instance: WorkflowInstance
    contact: str | None
    template: str
    status: str
    where: str
    updated: str


def _filters(params: Mapping[str, str], tags: list[str]) -> tuple[dict[str, str], InstanceFilter, list[str]]:
    """The list's filters as typed (to keep in the form), the InstanceFilter, and what is wrong with them."""
    raw = {
        key: str(params.get(key) or "").strip()[:200]
        for key in ("template_id", "current_node", "status", "contact_id")
        if str(params.get(key) or "").strip()
    }
    tag_text = " ".join(t.strip() for t in tags if t.strip())[:1000]
    if tag_text:
        raw["tag"] = tag_text
    problems: list[str] = []
    labels = {"template_id": "Template", "current_node": "Step", "contact_id": "Contact"}
    for key, label in labels.items():
        if key in raw and not TEXT_FILTER.fullmatch(raw[key]):
            problems.append(f"{label}: at most 64 characters, on one line.")
    if "status" in raw and raw["status"] not in STATUS_WORDS:
        problems.append(f"Status: “{raw['status']}” is not a status; pick one from the list.")
    wanted = [t for t in re.split(r"[\s,]+", tag_text) if t]
    bad = [t for t in wanted if not SLUG_RE.fullmatch(t)]
    if bad:
        problems.append(
            f"Tags: “{bad[0][:64]}” is not a tag (lowercase letters, digits, - and _, at most 64 characters)."
        )
    if len(wanted) > MAX_TAGS:
        problems.append(f"Tags: at most {MAX_TAGS} at once.")
    where = InstanceFilter(
        contact_id=raw.get("contact_id"),
        template_id=raw.get("template_id"),
        status=raw.get("status"),
        current_node=raw.get("current_node"),
        tags=tuple(dict.fromkeys(wanted)),
    )
    return raw, where, problems


@router.get("/instances")
async def instance_list(request: Request, caller: Reader) -> Response:
    services = services_of(request)
    tenant = caller.principal.tenant
    params = request.query_params
    raw, where, problems = _filters(params, params.getlist("tag"))
    cursor = params.get("cursor") or None
    templates = await services.templates.list(tenant, None, PageRequest(limit=TEMPLATE_CHOICES))
    names = {t.id: t.name or t.id for t in templates.items}
    rows: list[Row] = []
    next_url = None
    bad_filters = bool(problems)
    if not problems:
        try:
            found = await services.instances.list(tenant, where, PageRequest(limit=PAGE_SIZE, cursor=cursor))
        except CbwError as exc:
            if exc.status_code != 422:
                raise
            problems.append("That page link is no longer valid; showing the first page." if cursor else exc.detail)
            found = await services.instances.list(tenant, where, PageRequest(limit=PAGE_SIZE))
        contacts = await services.instances.contact_names(tenant, [i.contact_id for i in found.items])
        rows = [
            Row(
                i,
                contacts.get(i.contact_id),
                names.get(i.template_id, i.template_id),
                status_word(i.status.value),
                where_now(i),
                when(i.updated_at),
            )
            for i in found.items
        ]
        if found.next_cursor:
            next_url = "/instances?" + urlencode({**raw, "cursor": found.next_cursor})
    chosen = next((t for t in templates.items if t.id == where.template_id), None)
    return render(
        request,
        "instances.html",
        caller=caller,
        rows=rows,
        filters=raw,
        problems=problems,
        templates=templates.items,
        more_templates=templates.next_cursor is not None,
        nodes=_node_choices(chosen),
        statuses=STATUS_WORDS,
        next_url=next_url,
        first_url=("/instances?" + urlencode(raw)) if cursor else None,
        status_code=422 if bad_filters else 200,
    )


def _node_choices(template: WorkflowTemplate | None) -> list[tuple[str, str]]:
    if template is None:
        return []
    return [(node_id, node.name or node_id) for node_id, node in template.nodes.items()]


# ---------------------------------------------------------------------------------------------------- one instance
def _checked(instance_id: str) -> str:
    return record_id(instance_id, "instance")


async def _instance_page(
    request: Request,
    caller: WebCaller,
    instance_id: str,
    *,
    cursor: str | None = None,
    said: str | None = None,
    errors: dict[str, str] | None = None,
    typed: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    services = services_of(request)
    errors = dict(errors or {})
    try:
        shown = await services.instances.page(caller.principal, instance_id, PageRequest(PAGE_SIZE, cursor))
    except CbwError as exc:
        if exc.status_code != 422 or cursor is None:
            raise
        errors["timeline"] = "That page link is no longer valid; showing the first page of the timeline."
        shown = await services.instances.page(caller.principal, instance_id, PageRequest(PAGE_SIZE))
        cursor = None
    return _render_instance(request, caller, shown, cursor, said, errors, typed or {}, status_code)


def _render_instance(
    request: Request,
    caller: WebCaller,
    shown: InstancePage,
    cursor: str | None,
    said: str | None,
    errors: dict[str, str],
    typed: dict[str, str],
    status_code: int,
) -> Response:
    instance = shown.instance
    events = [event_view(e, instance, shown.actors) for e in shown.timeline.items]
    role = caller.principal.role
    staff = role in (Role.ADMIN, Role.SUPERADMIN, Role.STAFF)
    admin = role in (Role.ADMIN, Role.SUPERADMIN)
    last_page = shown.timeline.next_cursor is None
    sequences = [e.sequence for e in shown.timeline.items if e.sequence is not None]
    return render(
        request,
        "instances_detail.html",
        caller=caller,
        instance=instance,
        contact=shown.contact,
        workflow=shown.template,
        contact_name=shown.contact.name if shown.contact else f"Contact {instance.contact_id}",
        workflow_name=(shown.template.name or shown.template.id) if shown.template else instance.template_id,
        held_by=shown.actors.get(instance.held_by, "someone") if instance.held_by else "",
        status=instance.status.value,
        status_text=status_word(instance.status.value),
        where=where_now(instance),
        state=json.dumps(instance.state, indent=2, ensure_ascii=False, sort_keys=True),
        events=events,
        times=[
            ("Created", when(instance.created_at)),
            ("Started", when(instance.started_at)),
            ("Updated", when(instance.updated_at)),
            ("Finished", when(instance.completed_at)),
            ("Next automatic step", when(instance.wake_at) if instance.status not in TERMINAL else ""),
        ],
        waiting_for=humanize(instance.waiting_for.replace(":", " ")) if instance.waiting_for else "",
        next_url=(
            f"/instances/{instance.id}?{urlencode({'cursor': shown.timeline.next_cursor})}" if not last_page else None
        ),
        first_url=f"/instances/{instance.id}" if cursor else None,
        live=last_page,
        after=str(sequences[-1]) if sequences else "",
        actions=[(name, label, when_) for name, (label, when_) in ACTIONS.items()] if staff else [],
        can_note=staff,
        can_move=admin,
        movable=MOVABLE,
        nodes=[(node_id, node.name or node_id) for node_id, node in instance.nodes.items()],
        said=said,
        errors=errors,
        typed=typed,
        status_code=status_code,
    )


@router.get("/instances/{instance_id}")
async def instance_detail(request: Request, caller: Reader, instance_id: str) -> Response:
    said = DONE.get(request.query_params.get("said", ""))
    cursor = request.query_params.get("cursor") or None
    return await _instance_page(request, caller, _checked(instance_id), cursor=cursor, said=said)


@router.get("/instances/{instance_id}/diagram.svg")
async def instance_diagram(request: Request, caller: Reader, instance_id: str) -> Response:
    """The drawing of the graph the instance runs on, its way through it and where it is now."""
    services = services_of(request)
    instance = await services.instances.summary(caller.principal, _checked(instance_id))
    svg = await services.diagrams.draw(caller.principal, instance.template_id, "svg", instance_id=instance.id)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


@router.get("/instances/{instance_id}/events")
async def instance_events(
    request: Request,
    caller: Reader,
    instance_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """The instance's new events as Server-Sent Events, each with where the instance stands after it: resumed
    after `Last-Event-ID` (a reconnecting browser sends it) or `?after=` (the last event the page showed)."""
    services = services_of(request)
    principal = caller.principal
    iid = _checked(instance_id)
    after = last_event_id or request.query_params.get("after")
    where, start = await services.stream.open(principal, StreamRequest(instance_id=iid, last_event_id=after))

    cookie = request.cookies.get(SESSION_COOKIE)

    async def messages() -> AsyncIterator[dict[str, str]]:
        actors: dict[str, str] = {}
        async for event in services.stream.follow(principal.tenant, where, start):
            if await services.sessions.caller(cookie) is None:
                return  # signed out, removed or expired since the stream opened: nothing more for this browser
            try:
                instance = await services.instances.summary(principal, iid)
            except NotFound:
                return  # deleted: nothing more will come
            if event.actor not in actors:
                actors |= await services.instances.actor_names(principal.tenant, [event.actor])
            body = {"event": event_view(event, instance, actors).as_json(), "instance": instance_json(instance)}
            yield {"id": str(event.sequence), "event": "timeline", "data": json.dumps(body)}

    settings = services.settings
    return EventSourceResponse(
        messages(),
        ping=settings.stream_heartbeat_s,
        send_timeout=settings.stream_send_timeout_s,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


# ---------------------------------------------------------------------------------------------------- changes
def _done(instance_id: str, said: str) -> Response:
    # `#main`: the form's own fragment (which shows an error next to it) is not carried over to the page that
    # says it was done, at its top
    return RedirectResponse(f"/instances/{instance_id}?said={said}#main", status_code=303)


async def _refused(
    request: Request, caller: WebCaller, instance_id: str, exc: CbwError, where: str, typed: dict[str, str]
) -> Response:
    """A change the instance does not allow now (409) or a value it does not take (422), shown on its page."""
    if exc.status_code not in (409, 422):
        raise exc
    message = exc.detail[:1].upper() + exc.detail[1:]
    if exc.status_code == 409:
        message = f"Not done: {exc.detail}. The page now shows where the instance stands."
    return await _instance_page(
        request, caller, instance_id, errors={where: message}, typed=typed, status_code=exc.status_code
    )


async def _lifecycle(request: Request, caller: WebCaller, instance_id: str, action: str) -> Response:
    """Start, pause, resume, retry or cancel (with an optional reason)."""
    iid = _checked(instance_id)
    form = await checked_form(request, caller)
    instances = services_of(request).instances
    principal = caller.principal
    reason = form.get("reason", "").strip()[:1000] or None
    try:
        if action == "start":
            await instances.start(principal, iid)
        elif action == "pause":
            await instances.pause(principal, iid)
        elif action == "resume":
            await instances.resume(principal, iid)
        elif action == "retry":
            await instances.retry(principal, iid, RetryRequest())
        else:
            await instances.cancel(principal, iid, None, reason)
    except CbwError as exc:
        return await _refused(request, caller, iid, exc, "actions", {"reason": reason or ""})
    return _done(iid, PAST[action])


@router.post("/instances/{instance_id}/start")
async def start(request: Request, caller: Staff, instance_id: str) -> Response:
    return await _lifecycle(request, caller, instance_id, "start")


@router.post("/instances/{instance_id}/pause")
async def pause(request: Request, caller: Staff, instance_id: str) -> Response:
    return await _lifecycle(request, caller, instance_id, "pause")


@router.post("/instances/{instance_id}/resume")
async def resume(request: Request, caller: Staff, instance_id: str) -> Response:
    return await _lifecycle(request, caller, instance_id, "resume")


@router.post("/instances/{instance_id}/retry")
async def retry(request: Request, caller: Staff, instance_id: str) -> Response:
    return await _lifecycle(request, caller, instance_id, "retry")


@router.post("/instances/{instance_id}/cancel")
async def cancel(request: Request, caller: Staff, instance_id: str) -> Response:
    return await _lifecycle(request, caller, instance_id, "cancel")


def _invalid(exc: ValidationError, labels: dict[str, str]) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    label = labels.get(field, humanize(field))
    if first["type"] in ("missing", "string_too_short"):
        return f"{label}: this is needed."
    if first["type"] == "string_too_long":
        return f"{label}: too long (at most {first.get('ctx', {}).get('max_length', '')} characters)."
    return f"{label}: {first['msg']}."


@router.post("/instances/{instance_id}/notes")
async def add_note(request: Request, caller: Staff, instance_id: str) -> Response:
    iid = _checked(instance_id)
    form = await checked_form(request, caller)
    text = form.get("text", "")
    typed = {"note": text}
    try:
        body = NoteCreate.model_validate({"text": text.strip()})
    except ValidationError as exc:
        message = _invalid(exc, {"text": "Note"})
        return await _instance_page(request, caller, iid, errors={"note": message}, typed=typed, status_code=422)
    try:
        await services_of(request).instances.add_note(caller.principal, iid, body.text)
    except CbwError as exc:
        return await _refused(request, caller, iid, exc, "note", typed)
    return _done(iid, "noted")


@router.post("/instances/{instance_id}/move")
async def move(request: Request, caller: Admin, instance_id: str) -> Response:
    iid = _checked(instance_id)
    form = await checked_form(request, caller)
    typed = {"node": form.get("node", ""), "move_reason": form.get("reason", "")}
    try:
        body = MoveRequest.model_validate({"node": form.get("node", ""), "reason": form.get("reason", "")})
    except ValidationError as exc:
        message = _invalid(exc, {"node": "Step", "reason": "Reason"})
        return await _instance_page(request, caller, iid, errors={"move": message}, typed=typed, status_code=422)
    try:
        await services_of(request).instances.move(caller.principal, iid, body)
    except CbwError as exc:
        return await _refused(request, caller, iid, exc, "move", typed)
    return _done(iid, "moved")
