"""/workflows and /workflows/{id}: the templates. The list (paged, with a tag filter) and, for admins, a new
template from JSON; one template drawn as a graph with the voters at each step, its validation results beside the
steps they concern, the JSON editor (Validate shows what is wrong without saving; Save refuses JSON that does not
parse or does not fit the template model, and keeps a graph with errors as a draft), Clone, Bulk enrol and the
kept versions. A bulk enrolment too large for one request becomes a job, followed at /workflows/jobs/{id}.

The drawing is an SVG picture served by a page route of this module (session-authenticated) and shown in an
`<img>`: a picture in an `<img>` runs no script, and the funnel beside it gives the same numbers to screen readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError
from starlette.responses import RedirectResponse, Response

from ..api.deps import record_id
from ..errors import CbwError, NotFound
from ..ids import SLUG_RE
from ..models.access import Role
from ..models.instances import BulkEnrol, BulkResult
from ..models.jobs import UNFINISHED_JOBS, Job
from ..models.templates import (
    ActionNode,
    CloneRequest,
    DecisionNode,
    EndNode,
    Node,
    TemplateCreate,
    TemplateFields,
    TemplatePatch,
    ValidationItem,
    ValidationReport,
    WaitNode,
    WebhookNode,
    WorkflowTemplate,
)
from ..services.templates import report_for
from ..store.base import PageRequest
from .auth import WebCaller, checked_form, role_in, services_of
from .dashboard import funnel_of
from .simulation import simulation_view
from .template_json import editable_json, model_problems, pretty_json, read_draft
from .templating import humanize, render

router = APIRouter(include_in_schema=False)
Reader = Annotated[WebCaller, Depends(role_in(Role.ADMIN, Role.STAFF, Role.VIEWER, doing="see workflow templates"))]
Staff = Annotated[WebCaller, Depends(role_in(Role.ADMIN, Role.STAFF, doing="enrol contacts or stop jobs"))]
Admin = Annotated[WebCaller, Depends(role_in(Role.ADMIN, doing="change workflow templates"))]

PAGE_SIZE = 50
SVG_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Opened on its own (not in an <img>), the picture still runs nothing and loads nothing.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'",
}
NEW_TEMPLATE = {
    "id": "welcome-call",
    "name": "Welcome call",
    "start_node": "call",
    "nodes": {
        "call": {
            "type": "action",
            "name": "Welcome call",
            "action": "phone_call",
            "transitions": {"answered": "welcomed", "no_answer": "not_reached"},
        },
        "welcomed": {"type": "end", "name": "Welcomed", "end_status": "success"},
        "not_reached": {"type": "end", "name": "Not reached", "end_status": "failed"},
    },
}
SAID = {
    "created": "Template saved.",
    "saved": "Changes saved.",
    "cloned": "Copy made. This is the new template: changes here do not touch the original.",
}


# ---------------------------------------------------------------- what a page shows


@dataclass(frozen=True)
class Problem:
    level: str  # "error" or "warning"
    code: str
    message: str


@dataclass(frozen=True)
class Step:
    """One node, as the page lists it: what it is, where it leads, how many are there, and its problems."""

    node_id: str
    node: Node
    what: str | None  # what the step does, in a few words
    count: int
    transitions: list[tuple[str, str, str]]  # outcome, target id, target name
    problems: list[Problem]


def _problems(report: ValidationReport) -> tuple[dict[str | None, list[Problem]], int, int]:
    grouped: dict[str | None, list[Problem]] = {}
    for level, items in (("error", report.errors), ("warning", report.warnings)):
        for item in items:
            grouped.setdefault(item.node, []).append(Problem(level, item.code, item.message))
    return grouped, len(report.errors), len(report.warnings)


def steps_of(template: WorkflowTemplate, counts: dict[str, int], report: ValidationReport) -> list[Step]:
    grouped, _, _ = _problems(report)
    steps = []
    for node_id, node in template.nodes.items():
        transitions = []
        for outcome, target in node.transitions.items():
            found = template.nodes.get(target)
            transitions.append((outcome, target, (found.name or target) if found else ""))
        steps.append(Step(node_id, node, what_of(node), counts.get(node_id, 0), transitions, grouped.get(node_id, [])))
    return steps


ACRONYMS = {"sms": "SMS", "ai": "AI", "url": "URL", "id": "id"}
RULES = {"ai": "An AI model decides", "heuristic": "A rule decides", "manual": "A person decides"}


def words(name: str) -> str:
    """`send_sms` as a person reads it: `Send SMS`."""
    parts = [ACRONYMS.get(part.lower(), part) for part in humanize(name).split(" ")]
    return " ".join(parts)


def what_of(node: Node) -> str | None:
    """What a step does, in a few words, from its settings (None when they do not say)."""
    if isinstance(node, ActionNode):
        return words(node.action) if node.action else None
    if isinstance(node, DecisionNode):
        kind = node.rule.get("type") if node.rule else None
        return RULES.get(kind) if isinstance(kind, str) else None
    if isinstance(node, WaitNode):
        condition = node.wait_condition or {}
        kind = condition.get("type")
        if kind == "duration" and isinstance(condition.get("duration"), str):
            return f"Waits {condition['duration']}"
        if kind == "until" and isinstance(condition.get("until"), str):
            return f"Waits until {condition['until']}"
        if kind == "event" and isinstance(condition.get("event"), str):
            return f"Waits for the event {condition['event']}"
        return None
    if isinstance(node, WebhookNode):
        return f"Calls {node.webhook_method} {node.webhook_url}" if node.webhook_url else None
    if isinstance(node, EndNode):
        return f"Ends as {node.end_status}"
    return None


def general_problems(template: WorkflowTemplate, report: ValidationReport) -> list[Problem]:
    """The problems of the whole template (and any about a node the template does not have)."""
    grouped, _, _ = _problems(report)
    return [p for node, items in grouped.items() if node is None or node not in template.nodes for p in items]


def report_view(report: ValidationReport) -> dict[str, Any]:
    """A report as the editor's check shows it: every problem with its node, errors first."""
    items: list[tuple[str, ValidationItem]] = [("error", e) for e in report.errors]
    items += [("warning", w) for w in report.warnings]
    return {
        "valid": report.valid,
        "errors": len(report.errors),
        "warnings": len(report.warnings),
        "items": [(level, item.node, item.code, item.message) for level, item in items],
    }


