"""`/contacts` and `/contacts/{id}`: the organiser's view of the people a campaign reaches.

`/contacts` searches (name, email or phone; the page works by pressing Enter, and `contacts.js` searches as the
person types), filters by county, tag and organization, pages through the contacts 50 at a time, imports a CSV or
JSON-lines file with its per-row report (a file of more rows than one request imports becomes a job, followed on
`/contacts/jobs/{id}`) and exports what the filters pick as CSV (`/contacts/export.csv`, streamed).

`/contacts/{id}` shows one contact: every field, its tags and metadata, its opt-outs (when contacts have them), its
instances and its timeline, newest first.

Everything goes through the services with the caller's principal, so another tenant's id is a 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path as FilePath
from typing import IO, Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.responses import RedirectResponse, Response

from ..errors import CbwError, InvalidInput, NotFound
from ..ids import ID_RE, SLUG_RE
from ..models.access import Role
from ..models.consent import Channel
from ..models.contacts import Contact
from ..models.events import Event
from ..models.imports import FileFormat, ImportResult, import_format
from ..models.instances import WorkflowInstance
from ..models.jobs import UNFINISHED_JOBS, Job, JobKind, JobStatus
from ..services.contact_files import csv_header, csv_row, format_of
from ..store.base import ContactFilter, InstanceFilter, Page, PageRequest
from .auth import WebCaller, checked_form, role_in, services_of
from .templating import render, when

router = APIRouter(include_in_schema=False)
T = TypeVar("T")

READERS = (Role.ADMIN, Role.STAFF, Role.VIEWER)
WRITERS = (Role.ADMIN, Role.STAFF)
Reader = Annotated[WebCaller, Depends(role_in(*READERS, doing="see the contacts"))]
Writer = Annotated[WebCaller, Depends(role_in(*WRITERS, doing="change contacts"))]
Admin = Annotated[WebCaller, Depends(role_in(Role.ADMIN, doing="undo an opt-out"))]
NO_CHANNEL = "Tick at least one channel, or Every channel."
IdPath = Annotated[str, Path(max_length=200)]

PAGE_SIZE = 50
MAX_QUERY = 500  # as GET /api/contacts/search
MAX_FILTER = 200  # as the list's filters
MAX_TAG_FILTERS = 20
FILTERS = ("county", "organization")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
STATUS_WORDS = {
    JobStatus.QUEUED: "Waiting to start",
    JobStatus.RUNNING: "Running",
    JobStatus.SUCCEEDED: "Finished",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELLED: "Cancelled",
}
ACTORS = {"system": "Automatic", "ai": "AI decision"}


# ---------------------------------------------------------------------------------------------------- helpers
def size_text(size: int) -> str:
    """A number of bytes as a person reads it: `1 MB`, `512 KB`."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.3g} MB"
    return f"{max(size // 1024, 1)} KB"


