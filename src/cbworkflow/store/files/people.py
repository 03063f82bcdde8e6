"""People who sign in to the web pages, and their sessions, in the JSON-file store.

    <tenant>/users/<id>.json      the person: the user's fields, the key their address is matched by (`email_key`),
                                  the argon2 hash of the password and the SHA-256 of a pending invitation's secret
    <tenant>/sessions/<id>.json   a signed-in browser (the SHA-256 of its cookie's secret, never the secret)
    .user-emails/<sha256 of the email key>/<tenant>.json   which person of that tenant signs in with the address

A `.user-emails/` link is both the tenant's uniqueness check of addresses (read under its lock before a person is
added, as `.tokens/` is for token hashes) and the lookup by address across tenants: one folder per address, one
small file per tenant that has someone with it, so signing in reads a few files however many tenants there are.

Known costs, as this store is for small deployments (docs/performance.md): removing a person scans their tenant's
`sessions/` folder for theirs (never another tenant's), and the purge of expired sessions scans every tenant's.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import Conflict, InvalidInput
from ...models.users import SessionRecord, User, UserRecord, email_key
from ..base import CLASH, Page, PageRequest
from .docs import Doc, fields, newest_page
from .layout import STORED, Layout
from .transaction import FileTransaction

_HASHES = ("email_key", "password_hash", "invitation_hash")  # stored beside the user's fields, never shown
_USER_FIXED = ("tenant", "id", "email", "email_key", "created_at", STORED)  # what `update_user` leaves as stored
_SESSION_FIXED = ("tenant", "id", "user_id", "created_at")


def user_doc(tenant: str, record: UserRecord, stored: int) -> Doc:
    found = record.user.model_dump(mode="json")
    hashes = {"password_hash": record.password_hash, "invitation_hash": record.invitation_hash}
    return {**found, "tenant": tenant, "email_key": email_key(record.user.email), **hashes, STORED: stored}


def user_record(doc: Doc) -> UserRecord:
    found = User.model_validate(fields(doc, *_HASHES))
    return UserRecord(user=found, password_hash=doc.get("password_hash"), invitation_hash=doc.get("invitation_hash"))


def session_record(doc: Doc) -> SessionRecord:
    return SessionRecord.model_validate(fields(doc))


class FilePeople:
    """The users-and-sessions part of a tenant's `FileTx`."""

    txn: FileTransaction
    layout: Layout
    tenant: str
    home: Path

    def _person(self, folder: str, record_id: str) -> tuple[Path | None, Doc | None]:
        """A user's or session's path and content (locked in a write); (None, None) for an id that cannot exist."""
        path = self.layout.record(self.tenant, folder, record_id)
        return path, None if path is None else self.txn.get(path)

    def _email_holder(self, key: str) -> Doc | None:
        """The tenant's person whose address has the key `key`, through the `.user-emails/` link (both locked in a
        write); a link left to a person who no longer has the key names nobody."""
        link = self.txn.get(self.layout.user_email(key, self.tenant))
        if link is None or link.get("email_key") != key:
            return None
        _, doc = self._person("users", str(link.get("id")))
        return doc if doc is not None and doc.get("email_key") == key else None

    # ------------------------------------------------------------------ users
    def insert_user(self, record: UserRecord) -> None:
        path = self.layout.record(self.tenant, "users", record.user.id)
        if path is None:
            raise InvalidInput("user id: not a valid id")
        doc = user_doc(self.tenant, record, self.txn.stamp())
        key = doc["email_key"]
        if self.txn.get(path) is not None or self._email_holder(key) is not None:
            raise Conflict(CLASH)
        self.txn.put(path, doc)
        link = {"email_key": key, "tenant": self.tenant, "id": doc["id"]}
        self.txn.put(self.layout.user_email(key, self.tenant), link)

    def get_user(self, user_id: str) -> UserRecord | None:
        _, doc = self._person("users", user_id)
        return user_record(doc) if doc else None

    def get_user_by_email(self, email_key: str) -> UserRecord | None:
        doc = self._email_holder(email_key)
        return user_record(doc) if doc else None

    def update_user(self, record: UserRecord) -> None:
        path, old = self._person("users", record.user.id)
        if path is None or old is None:
            raise RuntimeError(f"user {record.user.id} is not stored")
        kept = {key: old[key] for key in _USER_FIXED}
        self.txn.put(path, {**user_doc(self.tenant, record, old[STORED]), **kept})

    def list_users(self, page: PageRequest) -> Page[User]:
        docs, cursor = newest_page(self.txn.scan(self.home / "users"), page)
        return Page([user_record(doc).user for doc in docs], cursor)

    def delete_user(self, user_id: str) -> bool:
        path, doc = self._person("users", user_id)
        if path is None or doc is None:
            return False
        self.txn.put(path, None)
        link = self.layout.user_email(doc["email_key"], self.tenant)
        found = self.txn.get(link)
        if found is not None and found.get("id") == user_id:
            self.txn.put(link, None)  # its folder may stay, empty: the address's next person uses it again
        sessions = self.home / "sessions"
        for session in list(self.txn.scan(sessions)):  # the tenant's only: a known cost (see above)
            if session.get("user_id") == user_id:
                self.txn.put(sessions / f"{session['id']}.json", None)
        return True

    # ------------------------------------------------------------------ sessions
    def insert_session(self, record: SessionRecord) -> None:
        path = self.layout.record(self.tenant, "sessions", record.id)
        if path is None:
            raise InvalidInput("session id: not a valid id")
        if self.txn.get(path) is not None:
            raise Conflict(CLASH)
        self.txn.put(path, {**record.model_dump(mode="json"), "tenant": self.tenant})

    def get_session(self, session_id: str) -> SessionRecord | None:
        _, doc = self._person("sessions", session_id)
        return session_record(doc) if doc else None

    def update_session(self, record: SessionRecord) -> None:
        path, old = self._person("sessions", record.id)
        if path is None or old is None:
            return  # ended meanwhile (signed out, its person removed): it stays ended
        kept = {key: old[key] for key in _SESSION_FIXED}
        self.txn.put(path, {**record.model_dump(mode="json"), **kept})

    def delete_session(self, session_id: str) -> bool:
        path, doc = self._person("sessions", session_id)
        if path is None or doc is None:
            return False
        self.txn.put(path, None)
        return True
