"""/next, the volunteer's phone screen: claim the next task, see who to reach and how, record the outcome with a
note (which claims the next task at once), or skip it.

The claim filters (`action`, `template_id`, `county`) live in the page's query string and ride along in every form,
so a volunteer working the phone bank stays on phone calls. A reload shows the task the person holds rather than
claiming another; a task left open on a closed phone returns to the queue when its lease ends.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ..errors import CbwError
from ..ids import ID_RE
from ..models.access import Role
from ..models.instances import TransitionRequest
from ..models.tasks import Task, TaskQuery
from .auth import WebCaller, checked_form, role_in, services_of
from .templating import render

router = APIRouter(include_in_schema=False)
Worker = Annotated[WebCaller, Depends(role_in(Role.ADMIN, Role.STAFF, Role.VOLUNTEER, doing="work the task queue"))]
InstancePath = Annotated[str, Path(max_length=64)]
FILTERS = ("action", "template_id", "county")
# Metadata keys shown as the contact's address, in this order, when the contact has them.
ADDRESS_KEYS = (
    "address",
    "address1",
    "address_line1",
    "address2",
    "address_line2",
    "street",
    "apartment",
    "unit",
    "city",
    "town",
    "state",
    "zip",
    "zip_code",
    "postcode",
    "postal_code",
    "precinct",
)


def _filters(source: Any) -> dict[str, str]:
    """The claim filters a request carries (query string or form), blank ones left out."""
    return {key: str(source.get(key)).strip()[:200] for key in FILTERS if str(source.get(key) or "").strip()}


def _query(filters: dict[str, str]) -> TaskQuery | None:
    try:
        return TaskQuery.model_validate(filters)
    except ValidationError:
        return None


def _next_url(filters: dict[str, str], **extra: str) -> str:
    query = urlencode({**filters, **extra})
    return f"/next?{query}" if query else "/next"


def address_of(contact: dict[str, Any] | None) -> list[str]:
    metadata = (contact or {}).get("metadata") or {}
    return [str(metadata[key]) for key in ADDRESS_KEYS if isinstance(metadata.get(key), str | int) and metadata[key]]


def script_of(task: Task) -> tuple[str | None, list[tuple[str, str]]]:
    """The node's script (its `script` or `message` text) and its other settings, as a volunteer reads them."""
    config = task.node.get("action_config") or {}
    script = None
    for key in ("script", "message", "text", "instructions"):
        if isinstance(config.get(key), str):
            script = config[key]
            break
    details = [(key, str(value)) for key, value in config.items() if not isinstance(value, dict | list)]
    details = [(key, value) for key, value in details if value != script]
    return script, details


def _page(
    request: Request,
    caller: WebCaller,
    filters: dict[str, str],
    task: Task | None,
    *,
    empty: bool = False,
    said: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    script, details = script_of(task) if task else (None, [])
    contact = task.contact if task else None
    return render(
        request,
        "next.html",
        caller=caller,
        task=task,
        contact=contact,
        address=address_of(contact),
        script=script,
        details=details,
        filters=filters,
        empty=empty,
        said=said,
        error=error,
        status_code=status_code,
    )


@router.get("/next")
async def next_page(request: Request, caller: Worker) -> Response:
    filters = _filters(request.query_params)
    task = await services_of(request).tasks.held(caller.principal)
    said = {"recorded": "Saved.", "skipped": "Skipped: the task is back in the queue."}.get(
        request.query_params.get("said", "")
    )
    error = None if _query(filters) is not None else "Those filters are not valid; showing every task."
    return _page(request, caller, filters, task, empty=request.query_params.get("empty") == "1", said=said, error=error)


async def _claim_next(request: Request, caller: WebCaller, filters: dict[str, str], said: str = "") -> Response:
    """Claim the next task and show it; the page says so when none is left."""
    query = _query(filters) or TaskQuery()
    try:
        task = await services_of(request).tasks.claim(caller.principal, query)
    except CbwError as exc:
        if exc.status_code != 409:
            raise
        held = await services_of(request).tasks.held(caller.principal)
        return _page(request, caller, filters, held, error=exc.detail, status_code=409)
    extra = {"said": said} if said else {}
    if task is None:
        extra["empty"] = "1"
    return RedirectResponse(_next_url(filters, **extra), status_code=303)


@router.post("/next/claim")
async def claim(request: Request, caller: Worker) -> Response:
    form = await checked_form(request, caller)
    return await _claim_next(request, caller, _filters(form))


@router.post("/next/{instance_id}/outcome")
async def record_outcome(request: Request, caller: Worker, instance_id: InstancePath) -> Response:
    form = await checked_form(request, caller)
    filters = _filters(form)
    services = services_of(request)
    if not ID_RE.fullmatch(instance_id):
        return _page(request, caller, filters, None, error="That task does not exist.", status_code=404)
    note = form.get("notes", "").strip() or None
    try:
        body = TransitionRequest.model_validate(
            {"outcome": form.get("outcome", ""), "note": note, "expected_node": form.get("expected_node") or None}
        )
    except ValidationError as exc:
        held = await services.tasks.held(caller.principal)
        problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return _page(request, caller, filters, held, error=f"Not saved: {problem}.", status_code=422)
    try:
        await services.instances.transition(caller.principal, instance_id, body)
    except CbwError as exc:
        if exc.status_code >= 500:
            raise
        held = await services.tasks.held(caller.principal)
        message = f"Not saved: {exc.detail}."
        if exc.status_code == 409:
            message = f"Not saved: this task has moved on ({exc.detail}). Your note was not recorded."
        return _page(request, caller, filters, held, error=message, status_code=exc.status_code)
    return await _claim_next(request, caller, filters, said="recorded")


@router.post("/next/{instance_id}/skip")
async def skip(request: Request, caller: Worker, instance_id: InstancePath) -> Response:
    """The next task is claimed while this one is still held (so it is not handed straight back), then this one
    is given back to the queue."""
    form = await checked_form(request, caller)
    filters = _filters(form)
    services = services_of(request)
    if not ID_RE.fullmatch(instance_id):
        return _page(request, caller, filters, None, error="That task does not exist.", status_code=404)
    query = _query(filters) or TaskQuery()
    try:
        following = await services.tasks.claim(caller.principal, query)
    except CbwError as exc:
        if exc.status_code != 409:
            raise
        following = None  # holding the most a volunteer may: give this one back all the same
    try:
        await services.tasks.release(caller.principal, instance_id)
    except CbwError as exc:
        if exc.status_code >= 500:
            raise
    extra = {"said": "skipped"}
    if following is None:
        extra["empty"] = "1"
    return RedirectResponse(_next_url(filters, **extra), status_code=303)
