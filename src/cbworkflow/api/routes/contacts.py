"""`/api/contacts` (api.md § Contacts)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.convertors import Convertor, register_url_convertor

from ...errors import UnsupportedMediaType
from ...models.access import Principal
from ...models.common import Page
from ...models.contacts import Contact, ContactCreate, ContactPatch, ContactUpsert, ExternalId, SavedContact
from ...models.events import Event
from ...models.imports import FileFormat, ImportResult, import_format
from ...models.jobs import Job
from ...services.contact_files import csv_header, csv_row, jsonl_row
from ...store.base import ContactFilter
from ..deps import (
    READERS,
    STAFF,
    ContactIdPath,
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

router = APIRouter(prefix="/api/contacts", tags=["contacts"], responses=api_errors())

Reader = Annotated[Principal, Depends(allow(*READERS, doing="list or search contacts"))]
Writer = Annotated[Principal, Depends(allow(*STAFF, doing="change contacts"))]
Text = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00-\x1f]*$")]
County = Annotated[Text, Query(description="exactly this county, as stored (case matters)")]
Organization = Annotated[Text, Query(description="exactly this organization, as stored (case matters)")]
# The one external id rule (models/contacts.py), in the path and in the list filter as in a body.
ExternalIdPath = Annotated[ExternalId, Path(description="the id in the other system, percent-encoded (`/` as %2F)")]
ExternalIdQuery = Annotated[ExternalId | None, Query(description="exactly this external id")]


@router.get("", response_model=Page[Contact], summary="List contacts, newest first")
async def list_contacts(
    services: ServicesDep,
    principal: Reader,
    page: PagingDep,
    county: County = None,
    organization: Organization = None,
    external_id: ExternalIdQuery = None,
    tag: Annotated[list[str] | None, Query(description="repeatable: every tag must match")] = None,
) -> Page[Contact]:
    """Every contact of the caller's tenant, newest first, filtered by the fields given (all must match)."""
    tags = tag_filters(tag)
    where = ContactFilter(county=county, organization=organization, external_id=external_id, tags=tags)
    found = await services.contacts.list(principal.tenant, where, page)
    return Page[Contact](items=found.items, next_cursor=found.next_cursor)


@router.get("/search", response_model=Page[Contact], summary="Search name, email or phone")
async def search_contacts(
    services: ServicesDep,
    principal: Reader,
    page: PagingDep,
    q: Annotated[str, Query(min_length=1, max_length=500, description="text; phone digits match any punctuation")],
) -> Page[Contact]:
    """Contacts whose name, email or phone matches `q`, ignoring case; one or two characters match a name's start."""
    found = await services.contacts.search(principal.tenant, q, page)
    return Page[Contact](items=found.items, next_cursor=found.next_cursor)


@router.post("", response_model=SavedContact, status_code=201, responses=error_responses(409))
async def create_contact(services: ServicesDep, principal: Writer, body: ContactCreate) -> SavedContact:
    """Create a contact. A phone that cannot be read as a phone number is stored as given, with a `warnings` entry."""
    return await services.contacts.create(principal, body)


CSV_EXAMPLE = (
    "name,email,phone,county,external_id,tags,precinct\r\n"
    "Katherine Johnson,katherine@example.org,(555) 201-3344,Kent,crm-2001,voter;volunteer,12\r\n"
    "Dorothy Vaughan,dorothy@example.org,+1 555 010 7777,Kent,crm-2002,voter,14\r\n"
)
JSONL_EXAMPLE = '{"name": "Mary Jackson", "email": "mary@example.org", "external_id": "crm-2003", "tags": ["voter"]}\n'
IMPORT_BODY = {
    "required": True,
    "description": (
        "The file itself, as the body: CSV (`text/csv`: a header row naming the columns, then one contact per "
        "record; UTF-8, with or without BOM) or JSON lines (`application/x-ndjson` or `application/jsonl`: one "
        "JSON object per line). Columns (keys) are the contact's fields as `POST /api/contacts` names them: "
        "`id`, `external_id`, `name` (required), `email`, `phone`, `county`, `organization`, `role`, `tags` "
        "(`;`-joined in CSV) and `metadata` (a JSON object); `phone_e164`, `created_at` and `updated_at` (what an "
        "export adds) are read past; any other column goes into `metadata`. At most `CBW_IMPORT_MAX_BYTES` "
        "(256 MiB)."
    ),
    "content": {
        "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE},
        "application/x-ndjson": {"schema": {"type": "string"}, "example": JSONL_EXAMPLE},
        "application/jsonl": {"schema": {"type": "string"}, "example": JSONL_EXAMPLE},
    },
}


