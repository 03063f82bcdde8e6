"""Tenants, roles and API tokens."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

from .common import RequestModel, ResponseModel, Slug, Timestamp


class Role(StrEnum):
    """What a token may do (api.md § Conventions): `superadmin` is an admin who also manages tenants and the tokens
    of any tenant; `admin` does everything in its tenant; `staff` works contacts and instances and reads templates;
    `volunteer` claims tasks and records outcomes and notes on the instances it holds; `viewer` only reads."""

    SUPERADMIN = "superadmin"  # an admin of its own tenant who also manages tenants and tokens of any tenant
    ADMIN = "admin"  # everything in its tenant: templates, tokens, subscriptions
    STAFF = "staff"  # contacts, instances, transitions, notes, bulk work; reads templates
    VOLUNTEER = "volunteer"  # claims tasks, records outcomes and notes on instances it holds
    VIEWER = "viewer"  # reads


DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class Tenant(ResponseModel):
    """A tenant: one campaign or organisation, whose records no other tenant can see."""

    id: str
    """The tenant's id, a slug (the `tenant` of its records and tokens)."""
    name: str
    """The tenant's display name."""
    created_at: Timestamp
    """When the tenant was created (UTC, ISO 8601)."""


class TenantCreate(RequestModel):
    """Body of `POST /api/tenants` (superadmin): a new tenant, with an admin token for it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"id": "riverside-county", "name": "Riverside County outreach"}]}
    )

    id: Slug | None = None
    """The new tenant's id, a slug (`[a-z0-9][a-z0-9_-]{0,63}`); 12 hex characters are generated when absent."""
    name: DisplayName
    """The tenant's display name, 1 to 200 characters (spaces around it are dropped)."""


class TenantCreated(BaseModel):
    """The answer of `POST /api/tenants`: the new tenant and its first admin token, shown this once."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The new tenant's id."""
    name: str
    """The new tenant's display name."""
    admin_token: str
    """The secret of an `admin` token of the new tenant: shown only in this answer, stored only as a hash."""


class Token(ResponseModel):
    """A token as listed: never its secret."""

    id: str
    """The token's id (not its secret): use it to revoke the token."""
    tenant: str
    """The tenant the token belongs to; it sees only that tenant's records."""
    role: Role
    """What the token may do."""
    name: str | None = None
    """A label saying who or what uses the token; null when none was given."""
    created_at: Timestamp
    """When the token was created (UTC, ISO 8601)."""


class TokenCreate(RequestModel):
    """Body of `POST /api/tokens` (admin): a new API token; its secret is in the answer only."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "volunteer", "name": "Phone bank tablet 3"}]})

    role: Role
    """What the token may do; only a superadmin may create a `superadmin` token."""
    name: DisplayName | None = None
    """A label saying who or what uses the token, 1 to 200 characters; optional."""
    tenant: Slug | None = None
    """The tenant the token is for; only a superadmin may name another tenant. Absent: the caller's tenant."""


class TokenCreated(BaseModel):
    """Shown once, when the token is made: `token` is the secret."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    id: str
    """The token's id (not its secret): use it to revoke the token."""
    token: str
    """The secret to send as `Authorization: Bearer <token>`: shown only in this answer, stored only as a hash."""
    role: Role
    """What the token may do."""
    tenant: str
    """The tenant the token belongs to."""
    name: str | None = None
    """The token's label; null when none was given."""


class Principal(BaseModel):
    """Who is calling: the token's id, tenant and role. Frozen: one is shared by the requests of a token (the
    token cache)."""

    model_config = ConfigDict(use_attribute_docstrings=True, frozen=True)

    token_id: str
    """The id of the token the request was made with; events record it as their `actor`."""
    tenant: str
    """The tenant the token belongs to: every read and write is in it."""
    role: Role
    """What the token may do."""
    name: str | None = None
    """The token's label, if it has one."""
