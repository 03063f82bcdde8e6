"""Contacts: the people a campaign reaches out to."""

from __future__ import annotations

import unicodedata
import zoneinfo
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, EmailStr, Field, StringConstraints

from .common import BoundedObject, JSONObject, RequestModel, ResponseModel, Slug, Tags, Timestamp
from .consent import Channel

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


@cache
def _known_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def known_zone(name: str) -> bool:
    """Whether `name` is an IANA time zone this server's time zone data knows; a folder of the data (`America`)
    or one of its other files (`posixrules`) is not one."""
    return name in _known_zones()


def _time_zone(value: str) -> str:
    """An IANA time zone name that this server's time zone data knows (`America/Los_Angeles`)."""
    if not known_zone(value):
        raise ValueError(f"{value!r} is not an IANA time zone name such as America/Los_Angeles")
    return value


TimeZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_time_zone)]


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


OptedOut = Annotated[dict[Channel, Timestamp], BeforeValidator(_none_is_empty)]


class ContactFields(RequestModel):
    """The fields a client may write on a contact."""

    name: Name
    """The person's full name, as a volunteer would say it: 1 to 200 characters (spaces around it are dropped)."""
    email: EmailStr | None = None
    """A valid email address, or null; the `email` action sends to it."""
    phone: Phone | None = None
    """The phone number as given (at most 40 characters); also stored as E.164 in `phone_e164` when it parses, in
    the server's default region when it has no `+` country code. One that does not parse is kept, with a warning."""
    county: ShortText | None = None
    """The county the person lives in, as your campaign names it (at most 200 characters)."""
    organization: ShortText | None = None
    """The organisation the person belongs to, if any (at most 200 characters)."""
    role: ShortText | None = None
    """The person's role in that organisation, e.g. `Precinct captain` (free text; not an API token role)."""
    external_id: ExternalId | None = None
    """The id of this person in another system (a CRM), unique in the tenant: 1 to 200 characters, no control
    characters, not `.` or `..`."""
    timezone: TimeZoneName | None = None
    """Where the person lives, as an IANA time zone (`America/Los_Angeles`); contact hours are read in it. Absent:
    the time zone of the phone number when it has exactly one, else the tenant's."""
    tags: Tags = Field(default_factory=list)
    """Slugs that group contacts (at most 100); duplicates are dropped, the first order kept."""
    metadata: BoundedObject = Field(default_factory=dict)
    """Any JSON object of your own (at most 64 KiB as JSON); placeholders read it as `{contact.metadata.key}`."""


class ContactCreate(ContactFields):
    """Body of `POST /api/contacts`; `id` is generated when absent."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "ada-lovelace",
                    "name": "Ada Lovelace",
                    "email": "ada@example.org",
                    "phone": "+15551234567",
                    "county": "Riverside",
                    "organization": "Riverside Library Friends",
                    "role": "Volunteer coordinator",
                    "tags": ["volunteer-lead"],
                    "metadata": {"preferred_language": "en"},
                }
            ]
        }
    )

    id: Slug | None = None
    """The new contact's id, a slug (`[a-z0-9][a-z0-9_-]{0,63}`); 12 hex characters are generated when absent."""


class ContactUpsert(ContactFields):
    """Body of `PUT /api/contacts/by-external-id/{external_id}`: creates the contact with that external id, or
    replaces its fields. The external id comes from the path (an `external_id` in the body is not used)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Grace Hopper",
                    "email": "grace@example.org",
                    "phone": "+15557654321",
                    "county": "Riverside",
                    "tags": ["donor"],
                    "metadata": {"crm_segment": "2024-donors"},
                }
            ]
        }
    )


class ContactPatch(RequestModel):
    """Body of `PATCH /api/contacts/{id}`: only the fields given change; `null` clears an optional field."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"county": "Riverside", "tags": ["volunteer-lead", "spanish-speaker"], "organization": None}]
        }
    )

    name: Name | None = None
    """The person's full name, 1 to 200 characters; `null` leaves it as it is (a contact always has a name)."""
    email: EmailStr | None = None
    """A valid email address; `null` clears it."""
    phone: Phone | None = None
    """The phone number as given (at most 40 characters); `phone_e164` is worked out again. `null` clears both."""
    county: ShortText | None = None
    """The county the person lives in (at most 200 characters); `null` clears it."""
    organization: ShortText | None = None
    """The organisation the person belongs to (at most 200 characters); `null` clears it."""
    role: ShortText | None = None
    """The person's role in that organisation (free text, at most 200 characters); `null` clears it."""
    external_id: ExternalId | None = None
    """The id of this person in another system, unique in the tenant (409 if another contact has it); `null`
    clears it."""
    timezone: TimeZoneName | None = None
    """An IANA time zone (`America/Los_Angeles`) that contact hours are read in; `null` clears it."""
    tags: Tags | None = None
    """The whole new list of tags (slugs, at most 100), replacing the old one; `null` removes every tag."""
    metadata: BoundedObject | None = None
    """The whole new metadata object (at most 64 KiB as JSON), replacing the old one; `null` empties it."""


class Contact(ResponseModel):
    """A contact as stored and returned."""

    id: str
    """The contact's id, a slug."""
    tenant: str
    """The tenant the contact belongs to."""
    name: str
    """The person's full name."""
    email: str | None = None
    """The person's email address, or null."""
    phone: str | None = None
    """The phone number exactly as it was given, or null."""
    phone_e164: str | None = None
    """The phone number in E.164 form (`+15551234567`), set by the server when `phone` parses; null otherwise.
    Texts are sent to this number."""
    county: str | None = None
    """The county the person lives in, or null."""
    organization: str | None = None
    """The organisation the person belongs to, or null."""
    role: str | None = None
    """The person's role in that organisation (free text), or null."""
    external_id: str | None = None
    """The id of this person in another system (a CRM), unique in the tenant; null when none."""
    timezone: str | None = None
    """The person's IANA time zone, or null (contact hours then follow the phone number, else the tenant)."""
    opted_out: OptedOut = Field(default_factory=dict)
    """The channels the person refused (`sms`, `email`, `phone`, `door`, `mail`), each with when it was recorded
    (set by `POST /api/contacts/{id}/opt-out` and by a STOP text; nothing is sent or asked of a volunteer on them)."""
    tags: list[str] = Field(default_factory=list)
    """The contact's tags (slugs, no duplicates)."""
    metadata: JSONObject = Field(default_factory=dict)
    """Free-form data of your own (imported columns that are not contact fields land here)."""
    workflow_instance_ids: list[str] = Field(default_factory=list)
    """The ids of this contact's workflow instances, of any status (set by the server)."""
    created_at: Timestamp
    """When the contact was created (UTC, ISO 8601)."""
    updated_at: Timestamp
    """When the contact last changed (UTC, ISO 8601)."""


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