def _import_format(request: Request) -> FileFormat:
    content_type = request.headers.get("content-type", "")
    fmt = import_format(content_type)
    if fmt is None:
        shown = content_type.strip() or "none"
        raise UnsupportedMediaType(
            f"Content-Type {shown!r} cannot be imported: send the file as text/csv, or as JSON lines with "
            "application/x-ndjson or application/jsonl (in UTF-8)"
        )
    return fmt


@router.post(
    "/import",
    response_model=ImportResult,
    responses={
        202: {"model": Job, "description": "More rows than one request imports: a job does it (see `Location`)"},
        **error_responses(409, 415),
    },
    openapi_extra={"requestBody": IMPORT_BODY},
    summary="Import contacts from a CSV or JSON-lines file",
)
async def import_contacts(
    request: Request,
    services: ServicesDep,
    principal: Writer,
    dry_run: Annotated[bool, Query(description="report what the import would do, and write nothing")] = False,
) -> ImportResult | JSONResponse:
    """Each row updates the contact its `id`, else its `external_id`, else the one contact with its email or E.164
    phone names, or creates a contact; a row matching two contacts is rejected. A malformed file (not UTF-8, a
    quoted field cut off, no `name` column, not CSV) changes nothing: 422 naming the line. Rows that cannot be
    imported are listed in `rejections` with their line and reason; the rest are written a batch per transaction.
    Up to `CBW_IMPORT_INLINE_LIMIT` rows (5,000) are imported before the answer; a larger file answers 202 with
    a job, whose `result` is this answer. The same file imported again reports every row `unchanged`."""
    fmt = _import_format(request)
    spooled: FilePath | None = request.scope.get("state", {}).get("import_file")
    if spooled is None:  # the body limit spools every import; without it there is no file to read
        raise UnsupportedMediaType("the import's body was not received")
    done = await services.imports.import_file(principal, spooled, fmt, dry_run)
    if isinstance(done, ImportResult):
        return done
    return JSONResponse(done.model_dump(mode="json"), status_code=202, headers={"Location": f"/api/jobs/{done.id}"})


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The contacts, newest first: CSV with a header row, or one JSON object per line",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
    summary="Export contacts as CSV or JSON lines",
)
async def export_contacts(
    services: ServicesDep,
    principal: Reader,
    format: Annotated[Literal["csv", "jsonl"], Query(description="`csv` (the default) or `jsonl`: JSON lines")] = "csv",
    county: County = None,
    organization: Organization = None,
    external_id: ExternalIdQuery = None,
    tag: Annotated[list[str] | None, Query(description="repeatable: every tag must match")] = None,
) -> StreamingResponse:
    """Every contact the filters pick (those of `GET /api/contacts`), streamed a page at a time: `id`,
    `external_id`, `name`, `email`, `phone`, `county`, `organization`, `role`, `tags` (`;`-joined in CSV),
    `metadata` (JSON), then `phone_e164`, `created_at` and `updated_at`, which an import reads past. Importing the
    file back reports every row `unchanged`; into an empty tenant it makes the same contacts, with the same ids."""
    where = ContactFilter(county=county, organization=organization, external_id=external_id, tags=tag_filters(tag))
    fmt = FileFormat(format)

    async def lines() -> AsyncIterator[bytes]:
        if fmt is FileFormat.CSV:
            yield csv_header().encode()
        async for page in services.imports.export(principal.tenant, where):
            write = csv_row if fmt is FileFormat.CSV else jsonl_row
            yield "".join(write(contact) for contact in page).encode()

    media = "text/csv; charset=utf-8" if fmt is FileFormat.CSV else "application/x-ndjson"
    disposition = f'attachment; filename="contacts.{fmt.value}"'
    return StreamingResponse(lines(), media_type=media, headers={"Content-Disposition": disposition})