def shown(value: Any) -> str:
    """A metadata value as text: strings as they are, anything else as compact JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


@dataclass(frozen=True)
class Filters:
    """What the list page was asked for: a search, or filters (every one must match)."""

    q: str = ""
    county: str = ""
    organization: str = ""
    tags: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.county or self.organization or self.tags)

    def words(self) -> str:
        """The filters as a heading reads them: `in Kent, at Acme, tagged voter and donor`."""
        parts = []
        if self.county:
            parts.append(f"in {self.county}")
        if self.organization:
            parts.append(f"at {self.organization}")
        if self.tags:
            parts.append("tagged " + " and ".join(self.tags))
        return ", ".join(parts)

    def where(self) -> ContactFilter:
        return ContactFilter(tags=self.tags, county=self.county or None, organization=self.organization or None)

    def params(self, *, search: bool = True) -> list[tuple[str, str]]:
        """The query string that asks for the same list (tags repeated, as the API's `tag`)."""
        pairs: list[tuple[str, str]] = []
        if search and self.q:
            pairs.append(("q", self.q))
        pairs += [(key, getattr(self, key)) for key in FILTERS if getattr(self, key)]
        pairs += [("tag", tag) for tag in self.tags]
        return pairs

    def url(self, path: str, *, search: bool = True, **extra: str) -> str:
        query = urlencode([*self.params(search=search), *extra.items()])
        return f"{path}?{query}" if query else path


def filters_of(query: Mapping[str, Any], tags: list[str]) -> tuple[Filters, list[str]]:
    """The list's filters from a query string, and what is wrong with them (shown next to the form). A tag box may
    hold several tags, separated by commas or spaces."""
    problems: list[str] = []
    q = str(query.get("q") or "")
    if len(q) > MAX_QUERY:
        problems.append(f"A search can be at most {MAX_QUERY} characters.")
        q = q[:MAX_QUERY]
    values: dict[str, str] = {}
    for key in FILTERS:
        value = str(query.get(key) or "").strip()
        if CONTROL.search(value) or len(value) > MAX_FILTER:
            problems.append(f"The {key} filter can be at most {MAX_FILTER} characters, on one line.")
            value = ""
        values[key] = value
    wanted = list(dict.fromkeys(t for given in tags for t in re.split(r"[,\s]+", given.strip().lower()) if t))
    bad = [t for t in wanted if not SLUG_RE.fullmatch(t)]
    if bad:
        problems.append(
            f"{bad[0]!r} is not a tag: tags are lowercase letters, digits, '-' and '_' (at most 64 characters)."
        )
    good = [t for t in wanted if SLUG_RE.fullmatch(t)]
    if len(good) > MAX_TAG_FILTERS:
        problems.append(f"Filter by at most {MAX_TAG_FILTERS} tags at once.")
        good = good[:MAX_TAG_FILTERS]
    return Filters(q=q, tags=tuple(good), **values), problems


def _cursor(request: Request, name: str = "cursor") -> str | None:
    value = request.query_params.get(name)
    return value[:512] if value else None


async def _contacts(
    request: Request, caller: WebCaller, filters: Filters, cursor: str | None
) -> tuple[Page[Contact], str | None]:
    """The page of contacts asked for, and the problem with the search when there is one (an empty page then)."""
    services = services_of(request)
    tenant = caller.principal.tenant
    page = PageRequest(limit=PAGE_SIZE, cursor=cursor)
    try:
        if filters.q.strip():
            return await services.contacts.search(tenant, filters.q, page), None
        return await services.contacts.list(tenant, filters.where(), page), None
    except InvalidInput as exc:
        return Page([], None), _sentence(exc.detail)


def _sentence(detail: str) -> str:
    """A service's message (`q: control characters cannot…`) as a sentence on the page."""
    field, colon, rest = detail.partition(": ")
    text = rest if colon and field in ("q", "cursor", "tag", "county", "organization") else detail
    if "cursor" in field and colon:
        text = "that page link is out of date; start again from the first page"
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


async def _list_page(
    request: Request,
    caller: WebCaller,
    *,
    import_error: str | None = None,
    dry_run: bool = False,
    status_code: int = 200,
) -> Response:
    filters, problems = filters_of(request.query_params, request.query_params.getlist("tag"))
    found, search_error = await _contacts(request, caller, filters, _cursor(request))
    if search_error:
        problems.append(search_error)
    more = None
    if found.next_cursor:
        more = filters.url("/contacts", search=bool(filters.q.strip()), cursor=found.next_cursor)
    status = status_code
    if problems and status == 200:
        status = 422
    settings = services_of(request).settings
    return render(
        request,
        "contacts.html",
        caller=caller,
        filters=filters,
        contacts=found.items,
        more=more,
        paged=_cursor(request) is not None,
        problems=problems,
        searching=bool(filters.q.strip()),
        export_url=filters.url("/contacts/export.csv", search=False),
        can_import=caller.principal.role in (*WRITERS, Role.SUPERADMIN),
        import_error=import_error,
        dry_run=dry_run,
        max_upload=settings.max_body_bytes,
        max_upload_text=size_text(settings.max_body_bytes),
        inline_limit=settings.import_inline_limit,
        status_code=status,
    )


# ---------------------------------------------------------------------------------------------------- the list
@router.get("/contacts")
async def contacts_page(request: Request, caller: Reader) -> Response:
    return await _list_page(request, caller)


@router.get("/contacts/export.csv")
async def export_csv(request: Request, caller: Reader) -> Response:
    """The contacts the filters pick, as the API's export writes them (CSV), streamed a page at a time."""
    filters, problems = filters_of(request.query_params, request.query_params.getlist("tag"))
    if problems:
        raise InvalidInput(" ".join(problems))
    services = services_of(request)
    tenant, where = caller.principal.tenant, filters.where()

    async def lines() -> AsyncIterator[bytes]:
        yield csv_header().encode()
        async for page in services.imports.export(tenant, where):
            yield "".join(csv_row(contact) for contact in page).encode()

    headers = {
        "Content-Disposition": 'attachment; filename="contacts.csv"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


# ---------------------------------------------------------------------------------------------------- import
def _upload_format(upload: UploadFile) -> FileFormat | None:
    """The file's format from its name (.csv, .jsonl, .ndjson), else from the type the browser gave it."""
    try:
        return format_of(FilePath(upload.filename or "upload"))
    except InvalidInput:
        return import_format(upload.content_type or "")


def _spool(source: IO[bytes], suffix: str) -> FilePath:
    """The upload copied to a temporary file of its own (the import reads a path, twice)."""
    handle, name = tempfile.mkstemp(prefix="cbw-web-import-", suffix=suffix)
    with os.fdopen(handle, "wb") as out:
        source.seek(0)
        shutil.copyfileobj(source, out, 1024 * 1024)
    return FilePath(name)


@router.post("/contacts/import")
async def import_contacts(request: Request, caller: Writer) -> Response:
    fields = await checked_form(request, caller)
    form = await request.form()  # the same form, read once: its file too
    try:
        return await _import(request, caller, form.get("file"), dry_run=fields.get("dry_run") in ("1", "on", "true"))
    finally:
        await form.close()


async def _import(request: Request, caller: WebCaller, upload: Any, *, dry_run: bool) -> Response:
    """Import the uploaded file: its report, a job's page for a large one, or the form again with the problem."""
    if not isinstance(upload, UploadFile) or not upload.filename:
        return await _list_page(
            request, caller, import_error="Choose a file to import.", dry_run=dry_run, status_code=422
        )
    fmt = _upload_format(upload)
    if fmt is None:
        return await _list_page(
            request,
            caller,
            import_error=f"{upload.filename} is not a file the import reads: choose a .csv or a .jsonl file.",
            dry_run=dry_run,
            status_code=422,
        )
    path = await asyncio.to_thread(_spool, upload.file, f".{fmt.value}")
    try:
        done = await services_of(request).imports.import_file(caller.principal, path, fmt, dry_run)
    except CbwError as exc:
        if exc.status_code not in (409, 413, 415, 422):
            raise
        detail = exc.detail if exc.detail.endswith((".", "?", "!")) else f"{exc.detail}."
        after = (
            "Nothing was changed."
            if exc.status_code == 422 or dry_run
            else "Rows before the problem may have been imported: import the file again to finish the rest."
        )
        message = f"{upload.filename} was not imported: {detail} {after}"
        return await _list_page(request, caller, import_error=message, dry_run=dry_run, status_code=exc.status_code)
    finally:
        await asyncio.to_thread(path.unlink, True)
    if isinstance(done, Job):
        return RedirectResponse(f"/contacts/jobs/{done.id}", status_code=303)
    return render(
        request,
        "contacts_import.html",
        caller=caller,
        filename=upload.filename,
        report=done,
        job=None,
        running=False,
        status_words=STATUS_WORDS,
        when=when,
    )


@router.get("/contacts/jobs/{job_id}")
async def import_job(request: Request, caller: Reader, job_id: IdPath) -> Response:
    """A large import running in the background: its progress, and its report so far (the page reloads itself
    every few seconds until the job has finished)."""
    if not ID_RE.fullmatch(job_id):
        raise NotFound(f"no import with id {job_id[:80]!r}")
    job = await services_of(request).jobs.get(caller.principal.tenant, job_id)
    if job.kind is not JobKind.CONTACTS_IMPORT:
        raise NotFound(f"no import with id {job_id!r}")
    dry_run = bool(job.params.get("dry_run"))
    report = ImportResult.model_validate(job.result) if job.result else ImportResult(dry_run=dry_run)
    return render(
        request,
        "contacts_import.html",
        caller=caller,
        filename=None,
        report=report,
        job=job,
        running=job.status in UNFINISHED_JOBS,
        status_words=STATUS_WORDS,
        when=when,
    )


# ---------------------------------------------------------------------------------------------------- one contact
@dataclass(frozen=True)
class InstanceRow:
    instance: WorkflowInstance
    template: str  # the template's name (its id when it is gone)
    node: str  # the current node's name, "" when there is none


async def _template_names(request: Request, tenant: str, template_ids: Iterable[str | None]) -> dict[str, str]:
    """Each template's name (its id when the template is gone), looked up once per template."""
    names: dict[str, str] = {}
    for template_id in dict.fromkeys(t for t in template_ids if t):
        try:
            names[template_id] = (await services_of(request).templates.get(tenant, template_id)).name or template_id
        except NotFound:
            names[template_id] = template_id
    return names


def _instance_rows(instances: list[WorkflowInstance], templates: Mapping[str, str]) -> list[InstanceRow]:
    rows = []
    for instance in instances:
        node = instance.nodes.get(instance.current_node or "")
        node_name = (node.name or instance.current_node or "") if node else (instance.current_node or "")
        rows.append(InstanceRow(instance, templates.get(instance.template_id, instance.template_id), node_name))
    return rows


async def _actors(request: Request, tenant: str, events: list[Event]) -> dict[str, str]:
    """Who did each event, as a name: the people of the tenant by name, the engine as "Automatic"."""
    names: dict[str, str] = {}
    for actor in dict.fromkeys(e.actor for e in events):
        if actor in ACTORS:
            names[actor] = ACTORS[actor]
            continue
        try:
            names[actor] = (await services_of(request).users.get(tenant, actor)).name
        except NotFound:
            names[actor] = f"API token {actor}"  # a machine's token, by its id
    return names


async def _page_of(
    request: Request, cursor_name: str, load: Callable[[PageRequest], Awaitable[Page[T]]]
) -> tuple[Page[T], str | None]:
    """A paged section of the contact's page; a stale cursor shows the section's first page with a note."""
    cursor = _cursor(request, cursor_name)
    try:
        return await load(PageRequest(limit=PAGE_SIZE, cursor=cursor)), None
    except InvalidInput as exc:
        if cursor is None:
            raise
        note = _sentence(exc.detail)
        return await load(PageRequest(limit=PAGE_SIZE)), note


@router.get("/contacts/{contact_id}")
async def contact_page(request: Request, caller: Reader, contact_id: IdPath) -> Response:
    if not ID_RE.fullmatch(contact_id):
        raise NotFound(f"no contact with id {contact_id[:80]!r}")
    services = services_of(request)
    tenant = caller.principal.tenant
    contact = await services.contacts.get(caller.principal, contact_id)
    instances, instances_note = await _page_of(
        request,
        "instances_cursor",
        lambda page: services.instances.list(tenant, InstanceFilter(contact_id=contact_id), page),
    )
    timeline, timeline_note = await _page_of(
        request, "timeline_cursor", lambda page: services.contacts.timeline(tenant, contact_id, page)
    )
    templates = await _template_names(
        request, tenant, [*(i.template_id for i in instances.items), *(e.template_id for e in timeline.items)]
    )
    has_opt_outs = "opted_out" in type(contact).model_fields
    opted_out: Mapping[str, Any] = getattr(contact, "opted_out", None) or {}
    return render(
        request,
        "contacts_detail.html",
        caller=caller,
        contact=contact,
        opt_out_choices=[channel.value for channel in Channel if channel not in opted_out],
        opt_out_error=request.query_params.get("opt_out_error", "")[:300],
        metadata=[(key, shown(value)) for key, value in contact.metadata.items()],
        has_opt_outs=has_opt_outs,
        opted_out=[(channel, when(at) if isinstance(at, datetime) else shown(at)) for channel, at in opted_out.items()],
        instances=_instance_rows(instances.items, templates),
        more_instances=(
            f"/contacts/{contact_id}?{urlencode({'instances_cursor': instances.next_cursor})}#instances"
            if instances.next_cursor
            else None
        ),
        instances_note=instances_note,
        events=timeline.items,
        actors=await _actors(request, tenant, timeline.items),
        more_events=(
            f"/contacts/{contact_id}?{urlencode({'timeline_cursor': timeline.next_cursor})}#timeline"
            if timeline.next_cursor
            else None
        ),
        timeline_note=timeline_note,
        templates=templates,
        when=when,
        shown=shown,
    )


@router.post("/contacts/{contact_id}/opt-out")
async def opt_out(request: Request, caller: Writer, contact_id: IdPath) -> Response:
    """Record an opt-out from the contact's page (staff and admins): the channels ticked, or every channel."""
    fields = await checked_form(request, caller)
    every = fields.get("every_channel") == "on"
    channels = None if every else [c for c in Channel if fields.get(f"channel_{c.value}") == "on"]
    page = f"/contacts/{contact_id}"
    if channels == []:
        return RedirectResponse(f"{page}?{urlencode({'opt_out_error': NO_CHANNEL})}#opt-outs", status_code=303)
    reason = fields.get("reason", "").strip()[:500] or None
    await services_of(request).consent.opt_out(caller.principal, contact_id, channels, reason)
    return RedirectResponse(f"{page}#opt-outs", status_code=303)


@router.post("/contacts/{contact_id}/opt-in")
async def opt_in(request: Request, caller: Admin, contact_id: IdPath) -> Response:
    """Undo one opt-out (admins)."""
    fields = await checked_form(request, caller)
    try:
        channel = Channel(fields.get("channel", ""))
    except ValueError:
        raise InvalidInput("channel: choose one of the contact's opt-outs to undo") from None
    await services_of(request).consent.opt_in(caller.principal, contact_id, channel)
    return RedirectResponse(f"/contacts/{contact_id}#opt-outs", status_code=303)
