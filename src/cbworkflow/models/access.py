"""Tenants, roles and API tokens."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from .common import RequestModel, ResponseModel, Slug, Timestamp


class Role(StrEnum):
    """What a token may do (api.md § Conventions)."""

    SUPERADMIN = "superadmin"  # an admin of its own tenant who also manages tenants and tokens of any tenant
    ADMIN = "admin"  # everything in its tenant: templates, tokens, subscriptions
    STAFF = "staff"  # contacts, instances, transitions, notes, bulk work; reads templates
    VOLUNTEER = "volunteer"  # claims tasks, records outcomes and notes on instances it holds
    VIEWER = "viewer"  # reads


DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class Tenant(ResponseModel):
    id: str
    name: str
    created_at: Timestamp


class TenantCreate(RequestModel):
    id: Slug | None = None
    name: DisplayName


class TenantCreated(BaseModel):
    id: str
    name: str
    admin_token: str


class Token(ResponseModel):
    """A token as listed: never its secret."""

    id: str
    tenant: str
    role: Role
    name: str | None = None
    created_at: Timestamp


class TokenCreate(RequestModel):
    role: Role
    name: DisplayName | None = None
    tenant: Slug | None = None


class TokenCreated(BaseModel):
    """Shown once, when the token is made: `token` is the secret."""

    id: str
    token: str
    role: Role
    tenant: str
    name: str | None = None


class Principal(BaseModel):
    """Who is calling: the token's id, tenant and role."""

    token_id: str
    tenant: str
    role: Role
    name: str | None = None