@dataclass
class Forms:
    """What the forms of a template's page hold when it is shown again: the user's input and what went wrong."""

    editor: str | None = None  # the edited JSON (None: the stored template's)
    editor_problems: list[str] = field(default_factory=list)
    editor_report: dict[str, Any] | None = None  # the check of the edited JSON, after Validate
    editor_error: str | None = None
    clone: dict[str, str] = field(default_factory=dict)
    clone_error: str | None = None
    enrol: dict[str, str] = field(default_factory=dict)
    enrol_error: str | None = None
    enrolled: BulkResult | None = None


def _template_id(value: str) -> str:
    return record_id(value, "workflow template")


def _count(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() and len(value) < 12 else None


def _said(request: Request) -> str | None:
    return SAID.get(request.query_params.get("said", ""))


# ---------------------------------------------------------------- the list


async def _list_page(
    request: Request,
    caller: WebCaller,
    *,
    draft: str | None = None,
    problems: list[str] | None = None,
    check: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    services = services_of(request)
    tag = (request.query_params.get("tag") or "").strip()[:64]
    cursor = request.query_params.get("cursor") or None
    filter_error = None
    if tag and not SLUG_RE.fullmatch(tag):
        filter_error = "A tag is lowercase letters, digits, - and _ (for example: outreach). Showing every template."
    page = await services.templates.list(
        caller.principal.tenant, None if filter_error else tag or None, PageRequest(limit=PAGE_SIZE, cursor=cursor)
    )
    rows = [(t, report_for(t)) for t in page.items]
    next_url = None
    if page.next_cursor:
        next_url = "/workflows?" + urlencode(
            {**({"tag": tag} if tag and not filter_error else {}), "cursor": page.next_cursor}
        )
    return render(
        request,
        "workflows.html",
        caller=caller,
        rows=rows,
        tag=tag,
        filter_error=filter_error,
        first_page=cursor is None,
        next_url=next_url,
        draft=draft if draft is not None else pretty_json(NEW_TEMPLATE),
        problems=problems or [],
        check=check,
        error=error,
        status_code=status_code,
    )


@router.get("/workflows")
async def list_page(request: Request, caller: Reader) -> Response:
    return await _list_page(request, caller)


@router.post("/workflows")
async def create(request: Request, caller: Admin) -> Response:
    """Validate (shows the check, saves nothing) or Save (refuses JSON that does not fit the model; a graph
    with errors is kept as a draft)."""
    form = await checked_form(request, caller)
    text = form.get("json", "")
    draft = read_draft(text, template_id=None)
    body = None
    if draft.data is not None:
        try:
            body = TemplateCreate.model_validate(draft.data)
        except ValidationError as exc:
            draft.problems.extend(model_problems(exc))
    if body is None:
        return await _list_page(request, caller, draft=text, problems=draft.problems, status_code=422)
    services = services_of(request)
    if form.get("do") != "save":
        check = report_view(services.templates.check(body))
        return await _list_page(request, caller, draft=text, check=check)
    try:
        made = await services.templates.create(caller.principal, body)
    except CbwError as exc:
        if exc.status_code not in (409, 422):
            raise
        return await _list_page(request, caller, draft=text, error=_sentence(exc.detail), status_code=exc.status_code)
    return RedirectResponse(f"/workflows/{made.id}?said=created#main", status_code=303)


# ---------------------------------------------------------------- one template


async def _template_page(
    request: Request, caller: WebCaller, template_id: str, forms: Forms | None = None, *, status_code: int = 200
) -> Response:
    services = services_of(request)
    tenant = caller.principal.tenant
    forms = forms or Forms()
    template = await services.templates.get(tenant, template_id)
    stats = await services.stats.of_template(tenant, template_id)
    report = report_for(template)
    counts = await services.diagrams.counts(tenant, template_id)
    cursor = request.query_params.get("cursor") or None
    versions = await services.templates.versions(tenant, template_id, PageRequest(limit=PAGE_SIZE, cursor=cursor))
    enrolled = forms.enrolled
    if enrolled is None:
        done, skipped = _count(request.query_params.get("enrolled")), _count(request.query_params.get("skipped"))
        if done is not None and skipped is not None:
            enrolled = BulkResult(enrolled=done, skipped=skipped)
    _, errors, warnings = _problems(report)
    simulation = await simulation_view(request, caller, template_id) if report.valid else None
    return render(
        request,
        "workflows_template.html",
        caller=caller,
        wf=template,
        simulation=simulation,
        report=report,
        errors=errors,
        warnings=warnings,
        general=general_problems(template, report),
        steps=steps_of(template, counts, report),
        funnel=funnel_of(template, stats),
        versions=versions.items,
        versions_next=f"/workflows/{template.id}?" + urlencode({"cursor": versions.next_cursor}) + "#versions"
        if versions.next_cursor
        else None,
        versions_first=cursor is None,
        editor=forms.editor if forms.editor is not None else editable_json(template),
        forms=forms,
        enrolled=enrolled,
        said=_said(request),
        status_code=status_code,
    )


@router.get("/workflows/{template_id}")
async def template_page(request: Request, caller: Reader, template_id: str) -> Response:
    return await _template_page(request, caller, _template_id(template_id))


@router.get("/workflows/{template_id}/diagram.svg")
async def diagram(request: Request, caller: Reader, template_id: str) -> Response:
    """The template drawn with the voters at each step now: an SVG picture for the page's `<img>`."""
    svg = await services_of(request).diagrams.draw(caller.principal, _template_id(template_id), "svg", stats=True)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)


@router.post("/workflows/{template_id}/edit")
async def edit(request: Request, caller: Admin, template_id: str) -> Response:
    """Validate (the check of the edited JSON, nothing saved) or Save (JSON that parses and fits the model; the
    whole template is replaced by it, and a change of the graph raises the version)."""
    template_id = _template_id(template_id)
    form = await checked_form(request, caller)
    services = services_of(request)
    await services.templates.get(caller.principal.tenant, template_id)  # 404 before looking at the JSON
    text = form.get("json", "")
    draft = read_draft(text, template_id=template_id)
    body = None
    if draft.data is not None:
        try:
            body = TemplateFields.model_validate(draft.data)
        except ValidationError as exc:
            draft.problems.extend(model_problems(exc))
    if body is None or draft.data is None:
        forms = Forms(editor=text, editor_problems=draft.problems)
        return await _template_page(request, caller, template_id, forms, status_code=422)
    if form.get("do") != "save":
        forms = Forms(editor=text, editor_report=report_view(services.templates.check(body)))
        return await _template_page(request, caller, template_id, forms)
    changes = body.model_dump()
    if "version" not in draft.data:
        changes["version"] = None  # left to the server: raised when the graph changed
    try:
        await services.templates.patch(caller.principal, template_id, TemplatePatch.model_validate(changes))
    except CbwError as exc:
        if exc.status_code not in (409, 422):
            raise
        forms = Forms(editor=text, editor_error=_sentence(exc.detail))
        return await _template_page(request, caller, template_id, forms, status_code=exc.status_code)
    return RedirectResponse(f"/workflows/{template_id}?said=saved#main", status_code=303)


@router.post("/workflows/{template_id}/clone")
async def clone(request: Request, caller: Admin, template_id: str) -> Response:
    template_id = _template_id(template_id)
    form = await checked_form(request, caller)
    values = {key: form.get(key, "").strip()[:300] for key in ("id", "name")}
    try:
        body = CloneRequest.model_validate({key: value for key, value in values.items() if value})
    except ValidationError as exc:
        await services_of(request).templates.get(caller.principal.tenant, template_id)  # 404 first
        forms = Forms(clone=values, clone_error="; ".join(_friendly(p) for p in model_problems(exc)))
        return await _template_page(request, caller, template_id, forms, status_code=422)
    try:
        copy = await services_of(request).templates.clone(caller.principal, template_id, body)
    except CbwError as exc:
        if exc.status_code not in (409, 422):
            raise
        forms = Forms(clone=values, clone_error=_sentence(exc.detail))
        return await _template_page(request, caller, template_id, forms, status_code=exc.status_code)
    return RedirectResponse(f"/workflows/{copy.id}?said=cloned#main", status_code=303)


@router.post("/workflows/{template_id}/enrol")
async def enrol(request: Request, caller: Staff, template_id: str) -> Response:
    """Enrol every matching contact not yet in the template: the counts at once, or a job to follow."""
    template_id = _template_id(template_id)
    form = await checked_form(request, caller)
    values = {key: form.get(key, "").strip()[:300] for key in ("county", "tag", "organization")}
    values["start"] = "on" if form.get("start") else ""
    chosen = {key: values[key] for key in ("county", "tag", "organization") if values[key]}
    services = services_of(request)
    try:
        body = BulkEnrol.model_validate(
            {"template_id": template_id, "contacts": chosen, "start": bool(values["start"])}
        )
    except ValidationError as exc:
        await services.templates.get(caller.principal.tenant, template_id)  # 404 first
        problems = [_friendly(p.removeprefix("contacts.")) for p in model_problems(exc)]
        forms = Forms(enrol=values, enrol_error="; ".join(problems))
        return await _template_page(request, caller, template_id, forms, status_code=422)
    try:
        done = await services.bulk.enrol(caller.principal, body)
    except CbwError as exc:
        if exc.status_code not in (409, 422):
            raise
        forms = Forms(enrol=values, enrol_error=_sentence(exc.detail))
        return await _template_page(request, caller, template_id, forms, status_code=exc.status_code)
    if isinstance(done, Job):
        return RedirectResponse(f"/workflows/jobs/{done.id}#main", status_code=303)
    query = urlencode({"enrolled": done.enrolled, "skipped": done.skipped})
    return RedirectResponse(f"/workflows/{template_id}?{query}#enrol", status_code=303)


# ---------------------------------------------------------------- jobs


def _job_id(value: str) -> str:
    return record_id(value, "job")


@router.get("/workflows/jobs/{job_id}")
async def job_page(request: Request, caller: Reader, job_id: str) -> Response:
    job = await services_of(request).jobs.get(caller.principal.tenant, _job_id(job_id))
    return _job(request, caller, job)


def _job(
    request: Request, caller: WebCaller, job: Job, *, error: str | None = None, status_code: int = 200
) -> Response:
    template_id = job.params.get("template_id") if isinstance(job.params.get("template_id"), str) else None
    total = job.progress.total
    return render(
        request,
        "workflows_job.html",
        caller=caller,
        job=job,
        unfinished=job.status in UNFINISHED_JOBS,
        template_id=template_id,
        total=total,
        share=min(job.progress.done / total, 1.0) if total else None,
        counts=[(key, value) for key, value in job.result.items() if isinstance(value, int)],
        error=error,
        status_code=status_code,
    )


@router.post("/workflows/jobs/{job_id}/cancel")
async def cancel_job(request: Request, caller: Staff, job_id: str) -> Response:
    job_id = _job_id(job_id)
    await checked_form(request, caller)
    services = services_of(request)
    try:
        await services.jobs.cancel(caller.principal, job_id)
    except CbwError as exc:
        if exc.status_code != 409:
            raise
        job = await services.jobs.get(caller.principal.tenant, job_id)
        return _job(request, caller, job, error=_sentence(exc.detail), status_code=409)
    return RedirectResponse(f"/workflows/jobs/{job_id}", status_code=303)


@router.get("/workflows/{template_id}/{form}")
async def form_address(caller: Reader, template_id: str, form: str) -> Response:
    """A form's address opened as a page (a reload after a Validate, a bookmark): the template's page there."""
    if form not in ("edit", "clone", "enrol"):
        raise NotFound("no such page")
    anchor = {"edit": "json"}.get(form, form)
    return RedirectResponse(f"/workflows/{_template_id(template_id)}#{anchor}", status_code=303)


# ---------------------------------------------------------------- words


def _sentence(detail: str) -> str:
    text = detail.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _friendly(problem: str) -> str:
    """A field problem of a small form, as a person reads it (`id: String should match pattern ...`)."""
    where, _, message = problem.partition(": ")
    if "should match pattern" in message:
        message = "use lowercase letters, digits, - and _ (at most 64 characters, starting with a letter or digit)"
    return f"{where.replace('_', ' ').capitalize()}: {message}"
