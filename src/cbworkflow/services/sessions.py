"""Signing in to the web pages: email and password to a server-side session, the session back to a caller, and
sign-out.

A session lives in the store (so sign-out and a person's removal end it at once, in every process) and is named by
the cookie `<tenant>.<session id>.<secret>`: the store keeps only the secret's SHA-256. A session in use is kept
alive for `lifetime` after its last use, written at most every few minutes. Failed sign-ins are limited per
address and per account (`SignInLimits`), in this process.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..clock import Clock
from ..errors import CbwError
from ..ids import ID_RE, SLUG_RE, new_id
from ..models.access import Principal
from ..models.users import SessionRecord, User, UserRecord, UserStatus, email_key
from ..store.base import Store, SystemTx, Tx
from .access import hash_secret
from .users import actor_of, password_matches

PURGE_EVERY = timedelta(hours=1)  # expired sessions are forgotten by a sign-in at most this often
REFRESH_EVERY = timedelta(minutes=5)  # a session's expiry moves forward at most this often (one write)
LONGEST = timedelta(days=7)  # a session ends this long after sign-in however much it is used (a stolen cookie too)
MAX_ACCOUNTS_PER_EMAIL = 20  # one address may sign in to several tenants; this many at most are tried
CHECKS_AT_LEAST = 2  # password checks a sign-in makes whatever the address (see sign_in)


class SignInThrottled(CbwError):
    status_code = 429


@dataclass(frozen=True)
class SignedIn:
    """A new session: `cookie` is the value to set (shown to this browser only), `user` who it is."""

    cookie: str
    user: User
    csrf_token: str


@dataclass(frozen=True)
class ChooseTenant:
    """The address and password fit accounts in several tenants: the person picks one (ids and names)."""

    tenants: list[tuple[str, str]]


@dataclass(frozen=True)
class WebCaller:
    """Who a page is for: the person, the caller the services see, and the token their forms must carry."""

    user: User
    principal: Principal
    session_id: str
    csrf_token: str


class SignInLimits:
    """At most `per_account` failed sign-ins per address typed, and `per_client` per client address, in any
    `window`: past that, sign-ins from there are refused until the oldest failure leaves the window.

    Each attempt is counted as it starts (`reserve`, under the lock), so a burst of simultaneous tries is limited
    like a sequence of them; a sign-in that succeeds takes its own attempt back (`succeeded`)."""

    def __init__(
        self, per_account: int = 5, per_client: int = 20, window: float = 900.0, tracked: int = 50_000
    ) -> None:
        self.per_account = per_account
        self.per_client = per_client
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._tracked = tracked
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> deque[float]:
        times = self._failures.pop(key, None) or deque(maxlen=max(self.per_account, self.per_client))
        while times and times[0] <= now - self.window:
            times.popleft()
        self._failures[key] = times  # most recently used last: the oldest keys are forgotten first
        return times

    def reserve(self, account: str, client: str) -> float:
        """Count an attempt for the address and the client, or raise SignInThrottled when either is at its
        limit (nothing counted then). Returns the attempt's stamp, for `succeeded`."""
        now = time.monotonic()
        with self._lock:
            mine, theirs = self._live(f"account:{account}", now), self._live(f"client:{client}", now)
            waits = [
                times[0] + self.window - now
                for times, limit in ((mine, self.per_account), (theirs, self.per_client))
                if len(times) >= limit
            ]
            if not waits:
                mine.append(now)
                theirs.append(now)
            while len(self._failures) > self._tracked:
                self._failures.popitem(last=False)
        if waits:
            wait = max(waits)
            minutes = max(1, round(wait / 60))
            raise SignInThrottled(
                f"too many failed sign-ins; try again in {minutes} minute{'s' if minutes > 1 else ''}",
                retry_after=int(wait) + 1,
            )
        return now

    def succeeded(self, account: str, client: str, stamp: float) -> None:
        """The attempt made at `stamp` was right: it does not count as a failure."""
        with self._lock:
            for key in (f"account:{account}", f"client:{client}"):
                times = self._failures.get(key)
                if times is not None and stamp in times:
                    times.remove(stamp)


def _parse_cookie(value: str) -> tuple[str, str, str] | None:
    parts = value.split(".")
    if len(parts) != 3 or not SLUG_RE.fullmatch(parts[0]) or not ID_RE.fullmatch(parts[1]) or not parts[2]:
        return None
    return parts[0], parts[1], parts[2]


