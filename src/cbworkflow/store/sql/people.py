"""People who sign in to the web pages, and their sessions, in SQL: the part of `SqlTx` that keeps one tenant's.

A person's address is unique in the tenant by its case-folded key (`uq_users_tenant_email_key`); a second person
with the same key is the same `Conflict` as any clash, raised by the insert itself (in a savepoint, so the
transaction stays usable). Removing a person removes their sessions along `ix_sessions_user`. The lookups that
span tenants (sign-in by address, the purge of expired sessions) are `SqlSystemTx`'s (`system.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from ...errors import Conflict
from ...models.users import SessionRecord, User, UserRecord
from .. import schema as s
from ..base import CLASH, Page, PageRequest
from . import rows

# What `update_user` leaves as stored: who the person is, and when they were added.
_USER_FIXED = ("tenant", "id", "email", "email_key", "created_at")
_SESSION_FIXED = ("tenant", "id", "user_id", "created_at")


class PeopleRows:
    """The users-and-sessions part of `SqlTx`, which gives the locking and paging helpers."""

    conn: Connection
    tenant: str
    _locked: Callable[[Select[Any]], Select[Any]]
    _page: Callable[[Select[Any], Any, PageRequest], tuple[list[Row[Any]], str | None]]

    def _insert_new(self, statement: Any) -> None:
        """Insert in a savepoint: a clash is `Conflict(CLASH)` here, and the transaction goes on."""
        try:
            with self.conn.begin_nested():
                self.conn.execute(statement)
        except IntegrityError as exc:
            raise Conflict(CLASH) from exc

    # ------------------------------------------------------------------ users
    def insert_user(self, record: UserRecord) -> None:
        self._insert_new(insert(s.users).values(**rows.user_values(self.tenant, record)))

    def _user(self, query: Select[Any]) -> UserRecord | None:
        row = self.conn.execute(self._locked(query)).first()
        return rows.user(row) if row else None

    def get_user(self, user_id: str) -> UserRecord | None:
        u = s.users.c
        return self._user(select(s.users).where(u.tenant == self.tenant, u.id == user_id))

    def get_user_by_email(self, email_key: str) -> UserRecord | None:
        u = s.users.c
        return self._user(select(s.users).where(u.tenant == self.tenant, u.email_key == email_key))

    def update_user(self, record: UserRecord) -> None:
        u = s.users.c
        values = rows.user_values(self.tenant, record)
        for fixed in _USER_FIXED:
            del values[fixed]
        statement = update(s.users).where(u.tenant == self.tenant, u.id == record.user.id).values(**values)
        if self.conn.execute(statement).rowcount != 1:
            raise RuntimeError(f"user {record.user.id} is not stored")

    def list_users(self, page: PageRequest) -> Page[User]:
        found, cursor = self._page(select(s.users).where(s.users.c.tenant == self.tenant), s.users, page)
        return Page([rows.user(row).user for row in found], cursor)

    def delete_user(self, user_id: str) -> bool:
        u, k = s.users.c, s.sessions.c
        if not self.conn.execute(delete(s.users).where(u.tenant == self.tenant, u.id == user_id)).rowcount:
            return False
        self.conn.execute(delete(s.sessions).where(k.tenant == self.tenant, k.user_id == user_id))
        return True

    # ------------------------------------------------------------------ sessions
    def insert_session(self, record: SessionRecord) -> None:
        self._insert_new(insert(s.sessions).values(**rows.session_values(self.tenant, record)))

    def get_session(self, session_id: str) -> SessionRecord | None:
        k = s.sessions.c
        query = select(s.sessions).where(k.tenant == self.tenant, k.id == session_id)
        row = self.conn.execute(self._locked(query)).first()
        return rows.session(row) if row else None

    def update_session(self, record: SessionRecord) -> None:
        k = s.sessions.c
        values = rows.session_values(self.tenant, record)
        for fixed in _SESSION_FIXED:
            del values[fixed]
        # A session ended meanwhile (signed out, its person removed) stays ended: nothing to keep alive.
        self.conn.execute(update(s.sessions).where(k.tenant == self.tenant, k.id == record.id).values(**values))

    def delete_session(self, session_id: str) -> bool:
        k = s.sessions.c
        return bool(self.conn.execute(delete(s.sessions).where(k.tenant == self.tenant, k.id == session_id)).rowcount)
