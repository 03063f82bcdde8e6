"""`/api/contacts` (api.md § Contacts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from starlette.convertors import Convertor, register_url_convertor

from ...models.access import Principal
from ...models.common import Page
from ...models.contacts import Contact, ContactCreate, ContactPatch, ContactUpsert, ExternalId, SavedContact
from ...models.events import Event
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
    """The events of every instance of this contact, oldest first, paged."""
    found = await services.contacts.timeline(principal.tenant, record_id(contact_id, "contact"), page)
    return Page[Event](items=found.items, next_cursor=found.next_cursor)
