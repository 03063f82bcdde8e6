"""People who sign in to the web pages: users of a tenant, with a role, a hashed password or a pending invitation."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, StringConstraints

from .access import DisplayName, Role
from .common import RequestModel, ResponseModel, Timestamp

MIN_PASSWORD = 10
Password = Annotated[str, StringConstraints(min_length=MIN_PASSWORD, max_length=200)]


class UserRole(StrEnum):
    """The roles a person signing in may have (a `superadmin` stays a token: it spans tenants)."""

    ADMIN = "admin"
    STAFF = "staff"
    VOLUNTEER = "volunteer"
    VIEWER = "viewer"

    @property
    def role(self) -> Role:
        return Role(self.value)


class UserStatus(StrEnum):
    """Whether a person may sign in yet: `invited` (no password chosen) or `active`."""

    INVITED = "invited"  # made without a password: waits for its invitation link to be used
    ACTIVE = "active"  # has a password and may sign in


class User(ResponseModel):
    """A person who signs in to the web pages of one tenant (never a password or an invitation secret)."""

    id: str
    """The person's id."""
    tenant: str
    """The tenant the person works in; they see only its records."""
    email: str
    """The address they sign in with, as given; matched without regard to case."""
    name: str
    """The person's name, shown on pages and in the timeline."""
    role: UserRole
    """What the person may do, as for a token of that role."""
    status: UserStatus
    """`invited` until the invitation link is used to choose a password, then `active`."""
    created_at: Timestamp
    """When the person was added (UTC, ISO 8601)."""
    invitation_expires_at: Timestamp | None = None
    """While `invited`: when the invitation link stops working."""


class UserCreate(RequestModel):
    """Body of `POST /api/users` (admin): a person who will sign in. Without a password the answer holds an
    invitation link, valid 7 days and shown once, where they choose one."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "sam@example.org", "name": "Sam Rivera", "role": "volunteer"}]}
    )

    email: EmailStr
    """The address they will sign in with; unique in the tenant, without regard to case."""
    name: DisplayName
    """The person's name, 1 to 200 characters."""
    role: UserRole
    """`admin`, `staff`, `volunteer` or `viewer`."""
    password: Password | None = None
    """A first password, 10 to 200 characters; absent: an invitation link is returned instead."""


class UserPatch(RequestModel):
    """Body of `PATCH /api/users/{id}` (admin): a new role or name; the email never changes."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "staff"}]})

    role: UserRole | None = None
    """`admin`, `staff`, `volunteer` or `viewer`: takes effect at the person's next request."""
    name: DisplayName | None = None
    """The person's name, 1 to 200 characters."""


class UserCreated(BaseModel):
    """The answer of `POST /api/users`: the person, and their invitation link when no password was given."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    user: User
    """The person as stored."""
    invitation_url: str | None = None
    """Where they choose a password (on `CBW_PUBLIC_URL`, valid 7 days): shown only in this answer."""


def email_key(email: str) -> str:
    """The form an address is matched by: trimmed and case-folded."""
    return email.strip().lower()


class UserRecord(BaseModel):
    """A person as stored: the argon2 hash of the password (None while invited) and the SHA-256 of the pending
    invitation's secret. Never sent to a client."""

    user: User
    password_hash: str | None = None
    invitation_hash: str | None = None


class SessionRecord(BaseModel):
    """A signed-in browser, as stored: the SHA-256 of the cookie's secret (never the secret), and the token its
    forms must carry (CSRF). Ends at `expires_at`, on sign-out, or when its person is removed."""

    id: str
    tenant: str
    user_id: str
    secret_hash: str
    csrf_token: str
    created_at: datetime
    expires_at: datetime
