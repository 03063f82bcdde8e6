"""Contacts: the people a campaign reaches out to."""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(max_length=200)]
Phone = Annotated[str, StringConstraints(max_length=40)]


def _external_id(value: str) -> str:
    """The one external id rule, for bodies, the upsert path and the list filter. Every id it accepts reaches
    `PUT /by-external-id/{id}` when the client percent-encodes it as one path segment (`/` as `%2F` too): so no
    control characters (no CRM field holds them, and they break CSV rows and logs), no lone surrogates (no URL or
    database can hold them), and not `.` or `..`, which clients drop from a path as dot segments."""
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise ValueError("may not contain control characters (tab, newline...)")
    if value in (".", ".."):
        raise ValueError("may not be . or .. (no URL can name them)")
    return value


ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_external_id)]


class ContactFields(RequestModel):
    """The fields a client may write on a contact."""

    name: Name
    email: EmailStr | None = None
    phone: Phone | None = None
    county: ShortText | None = None
    organization: ShortText | None = None
    role: ShortText | None = None
    external_id: ExternalId | None = None
    tags: Tags = Field(default_factory=list)
    metadata: BoundedObject = Field(default_factory=dict)


class ContactCreate(ContactFields):
    """Body of `POST /api/contacts`; `id` is generated when absent."""

    id: Slug | None = None


class ContactUpsert(ContactFields):
    """Body of `PUT /api/contacts/by-external-id/{external_id}`: the external id comes from the path."""


class ContactPatch(RequestModel):
    """Body of `PATCH /api/contacts/{id}`: only the fields given change; `null` clears an optional field."""

    name: Name | None = None
    email: EmailStr | None = None
    phone: Phone | None = None
    county: ShortText | None = None
    organization: ShortText | None = None
    role: ShortText | None = None
    external_id: ExternalId | None = None
    tags: Tags | None = None
    metadata: BoundedObject | None = None


class Contact(ResponseModel):
    """A contact as stored and returned."""

    id: str
    tenant: str
    name: str
    email: str | None = None
    phone: str | None = None
    phone_e164: str | None = None
    county: str | None = None
    organization: str | None = None
    role: str | None = None
    external_id: str | None = None
    tags: list[str] = Field(default_factory=list)
    metadata: JSONObject = Field(default_factory=dict)
    workflow_instance_ids: list[str] = Field(default_factory=list)
    created_at: Timestamp
    updated_at: Timestamp


class FieldWarning(ResponseModel):
    """A value that was accepted and stored, but will not work as the client may expect."""

    field: str = Field(description="the request field the warning is about, e.g. `phone`")
    message: str = Field(description="what is wrong and what follows from it, in words a user understands")


class SavedContact(Contact):
    """A contact as a create, a patch or an upsert answers it: the contact, and `warnings` about what it was given.

    `warnings` is there only when there is something to say (a phone that could not be read as a phone number),
    so an answer without warnings is exactly what `GET /api/contacts/{id}` shows."""

    warnings: list[FieldWarning] = Field(
        default_factory=list,
        exclude_if=lambda warnings: not warnings,
        description="present only when a value was stored but will not be used as expected (see `FieldWarning`)",
    )
