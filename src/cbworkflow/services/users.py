"""People who sign in to the web pages: adding them (with a password, or an invitation link valid 7 days and
shown once), listing, removing (their sessions end with them), and an invitation turned into a password.

Passwords are hashed with argon2id (argon2-cffi's defaults); hashing takes tens of milliseconds on purpose, so it
runs off the event loop. An invitation's secret is 256 random bits, stored as a SHA-256 like a token's.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..clock import Clock
from ..errors import CbwError, Conflict, Forbidden, InvalidInput, NotFound
from ..ids import ID_RE, SLUG_RE, new_id
from ..models.access import Principal, Role
from ..models.users import (
    MIN_PASSWORD,
    User,
    UserCreate,
    UserCreated,
    UserPatch,
    UserRecord,
    UserStatus,
    email_key,
)
from ..store.base import Page, PageRequest, Store, Tx
from .access import hash_secret

T = TypeVar("T")
INVITATION_DAYS = 7
_hasher = PasswordHasher()
# Verified against when an address is unknown, so a wrong address costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
# Password hashing has threads of its own (each hash takes 64 MiB and tens of milliseconds of a core), so a flood
# of sign-ins neither takes the threads other work runs on nor the memory: past MAX_WAITING hashes queued, a
# sign-in is refused at once with 503 (try again in a few seconds).
PASSWORD_THREADS = 2
MAX_WAITING = 16
_threads = ThreadPoolExecutor(max_workers=PASSWORD_THREADS, thread_name_prefix="password")
_queued = 0


class PasswordsBusy(CbwError):
    status_code = 503


async def _on_password_threads(work: Callable[[], T]) -> T:
    global _queued
    if _queued >= MAX_WAITING:
        raise PasswordsBusy("too many sign-ins at once; try again in a few seconds", retry_after=5)
    _queued += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_threads, work)
    finally:
        _queued -= 1


async def hash_password(password: str) -> str:
    return await _on_password_threads(lambda: _hasher.hash(password))


async def password_matches(password_hash: str | None, password: str) -> bool:
    """True when `password` is the one hashed; an account without a password (invited) never matches."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await _on_password_threads(check)


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 200:
        raise InvalidInput("password: at most 200 characters")
    return password


def actor_of(user_id: str) -> str:
    """What a person's actions are recorded as (`actor` in the timeline, `held_by` on a task): their id, as
    workflows.md § Events says; ids are drawn from 48 random bits, so it names no token too."""
    return user_id


@dataclass(frozen=True)
class Invitation:
    """What an invitation link names: `<tenant>.<user id>.<secret>`."""

    tenant: str
    user_id: str
    secret: str

    @classmethod
    def parse(cls, text: str) -> Invitation | None:
        parts = text.split(".")
        if len(parts) != 3 or not SLUG_RE.fullmatch(parts[0]) or not ID_RE.fullmatch(parts[1]) or not parts[2]:
            return None
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.tenant}.{self.user_id}.{self.secret}"


class UserService:
    def __init__(self, store: Store, clock: Clock, public_url: str = "http://localhost:8000") -> None:
        self.store = store
        self.clock = clock
        self.public_url = public_url.rstrip("/")

    async def create(self, principal: Principal | None, tenant: str, body: UserCreate) -> UserCreated:
        """`principal` None means the local CLI. Only admins add people, and only in their own tenant."""
        if principal is not None and principal.role not in (Role.ADMIN, Role.SUPERADMIN):
            raise Forbidden(f"the role {principal.role.value} may not add people")
        now = self.clock.now()
        user_id = new_id()
        password_hash = await hash_password(check_password(body.password)) if body.password else None
        secret = None if body.password else secrets.token_urlsafe(32)
        user = User(
            id=user_id,
            tenant=tenant,
            email=str(body.email),
            name=body.name,
            role=body.role,
            status=UserStatus.ACTIVE if password_hash else UserStatus.INVITED,
            created_at=now,
            invitation_expires_at=None if password_hash else now + timedelta(days=INVITATION_DAYS),
        )
        record = UserRecord(
            user=user, password_hash=password_hash, invitation_hash=hash_secret(secret) if secret else None
        )

        def run(tx: Tx) -> None:
            if tx.get_user_by_email(email_key(user.email)) is not None:
                raise Conflict(f"{user.email} already signs in to this tenant")
            tx.insert_user(record)

        await self.store.write(tenant, run)
        link = f"{self.public_url}/invite/{Invitation(tenant, user_id, secret)}" if secret else None
        return UserCreated(user=user, invitation_url=link)

    async def list(self, tenant: str, page: PageRequest) -> Page[User]:
        return await self.store.read(tenant, lambda tx: tx.list_users(page))

    async def get(self, tenant: str, user_id: str) -> User:
        record = await self.store.read(tenant, lambda tx: tx.get_user(user_id))
        if record is None:
            raise NotFound(f"no person with id {user_id!r}")
        return record.user

    async def change(self, tenant: str, user_id: str, body: UserPatch) -> User:
        """A new role or name, at once: a signed-in person's next request sees it (sessions read the person)."""

        def run(tx: Tx) -> User:
            record = tx.get_user(user_id)
            if record is None:
                raise NotFound(f"no person with id {user_id!r}")
            changes = body.model_dump(exclude_none=True)
            if not changes:
                return record.user
            record.user = record.user.model_copy(update=changes)
            tx.update_user(record)
            return record.user

        return await self.store.write(tenant, run)

    async def delete(self, tenant: str, user_id: str) -> None:
        """The person can no longer sign in, and every session of theirs ends now (the same transaction)."""

        def run(tx: Tx) -> None:
            if not tx.delete_user(user_id):
                raise NotFound(f"no person with id {user_id!r}")

        await self.store.write(tenant, run)

    # ---------------------------------------------------------------- invitations
    async def invitation(self, link: str) -> User:
        """The person a live invitation link is for; NotFound for a link that is unknown, used or past its 7 days."""
        invitation = Invitation.parse(link)
        record = None
        if invitation is not None:
            record = await self.store.read(invitation.tenant, lambda tx: tx.get_user(invitation.user_id))
        return self._live(record, invitation).user

    async def accept(self, link: str, password: str) -> User:
        """Set the password of the invitation's person (which ends the invitation): they may now sign in."""
        check_password(password)
        invitation = Invitation.parse(link)
        if invitation is None:
            raise NotFound("this invitation link is not valid")
        password_hash = await hash_password(password)

        def run(tx: Tx) -> User:
            record = self._live(tx.get_user(invitation.user_id), invitation)
            user = record.user.model_copy(update={"status": UserStatus.ACTIVE, "invitation_expires_at": None})
            tx.update_user(UserRecord(user=user, password_hash=password_hash, invitation_hash=None))
            return user

        return await self.store.write(invitation.tenant, run)

    def _live(self, record: UserRecord | None, invitation: Invitation | None) -> UserRecord:
        expires = record.user.invitation_expires_at if record else None
        if (
            record is None
            or invitation is None
            or record.invitation_hash is None
            or not hmac.compare_digest(record.invitation_hash, hash_secret(invitation.secret))
        ):
            raise NotFound("this invitation link is not valid, or has been used already")
        if expires is None or expires <= self.clock.now():
            raise NotFound("this invitation link has expired: ask your organiser for a new one")
        return record