class SessionService:
    def __init__(self, store: Store, clock: Clock, lifetime: timedelta, limits: SignInLimits | None = None) -> None:
        self.store = store
        self.clock = clock
        self.lifetime = lifetime
        self.limits = limits or SignInLimits()
        self._last_purge: datetime | None = None

    async def sign_in(
        self, email: str, password: str, client: str, tenant: str | None = None
    ) -> SignedIn | ChooseTenant | None:
        """A new session when the address and password fit one account (or the one in `tenant`); the tenants to
        choose from when they fit several; None when they fit none. Every attempt counts against the address and
        the client until it succeeds (SignInThrottled past the limits, before any password is checked)."""
        key = email_key(email)[:320]
        stamp = self.limits.reserve(key, client)
        found: list[UserRecord] = await self.store.system_read(
            lambda stx: stx.find_users_by_email(key, MAX_ACCOUNTS_PER_EMAIL)
        )
        active = [r for r in found if r.user.status is UserStatus.ACTIVE]
        candidates = [r for r in active if tenant in (None, r.user.tenant)]
        # At least two checks, side by side: an address in one tenant costs what an address in two costs, and
        # an unknown one the same (no hint of how many campaigns it signs in to).
        hashes = [r.password_hash for r in candidates] + [None] * max(0, CHECKS_AT_LEAST - len(candidates))
        fits = await asyncio.gather(*(password_matches(h, password) for h in hashes))
        matching = [r for r, fit in zip(candidates, fits, strict=False) if fit]
        if not matching:
            return None
        if len(matching) == len(active):  # right for every account of the address: not a guess at another's
            self.limits.succeeded(key, client, stamp)
        await self.purge_if_due()
        if len(matching) > 1:
            names = await self.store.system_read(lambda stx: _tenant_names(stx, [r.user.tenant for r in matching]))
            return ChooseTenant(names)
        return await self.open(matching[0].user)

    async def open(self, user: User) -> SignedIn:
        """A new session for `user` (signed in, or just done choosing a password)."""
        now = self.clock.now()
        secret = secrets.token_urlsafe(32)
        record = SessionRecord(
            id=new_id(),
            tenant=user.tenant,
            user_id=user.id,
            secret_hash=hash_secret(secret),
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + self.lifetime,
        )
        await self.store.write(user.tenant, lambda tx: tx.insert_session(record))
        return SignedIn(f"{user.tenant}.{record.id}.{secret}", user, record.csrf_token)

    async def caller(self, cookie: str | None) -> WebCaller | None:
        """The person a session cookie belongs to, or None: no cookie, a forged or expired one, a signed-out
        session, a removed person. Keeps a session in use alive."""
        parsed = _parse_cookie(cookie) if cookie else None
        if parsed is None:
            return None
        tenant, session_id, secret = parsed
        now = self.clock.now()

        def run(tx: Tx) -> tuple[SessionRecord, User] | None:
            session = tx.get_session(session_id)
            if session is None or not hmac.compare_digest(session.secret_hash, hash_secret(secret)):
                return None
            if session.expires_at <= now or session.created_at + LONGEST <= now:
                return None
            user = tx.get_user(session.user_id)
            if user is None or user.user.status is not UserStatus.ACTIVE:
                return None
            return session, user.user

        found = await self.store.read(tenant, run)
        if found is None:
            return None
        session, user = found
        if session.expires_at - now < self.lifetime - REFRESH_EVERY:
            renewed = session.model_copy(update={"expires_at": min(now + self.lifetime, session.created_at + LONGEST)})
            await self.store.write(tenant, lambda tx: tx.update_session(renewed))
        principal = Principal(token_id=actor_of(user.id), tenant=user.tenant, role=user.role.role, name=user.name)
        return WebCaller(user, principal, session.id, session.csrf_token)

    async def sign_out(self, caller: WebCaller) -> None:
        await self.store.write(caller.user.tenant, lambda tx: tx.delete_session(caller.session_id))

    async def purge_if_due(self) -> int:
        """Forget expired sessions in every tenant, at most every PURGE_EVERY; returns how many."""
        now = self.clock.now()
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return 0
        self._last_purge = now
        return await self.store.system_write(lambda stx: stx.purge_sessions(now))


def _tenant_names(stx: SystemTx, tenant_ids: list[str]) -> list[tuple[str, str]]:
    names = []
    for tenant_id in tenant_ids:
        tenant = stx.get_tenant(tenant_id)
        names.append((tenant_id, tenant.name if tenant else tenant_id))
    return names