class _RestOfPath(Convertor[str]):
    """The rest of the path, whatever it holds. The server decodes %2F to `/` before routing, so an id holding `/`
    spans segments; Starlette's own `:path` stops at a newline (%0A), which should reach the id rule (422), not 404."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("rest_of_path", _RestOfPath())


@router.put(
    "/by-external-id/{external_id:rest_of_path}",
    response_model=SavedContact,
    responses={201: {"model": SavedContact, "description": "Created"}, **error_responses(409)},
    summary="Create or replace the contact with this external id",
)
async def upsert_contact(
    services: ServicesDep, principal: Writer, external_id: ExternalIdPath, body: ContactUpsert, response: Response
) -> SavedContact:
    """201 with a new contact when none has this external id; else 200 with that contact's fields replaced by the body's
    (its id, instances and timeline stay). Matching two contacts is impossible: an external id is unique per tenant."""
    contact, created = await services.contacts.upsert_by_external_id(principal, external_id, body)
    response.status_code = 201 if created else 200
    return contact


@router.get("/{contact_id}", response_model=Contact, responses=error_responses(404))
async def get_contact(services: ServicesDep, principal: PrincipalDep, contact_id: ContactIdPath) -> Contact:
    """Any role may ask; a volunteer gets only the contacts of tasks it holds (checked by the service)."""
    return await services.contacts.get(principal, record_id(contact_id, "contact"))


@router.patch("/{contact_id}", response_model=SavedContact, responses=error_responses(404, 409))
async def patch_contact(
    services: ServicesDep, principal: Writer, contact_id: ContactIdPath, body: ContactPatch
) -> SavedContact:
    """Change the fields given. A new phone that cannot be read is stored as given, with a `warnings` entry."""
    return await services.contacts.patch(principal, record_id(contact_id, "contact"), body)


@router.delete("/{contact_id}", status_code=204, responses=error_responses(404, 409))
async def delete_contact(
    services: ServicesDep,
    principal: Writer,
    contact_id: ContactIdPath,
    cascade: Annotated[bool, Query(description="cancel unfinished instances first")] = False,
) -> Response:
    """Delete a contact. 409 while it has unfinished instances, unless `cascade=true` cancels them first."""
    await services.contacts.delete(principal, record_id(contact_id, "contact"), cascade)
    return Response(status_code=204)


@router.post("/{contact_id}/tags/{tag}", response_model=Contact, responses=error_responses(404))
async def add_contact_tag(services: ServicesDep, principal: Writer, contact_id: ContactIdPath, tag: TagPath) -> Contact:
    """Add one tag (nothing changes if the contact has it already)."""
    return await services.contacts.change_tag(principal, record_id(contact_id, "contact"), tag_param(tag), True)


@router.delete("/{contact_id}/tags/{tag}", response_model=Contact, responses=error_responses(404))
async def remove_contact_tag(
    services: ServicesDep, principal: Writer, contact_id: ContactIdPath, tag: TagPath
) -> Contact:
    """Remove one tag (nothing changes if the contact does not have it)."""
    return await services.contacts.change_tag(principal, record_id(contact_id, "contact"), tag_param(tag), False)


@router.get("/{contact_id}/timeline", response_model=Page[Event], responses=error_responses(404))
async def contact_timeline(
    services: ServicesDep, principal: Reader, contact_id: ContactIdPath, page: PagingDep
) -> Page[Event]:
    """The events of every instance of this contact and its contact-level events (opt-outs, tags, custom events
    received), newest first, paged."""
    found = await services.contacts.timeline(principal.tenant, record_id(contact_id, "contact"), page)
    return Page[Event](items=found.items, next_cursor=found.next_cursor)
