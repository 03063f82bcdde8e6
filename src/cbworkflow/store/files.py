"""The JSON-file store (`json:///path`): one readable, pretty-printed JSON file per entity, one folder per tenant.

    <root>/store.json                       the format version
    <root>/<tenant>/tenant.json
    <root>/<tenant>/contacts/<id>.json      the contact, with its own (contact-level) timeline events
    <root>/<tenant>/instances/<id>.json     the instance and its timeline
    <root>/<tenant>/templates/<id>.json
    <root>/<tenant>/template-versions/<template id>/<version>.json
    <root>/<tenant>/snapshots/<hash>.json   frozen node maps, shared by instances of the same graph
    <root>/<tenant>/tokens/<id>.json        a token with the SHA-256 of its secret (never the secret)
    <root>/<tenant>/contact-instances/<contact id>.json   instance ids of a contact (kept after the contact goes)
    <root>/<tenant>/external-ids/<sha256>.json            which contact holds an external id
    <root>/<tenant>/idempotency/<sha256>.json
    <root>/.tokens/<secret hash>.json       token lookup by hash, across tenants
    <root>/.due/<wake time>.<tenant>.<id>.json   instances whose work comes due, in time order (for the worker)
    <root>/.journal/                        multi-file commits in flight

Why it is safe for several threads and processes on one machine:
- Locks are per entity: `<dir>/.<name>.lock`, taken with `flock` through portalocker before an entity is read for a
  write, held to the end of the transaction, and removed (while still held) after use. A lock is taken
  blocking only when the transaction holds no other; otherwise it is tried, and a busy lock makes the transaction
  let go of everything, wait for that lock, and run again from the start (its function has no side effects), so
  transactions can never deadlock.
- Each file is replaced atomically: temp file, fsync, `os.replace`, fsync of the folder.
- A commit touching several files first writes them all into one journal file (atomically), applies them, then
  deletes the journal. A process killed half way leaves a journal whose lock nobody holds; the next transaction
  that meets it replays it (under the entities' locks) before going on, so a commit is applied whole or not at all.
- Reads take no locks: each file is read whole and valid, but a read spanning files is not one snapshot.

File I/O runs on thread pools, never on the event loop. Lists, search and the work queue read every file of the
folder they list (keeping only a page in memory): see docs/performance.md for where that stops being a good
choice. The worker's questions (what is due, and when next) read only the `.due/` folder's names.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import json
import os
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import portalocker
from pydantic import TypeAdapter

from ..errors import Conflict, InvalidInput, StoreError
from ..ids import SLUG_RE
from ..models.access import Tenant, Token
from ..models.contacts import Contact
from ..models.events import Event
from ..models.instances import MOVABLE, TERMINAL, WorkflowInstance
from ..models.templates import Node, TemplateVersion, WorkflowTemplate
from .base import (
    BAD_CURSOR,
    ContactFilter,
    DueWork,
    IdempotentResponse,
    InstanceFilter,
    Page,
    PageRequest,
    Snapshot,
    SnapshotCache,
    Store,
    TaskFilter,
    TokenRecord,
    Tx,
    cursor_int,
    decode_cursor,
    encode_cursor,
)
from .phones import phone_digits, phone_query_digits
from .sql import task_action

T = TypeVar("T")
Doc = dict[str, Any]

FORMAT = 1
STORED = "_stored"  # a per-record stamp of when it was first stored: breaks ties in lists, orders search results
TIMELINE = "timeline"
_NODE_MAP: TypeAdapter[dict[str, Node]] = TypeAdapter(dict[str, Node])
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_CLASH = "the change clashes with an existing record (a duplicate id, external id or key)"
_MOVABLE = frozenset(status.value for status in MOVABLE)
_WORKER = ("worker_id", "worker_lease_until")  # the worker's lease on an instance's due work: not part of the model
_DUE_ENTRY = re.compile(r"(\d{17})\.([a-z0-9][a-z0-9_-]{0,63})\.(.+)\.json")  # <wake, µs>.<tenant>.<instance id>


class _Busy(Exception):
    """A lock another transaction holds: let go of everything, wait for it, run again."""

    def __init__(self, lock: Path) -> None:
        self.lock = lock


class _Interrupted(Exception):
    """A journal left by a process that died: replay it, then run again."""


# ---------------------------------------------------------------------------------------------- files and locks
def _name(value: str) -> str | None:
    """`value` as a file name, or None when it cannot be one (such a record cannot exist)."""
    return value if _SAFE_NAME.match(value) and ".." not in value else None


def _hashed(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _encode(doc: Any, *, pretty: bool = True) -> bytes:
    text = json.dumps(doc, indent=2 if pretty else None, ensure_ascii=False, separators=None if pretty else (",", ":"))
    return (text + "\n").encode()


def _read(path: Path) -> Any | None:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return json.loads(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """Create `path` and missing parents (private), making each new entry durable in its parent."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        return
    _fsync_dir(path.parent)


def _replace(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically: a reader sees the old file or the new one, never part of either."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _lock_file(path: Path) -> Path:
    return path.parent / f".{path.stem}.lock"


def _try_lock(lock: Path) -> int | None:
    """Take the lock file `lock` without waiting: its descriptor, or None when someone holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            _make_dirs(lock.parent)
            continue
        try:
            portalocker.lock(fd, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.AlreadyLocked:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder before us may have removed the file: then our lock is on an orphan, and worthless
            current = os.stat(lock, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            return fd
        os.close(fd)


def _wait_lock(lock: Path, deadline: float) -> int:
    delay = 0.0005
    while (fd := _try_lock(lock)) is None:
        if time.monotonic() > deadline:
            raise StoreError("the store is busy (a record stayed locked too long); try again")
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 0.02)
    return fd


def _unlock(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go: whoever waited on it retries on a new file."""
    try:
        lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _cursor_key(cursor: str | None) -> tuple[datetime, int] | None:
    if cursor is None:
        return None
    when, stored = decode_cursor(cursor, 2)
    try:
        when_dt = datetime.fromisoformat(when)
    except (TypeError, ValueError):
        raise InvalidInput(BAD_CURSOR) from None
    if when_dt.tzinfo is None:
        raise InvalidInput(BAD_CURSOR)
    return when_dt, cursor_int(stored)


def _newest_page(docs: Iterable[Doc], page: PageRequest) -> tuple[list[Doc], str | None]:
    """The page after `page.cursor` in (created_at, stored) newest-first order; keeps only a page in memory."""
    after = _cursor_key(page.cursor)
    keyed = ((_time(doc["created_at"]), doc[STORED], doc) for doc in docs)
    if after is not None:
        keyed = (item for item in keyed if (item[0], item[1]) < after)
    best = heapq.nlargest(page.limit + 1, keyed, key=lambda item: (item[0], item[1]))
    more = len(best) > page.limit
    best = best[: page.limit]
    cursor = encode_cursor(best[-1][0].isoformat(), best[-1][1]) if more else None
    return [doc for _, _, doc in best], cursor


def _fields(doc: Doc, *drop: str) -> Doc:
    return {k: v for k, v in doc.items() if k not in (STORED, *drop)}


# ---------------------------------------------------------------------------------------------- transaction
class FileTx(Tx):
    """One transaction: entity locks taken as records are read for a write, changes kept until commit."""

    def __init__(self, store: JsonFileStore, tenant: str, *, writing: bool) -> None:
        if not SLUG_RE.match(tenant):
            raise InvalidInput(f"tenant {tenant!r}: not a tenant id")
        self.store = store
        self.tenant = tenant
        self.writing = writing
        self.root = store.root
        self.home = store.root / tenant
        self.locks: dict[Path, int] = {}
        self.seen: dict[Path, Any | None] = {}  # files read under their lock
        self.pending: dict[Path, Any | None] = {}  # new content; None deletes the file
        self.after_commit: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ plumbing
    def _lock(self, path: Path) -> None:
        lock = _lock_file(path)
        if lock in self.locks:
            return
        if self.locks:
            fd = _try_lock(lock)
            if fd is None:
                raise _Busy(lock)
        else:  # holding nothing, waiting cannot deadlock
            fd = _wait_lock(lock, self.store.deadline())
        self.locks[lock] = fd

    def _get(self, path: Path) -> Any | None:
        """The file's content as this transaction sees it; in a write, locked first."""
        if path in self.pending:
            return self.pending[path]
        if not self.writing:
            return _read(path)
        self._lock(path)
        if path not in self.seen:
            self.seen[path] = _read(path)
        return self.seen[path]

    def _peek(self, path: Path) -> Any | None:
        """The content without locking it (list scans and checks that need no lock)."""
        if path in self.pending:
            return self.pending[path]
        if path in self.seen:
            return self.seen[path]
        return _read(path)

    def _lock_if_free(self, path: Path) -> bool:
        """Lock `path` unless another transaction holds it (the `SKIP LOCKED` of claims): never waits."""
        lock = _lock_file(path)
        if lock in self.locks:
            return True
        fd = _try_lock(lock)
        if fd is None:
            return False
        self.locks[lock] = fd
        return True

    def _put(self, path: Path, doc: Any | None) -> None:
        if not self.writing:
            raise RuntimeError("a read transaction cannot change the store")
        self._lock(path)
        self.pending[path] = doc

    def _scan(self, folder: Path) -> Iterator[Doc]:
        """Every record in `folder`, as this transaction sees it (changes made in it included)."""
        names: set[Path] = set()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.name.endswith(".json"):
                        continue
                    path = folder / entry.name
                    names.add(path)
                    doc = self._peek(path)
                    if doc is not None:
                        yield doc
        except FileNotFoundError:
            pass
        for path, doc in list(self.pending.items()):  # created in this transaction
            if path.parent == folder and path not in names and doc is not None:
                yield doc

    def _stamp(self) -> int:
        return self.store.stamp()

    def release(self) -> None:
        for lock, fd in self.locks.items():
            _unlock(lock, fd)
        self.locks.clear()

    def commit(self) -> None:
        if not self.pending:
            return
        if self.store.interrupted():  # met a dead process's half-applied commit: replay it, then run again
            raise _Interrupted
        self.store.apply([(path, None if doc is None else _encode(doc)) for path, doc in self.pending.items()])
        for hook in self.after_commit:
            hook()

    # ------------------------------------------------------------------ paths
    def _in(self, folder: str, name: str | None) -> Path | None:
        return None if name is None else self.home / folder / f"{name}.json"

    def _contact_path(self, contact_id: str) -> Path | None:
        return self._in("contacts", _name(contact_id))

    def _instance_path(self, instance_id: str) -> Path | None:
        return self._in("instances", _name(instance_id))

    def _template_path(self, template_id: str) -> Path | None:
        return self._in("templates", _name(template_id))

    def _links_path(self, contact_id: str) -> Path | None:
        return self._in("contact-instances", _name(contact_id))

    def _external_path(self, external_id: str) -> Path:
        return self.home / "external-ids" / f"{_hashed(external_id)}.json"

    def _versions_dir(self, template_id: str) -> Path | None:
        name = _name(template_id)
        return None if name is None else self.home / "template-versions" / name

    def _idempotency_path(self, route: str, key: str) -> Path:
        return self.home / "idempotency" / f"{_hashed(route, key)}.json"

    @staticmethod
    def _required(path: Path | None, what: str) -> Path:
        if path is None:
            raise InvalidInput(f"{what}: not a valid id")
        return path

    # ------------------------------------------------------------------ tenants and tokens
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        name = _name(tenant_id)
        doc = None if name is None or not SLUG_RE.match(name) else self._peek(self.root / name / "tenant.json")
        return Tenant.model_validate(_fields(doc)) if doc else None

    def insert_tenant(self, tenant: Tenant) -> None:
        if not SLUG_RE.match(tenant.id):
            raise InvalidInput(f"tenant {tenant.id!r}: not a tenant id")
        path = self.root / tenant.id / "tenant.json"
        if self._get(path) is not None:
            raise Conflict(_CLASH)
        self._put(path, tenant.model_dump(mode="json"))

    def count_tenants(self) -> int:
        return sum(1 for folder in self.store.tenant_dirs() if (folder / "tenant.json").exists())

    def _token_path(self, tenant: str, token_id: str) -> Path | None:
        name = _name(token_id)
        return None if name is None else self.root / tenant / "tokens" / f"{name}.json"

    @staticmethod
    def _token_record(doc: Doc) -> TokenRecord:
        return TokenRecord(Token.model_validate(_fields(doc, "secret_hash")), doc["secret_hash"])

    def find_token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        name = _name(secret_hash)
        link = None if name is None else self._peek(self.root / ".tokens" / f"{name}.json")
        if link is None or not SLUG_RE.match(link["tenant"]):
            return None
        path = self._token_path(link["tenant"], link["id"])
        doc = None if path is None else self._peek(path)
        return self._token_record(doc) if doc and doc["secret_hash"] == secret_hash else None

    def insert_token(self, record: TokenRecord) -> None:
        token = record.token
        path = self._required(self._token_path(token.tenant, token.id), "token id")
        name = _name(record.secret_hash)
        if name is None:
            raise InvalidInput("token hash: not a hash")
        link = self.root / ".tokens" / f"{name}.json"
        if self._get(path) is not None or self._get(link) is not None:
            raise Conflict(_CLASH)
        self._put(path, {**token.model_dump(mode="json"), "secret_hash": record.secret_hash, STORED: self._stamp()})
        self._put(link, {"tenant": token.tenant, "id": token.id})

    def get_token_record(self, token_id: str) -> TokenRecord | None:
        path = self._token_path(self.tenant, token_id)
        doc = None if path is None else self._get(path)
        return self._token_record(doc) if doc else None

    def list_tokens(self, page: PageRequest) -> Page[Token]:
        docs, cursor = _newest_page(self._scan(self.home / "tokens"), page)
        return Page([self._token_record(doc).token for doc in docs], cursor)

    def delete_token(self, token_id: str) -> bool:
        path = self._token_path(self.tenant, token_id)
        doc = None if path is None else self._get(path)
        if path is None or doc is None:
            return False
        self._put(path, None)
        name = _name(doc["secret_hash"])
        if name is not None:
            self._put(self.root / ".tokens" / f"{name}.json", None)
        return True

    # ------------------------------------------------------------------ contacts
    def _links(self, contact_id: str, *, lock: bool = False) -> list[str]:
        path = self._links_path(contact_id)
        if path is None:
            return []
        doc = self._get(path) if lock else self._peek(path)
        return list(doc["instance_ids"]) if doc else []

    def _contact(self, doc: Doc) -> Contact:
        return Contact.model_validate({**_fields(doc, TIMELINE), "workflow_instance_ids": self._links(doc["id"])})

    def get_contact(self, contact_id: str) -> Contact | None:
        path = self._contact_path(contact_id)
        doc = None if path is None else self._get(path)
        return self._contact(doc) if doc else None

    def get_contact_by_external_id(self, external_id: str) -> Contact | None:
        link = self._get(self._external_path(external_id))
        if link is None or link["external_id"] != external_id:
            return None
        contact = self.get_contact(link["contact_id"])
        return contact if contact is not None and contact.external_id == external_id else None

    def _contact_doc(self, contact: Contact, stored: int, timeline: list[Any]) -> Doc:
        doc = contact.model_dump(mode="json", exclude={"workflow_instance_ids"})
        return {**doc, TIMELINE: timeline, STORED: stored}

    def _claim_external_id(self, external_id: str | None, contact_id: str) -> None:
        if external_id is None:
            return
        path = self._external_path(external_id)
        taken = self._get(path)
        if taken is not None and taken["contact_id"] != contact_id:
            raise Conflict(_CLASH)
        self._put(path, {"external_id": external_id, "contact_id": contact_id})

    def _free_external_id(self, external_id: str | None, contact_id: str) -> None:
        if external_id is None:
            return
        path = self._external_path(external_id)
        taken = self._get(path)
        if taken is not None and taken["contact_id"] == contact_id:
            self._put(path, None)

    def insert_contact(self, contact: Contact) -> None:
        path = self._required(self._contact_path(contact.id), "contact id")
        if self._get(path) is not None:
            raise Conflict(_CLASH)
        self._claim_external_id(contact.external_id, contact.id)
        self._put(path, self._contact_doc(contact, self._stamp(), []))

    def update_contact(self, contact: Contact) -> None:
        path = self._required(self._contact_path(contact.id), "contact id")
        old = self._get(path)
        if old is None:
            raise RuntimeError(f"contact {contact.id} is not stored")
        if old.get("external_id") != contact.external_id:
            self._free_external_id(old.get("external_id"), contact.id)
            self._claim_external_id(contact.external_id, contact.id)
        self._put(path, self._contact_doc(contact, old[STORED], old[TIMELINE]))

    def delete_contact(self, contact_id: str) -> bool:
        path = self._contact_path(contact_id)
        old = None if path is None else self._get(path)
        if path is None or old is None:
            return False
        self._free_external_id(old.get("external_id"), contact_id)
        self._put(path, None)  # its own events go with it; its instances' events stay with the instances
        return True

    def list_contacts(self, where: ContactFilter, page: PageRequest) -> Page[Contact]:
        wanted = set(where.tags)

        def matches(doc: Doc) -> bool:
            return (
                (where.county is None or doc.get("county") == where.county)
                and (where.organization is None or doc.get("organization") == where.organization)
                and (where.external_id is None or doc.get("external_id") == where.external_id)
                and wanted <= set(doc.get("tags") or ())
            )

        docs, cursor = _newest_page(filter(matches, self._scan(self.home / "contacts")), page)
        return Page([self._contact(doc) for doc in docs], cursor)

    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """A scan, newest stored first. `query` has 3+ characters."""
        text = query.strip().lower()
        digits = phone_query_digits(query)
        after = None if page.cursor is None else cursor_int(decode_cursor(page.cursor, 1)[0])

        def matches(doc: Doc) -> bool:
            if after is not None and doc[STORED] >= after:
                return False
            if text in (doc.get("name") or "").lower() or text in (doc.get("email") or "").lower():
                return True
            if digits is None:
                return False
            found = phone_digits(doc.get("phone"), doc.get("phone_e164"))
            return found is not None and digits in found

        best = heapq.nlargest(page.limit + 1, filter(matches, self._scan(self.home / "contacts")), key=_by_stored)
        more = len(best) > page.limit
        best = best[: page.limit]
        return Page([self._contact(doc) for doc in best], encode_cursor(best[-1][STORED]) if more else None)

    # ------------------------------------------------------------------ templates
    def get_template(self, template_id: str) -> WorkflowTemplate | None:
        path = self._template_path(template_id)
        doc = None if path is None else self._get(path)
        return WorkflowTemplate.model_validate(_fields(doc)) if doc else None

    def insert_template(self, template: WorkflowTemplate) -> None:
        path = self._required(self._template_path(template.id), "template id")
        if self._get(path) is not None:
            raise Conflict(_CLASH)
        self._put(path, {**template.model_dump(mode="json"), STORED: self._stamp()})

    def update_template(self, template: WorkflowTemplate) -> None:
        path = self._required(self._template_path(template.id), "template id")
        old = self._get(path)
        if old is None:
            raise RuntimeError(f"template {template.id} is not stored")
        self._put(path, {**template.model_dump(mode="json"), "created_at": old["created_at"], STORED: old[STORED]})

    def delete_template(self, template_id: str) -> bool:
        path = self._template_path(template_id)
        if path is None or self._get(path) is None:
            return False
        self._put(path, None)
        versions = self._versions_dir(template_id)
        assert versions is not None
        for doc in list(self._scan(versions)):
            version = self._version_path(template_id, str(doc.get("version")))
            if version is not None:
                self._put(version, None)
        self.after_commit.append(lambda: _remove_empty_dir(versions))
        return True

    def list_templates(self, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]:
        docs = self._scan(self.home / "templates")
        if tag is not None:
            docs = (doc for doc in docs if tag in (doc.get("tags") or ()))
        found, cursor = _newest_page(docs, page)
        return Page([WorkflowTemplate.model_validate(_fields(doc)) for doc in found], cursor)

    def _version_path(self, template_id: str, version: str) -> Path | None:
        folder = self._versions_dir(template_id)
        name = _name(version)
        return None if folder is None or name is None else folder / f"{name}.json"

    def insert_template_version(self, version: TemplateVersion) -> None:
        path = self._required(self._version_path(version.template_id, version.version), "template version")
        if self._get(path) is not None:
            raise Conflict(_CLASH)
        self._put(path, {**version.model_dump(mode="json"), STORED: self._stamp()})

    def delete_template_version(self, template_id: str, version: str) -> None:
        path = self._version_path(template_id, version)
        if path is not None and self._get(path) is not None:
            self._put(path, None)

    def list_template_versions(self, template_id: str, page: PageRequest) -> Page[TemplateVersion]:
        folder = self._versions_dir(template_id)
        if folder is None:
            return Page([], None)
        docs, cursor = _newest_page(self._scan(folder), page)
        return Page([TemplateVersion.model_validate(_fields(doc)) for doc in docs], cursor)

    # ------------------------------------------------------------------ instances
    def put_snapshot(self, snapshot: Snapshot) -> None:
        path = self._required(self._in("snapshots", _name(snapshot.id)), "snapshot id")
        if self._peek(path) is None:  # content-addressed: a copy written at the same time is the same
            self._put(path, {"id": snapshot.id, "start_node": snapshot.start_node, "nodes": snapshot.nodes})

    def _snapshot(self, snapshot_id: str) -> tuple[str, dict[str, Node]]:
        cached = self.store.snapshots.get((self.tenant, snapshot_id))
        if cached is not None:
            return cached
        name = _name(snapshot_id)
        doc = None if name is None else self._peek(self.home / "snapshots" / f"{name}.json")
        if doc is None:
            raise StoreError(f"the frozen nodes {snapshot_id} of an instance are missing from the store")
        value = (doc["start_node"], _NODE_MAP.validate_python(doc["nodes"]))
        self.store.snapshots.put((self.tenant, snapshot_id), value)
        return value

    def _instance(self, doc: Doc) -> WorkflowInstance:
        start_node, nodes = self._snapshot(doc["snapshot_id"])
        fields = _fields(doc, TIMELINE, "snapshot_id", *_WORKER)
        return WorkflowInstance.model_validate({**fields, "start_node": start_node, "nodes": nodes})

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        path = self._instance_path(instance_id)
        doc = None if path is None else self._get(path)
        return self._instance(doc) if doc else None

    @staticmethod
    def _instance_fields(instance: WorkflowInstance) -> Doc:
        return instance.model_dump(mode="json", exclude={"nodes", "timeline", "start_node"})

    def insert_instance(self, instance: WorkflowInstance, snapshot_id: str) -> None:
        path = self._required(self._instance_path(instance.id), "instance id")
        if self._get(path) is not None:
            raise Conflict(_CLASH)
        links = self._required(self._links_path(instance.contact_id), "contact id")
        doc = {**self._instance_fields(instance), "snapshot_id": snapshot_id, TIMELINE: [], STORED: self._stamp()}
        self._put(path, doc)
        self._sync_due(None, doc)
        self._put(links, {"instance_ids": [*self._links(instance.contact_id, lock=True), instance.id]})

    def update_instance(self, instance: WorkflowInstance) -> None:
        path = self._required(self._instance_path(instance.id), "instance id")
        old = self._get(path)
        if old is None or old["revision"] != instance.revision - 1:
            raise RuntimeError(f"instance {instance.id} changed under a write lock (revision {instance.revision})")
        fixed = {key: old[key] for key in ("contact_id", "template_id", "template_version", "created_at")}
        keep = {"snapshot_id": old["snapshot_id"], TIMELINE: old[TIMELINE], STORED: old[STORED]}
        doc = {**self._instance_fields(instance), **fixed, **keep}
        self._put(path, doc)
        self._sync_due(old, doc)

    def delete_instance(self, instance_id: str) -> bool:
        path = self._instance_path(instance_id)
        old = None if path is None else self._get(path)
        if path is None or old is None:
            return False
        self._put(path, None)
        self._sync_due(old, None)
        links = self._links_path(old["contact_id"])
        if links is not None:
            kept = [i for i in self._links(old["contact_id"], lock=True) if i != instance_id]
            self._put(links, {"instance_ids": kept} if kept else None)
        return True

    def _instances_of(self, contact_id: str) -> Iterator[Doc]:
        for instance_id in self._links(contact_id):
            path = self._instance_path(instance_id)
            doc = None if path is None else self._peek(path)
            if doc is not None:
                yield doc

    def list_instances(self, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]:
        docs = self._scan(self.home / "instances") if where.contact_id is None else self._instances_of(where.contact_id)
        wanted = set(where.tags)
        checks = (
            ("contact_id", where.contact_id),
            ("template_id", where.template_id),
            ("status", where.status),
            ("current_node", where.current_node),
            ("waiting_for", where.waiting_for),
        )

        def matches(doc: Doc) -> bool:
            return all(value is None or doc.get(key) == value for key, value in checks) and wanted <= set(
                doc.get("tags") or ()
            )

        found, cursor = _newest_page(filter(matches, docs), page)
        return Page([self._instance(doc) for doc in found], cursor)

    def unfinished_instances_of_contact(self, contact_id: str) -> list[WorkflowInstance]:
        finished = {status.value for status in TERMINAL}
        found = []
        for instance_id in self._links(contact_id):
            path = self._instance_path(instance_id)
            doc = None if path is None else self._get(path)
            if doc is not None and doc["status"] not in finished:
                found.append(doc)
        found.sort(key=lambda doc: (_time(doc["created_at"]), doc[STORED]))
        return [self._instance(doc) for doc in found]

    # ------------------------------------------------------------------ the worker's due work
    def _due_entry(self, doc: Doc | None) -> Path | None:
        """The `.due/` entry of an instance whose work can come due. It is named by the wake time, so listing that
        folder gives the due work in order without reading every instance."""
        if doc is None or doc["status"] not in _MOVABLE or not doc.get("wake_at"):
            return None
        wake_us = max(0, int(_time(doc["wake_at"]).timestamp() * 1_000_000))
        return self.root / ".due" / f"{wake_us:017d}.{doc['tenant']}.{doc['id']}.json"

    def _sync_due(self, old: Doc | None, new: Doc | None) -> None:
        before, after = self._due_entry(old), self._due_entry(new)
        if before != after:
            if before is not None:
                self._put(before, None)
            if after is not None:
                self._put(after, {"tenant": new["tenant"] if new else None, "id": new["id"] if new else None})

    def _due(self) -> list[tuple[datetime, str, str, Path]]:
        """Every `.due/` entry as (wake time, tenant, instance id, entry), earliest first; stray files are ignored."""
        try:
            names = sorted(os.listdir(self.root / ".due"))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _DUE_ENTRY.fullmatch(name)
            if match is None or _name(match[3]) is None:
                continue
            wake = datetime.fromtimestamp(int(match[1]) / 1_000_000, UTC)
            found.append((wake, match[2], match[3], self.root / ".due" / name))
        return found

    @staticmethod
    def _lease_free(doc: Doc, now: datetime) -> bool:
        until = doc.get("worker_lease_until")
        return until is None or _time(until) < now

    def claim_due(self, now: datetime, worker_id: str, lease_until: datetime, limit: int) -> list[DueWork]:
        claimed: list[DueWork] = []
        for wake, tenant, instance_id, entry in self._due():
            if wake > now or len(claimed) >= limit:
                break
            path = self.root / tenant / "instances" / f"{instance_id}.json"
            if not self._lock_if_free(path):
                continue  # another worker is on it
            doc = self._get(path)
            if self._due_entry(doc) != entry or doc is None or not self._lease_free(doc, now):
                continue  # moved on since the listing, or leased
            self._put(path, {**doc, "worker_id": worker_id, "worker_lease_until": lease_until.isoformat()})
            claimed.append(DueWork(tenant, instance_id, doc["revision"]))
        return claimed

    def next_wake(self, now: datetime) -> datetime | None:
        leases: list[datetime] = []
        for wake, tenant, instance_id, _ in self._due():
            if wake > now:
                return min([wake, *leases])
            doc = self._peek(self.root / tenant / "instances" / f"{instance_id}.json")
            if doc is None:
                continue
            if self._lease_free(doc, now):
                return wake
            leases.append(_time(doc["worker_lease_until"]))
        return min(leases, default=None)

    def release_work(self, instance_id: str, worker_id: str) -> None:
        path = self._instance_path(instance_id)
        doc = None if path is None else self._get(path)
        if path is not None and doc is not None and doc.get("worker_id") == worker_id:
            self._put(path, _fields(doc, *_WORKER) | {STORED: doc[STORED]})

    # ------------------------------------------------------------------ the work queue
    def _task_docs(self, where: TaskFilter, now: datetime) -> list[Doc]:
        """The tenant's tasks matching `where`, oldest first (a scan)."""
        found = []
        for doc in self._scan(self.home / "instances"):
            if doc.get("task_since") is None or doc["status"] not in _MOVABLE:
                continue
            if where.template_id is not None and doc["template_id"] != where.template_id:
                continue
            if where.held_by is not None and not (
                doc.get("held_by") == where.held_by
                and doc.get("lease_expires_at")
                and _time(doc["lease_expires_at"]) > now
            ):
                continue
            if where.action is not None and task_action(self._instance(doc)) != where.action:
                continue
            if where.county is not None or where.tag is not None:
                path = self._contact_path(doc["contact_id"])
                contact = None if path is None else self._peek(path)
                if contact is None:
                    continue
                if where.county is not None and contact.get("county") != where.county:
                    continue
                if where.tag is not None and where.tag not in (contact.get("tags") or ()):
                    continue
            found.append(doc)
        found.sort(key=lambda doc: (_time(doc["task_since"]), doc[STORED]))
        return found

    def list_tasks(self, where: TaskFilter, now: datetime, page: PageRequest) -> Page[WorkflowInstance]:
        docs = self._task_docs(where, now)
        after = _cursor_key(page.cursor)
        if after is not None:
            docs = [doc for doc in docs if (_time(doc["task_since"]), doc[STORED]) > after]
        chosen = docs[: page.limit + 1]
        more = len(chosen) > page.limit
        chosen = chosen[: page.limit]
        cursor = encode_cursor(chosen[-1]["task_since"], chosen[-1][STORED]) if more else None
        return Page([self._instance(doc) for doc in chosen], cursor)

    def next_open_task(self, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        for doc in self._task_docs(where, now):
            path = self.home / "instances" / f"{doc['id']}.json"
            if not self._lock_if_free(path):
                continue  # someone is claiming it now
            current = self._get(path)
            if current is None or current.get("task_since") is None or current["status"] not in _MOVABLE:
                continue
            holder_until = current.get("lease_expires_at")
            if current.get("held_by") and holder_until and _time(holder_until) > now:
                continue
            return self._instance(current)
        return None

    def count_instances_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for folder in self.store.tenant_dirs():
            for doc in self._scan(folder / "instances"):
                counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        return counts

    # ------------------------------------------------------------------ events
    def append_events(self, events: Sequence[Event]) -> None:
        by_file: dict[Path, list[Any]] = {}
        for event in events:
            if event.instance_id is not None:
                path = self._instance_path(event.instance_id)
            elif event.contact_id is not None:
                path = self._contact_path(event.contact_id)
            else:
                raise RuntimeError(f"event {event.id} belongs to no instance and no contact")
            if path is None:
                raise RuntimeError(f"event {event.id} names a record that cannot exist")
            by_file.setdefault(path, []).append({**event.model_dump(mode="json"), STORED: self._stamp()})
        for path, added in by_file.items():
            doc = self._get(path)
            if doc is None:
                raise RuntimeError(f"events for {path.stem}, which is not stored")
            self._put(path, {**doc, TIMELINE: [*doc[TIMELINE], *added]})

    def instance_events(self, instance_id: str, page: PageRequest, newest_first: bool = False) -> Page[Event]:
        path = self._instance_path(instance_id)
        doc = None if path is None else self._peek(path)
        timeline: list[Any] = doc[TIMELINE] if doc else []
        after = None if page.cursor is None else cursor_int(decode_cursor(page.cursor, 1)[0])
        if newest_first:
            positions = range(len(timeline) - 1 if after is None else min(after, len(timeline)) - 1, -1, -1)
        else:
            positions = range(0 if after is None else after + 1, len(timeline))
        chosen = list(positions[: page.limit + 1])
        more = len(chosen) > page.limit
        chosen = chosen[: page.limit]
        items = [_event(timeline[i]) for i in chosen]
        return Page(items, encode_cursor(chosen[-1]) if more else None)

    def contact_events(self, contact_id: str, page: PageRequest) -> Page[Event]:
        """Newest stored first: the contact's own events and its instances'."""
        after = None if page.cursor is None else cursor_int(decode_cursor(page.cursor, 1)[0])
        sources = list(self._instances_of(contact_id))
        path = self._contact_path(contact_id)
        contact = None if path is None else self._peek(path)
        if contact is not None:
            sources.append(contact)
        found = (
            event
            for doc in sources
            for event in doc[TIMELINE]
            if event.get("contact_id") == contact_id and (after is None or event[STORED] < after)
        )
        best = heapq.nlargest(page.limit + 1, found, key=_by_stored)
        more = len(best) > page.limit
        best = best[: page.limit]
        return Page([_event(event) for event in best], encode_cursor(best[-1][STORED]) if more else None)

    # ------------------------------------------------------------------ idempotency
    def _idempotency(self, route: str, key: str) -> tuple[Path, Doc | None]:
        path = self._idempotency_path(route, key)
        doc = self._get(path)
        if doc is not None and (doc["route"], doc["key"]) != (route, key):
            doc = None
        return path, doc

    def get_idempotency(self, route: str, key: str, since: datetime) -> IdempotentResponse | None:
        _, doc = self._idempotency(route, key)
        if doc is None or _time(doc["created_at"]) < since:
            return None
        return IdempotentResponse(doc["token_id"], doc["request_hash"], doc["done"], doc["status_code"], doc["body"])

    def reserve_idempotency(self, route: str, key: str, token_id: str, request_hash: str, now: datetime) -> bool:
        path, doc = self._idempotency(route, key)
        if doc is not None and _time(doc["created_at"]) >= now - timedelta(hours=24):
            return False  # an entry older than 24 h is forgotten: the key may be used again
        self._put(
            path,
            {
                "route": route,
                "key": key,
                "token_id": token_id,
                "request_hash": request_hash,
                "done": False,
                "status_code": None,
                "body": None,
                "created_at": now.isoformat(),
            },
        )
        return True

    def finish_idempotency(self, route: str, key: str, status_code: int, body: str) -> None:
        path, doc = self._idempotency(route, key)
        if doc is not None:
            self._put(path, {**doc, "done": True, "status_code": status_code, "body": body})

    def release_idempotency(self, route: str, key: str) -> None:
        path, doc = self._idempotency(route, key)
        if doc is not None:
            self._put(path, None)

    def purge_idempotency(self, before: datetime) -> int:
        gone = 0
        for folder in self.store.tenant_dirs():
            for doc in list(self._scan(folder / "idempotency")):
                if _time(doc["created_at"]) < before:
                    self._put(folder / "idempotency" / f"{_hashed(doc['route'], doc['key'])}.json", None)
                    gone += 1
        return gone


def _event(doc: Doc) -> Event:
    return Event.model_validate(_fields(doc))


def _by_stored(doc: Doc) -> int:
    stored: int = doc[STORED]
    return stored


def _remove_empty_dir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # not empty (a lock file of a transaction running now) or already gone


# ---------------------------------------------------------------------------------------------- the store
class JsonFileStore(Store):
    def __init__(self, root: Path, *, busy_timeout_s: float = 30.0, threads: int = 8) -> None:
        self.root = root.absolute()
        self.busy_timeout_s = busy_timeout_s
        self.snapshots = SnapshotCache()
        self._journal = self.root / ".journal"
        self._stamp_lock = threading.Lock()
        self._last_stamp = 0
        self._writers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cbw-json-writer")
        self._readers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cbw-json-reader")

    def describe(self) -> str:
        return f"json:///{self.root}"

    def deadline(self) -> float:
        return time.monotonic() + self.busy_timeout_s

    def stamp(self) -> int:
        """A number larger than any this process gave before: nanoseconds since the epoch, made unique."""
        with self._stamp_lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            return self._last_stamp

    def tenant_dirs(self) -> Iterator[Path]:
        try:
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and SLUG_RE.match(entry.name):
                        yield self.root / entry.name
        except FileNotFoundError:
            return

    # ------------------------------------------------------------------ commits and journals
    def apply(self, writes: Sequence[tuple[Path, bytes | None]]) -> None:
        """Make `writes` durable, all or nothing: one file is replaced atomically; several go through a journal."""
        if len(writes) == 1:
            self._apply(writes)
            return
        journal_id = secrets.token_hex(8)
        lock = self._journal / f".{journal_id}.lock"
        fd = _wait_lock(lock, self.deadline())  # held while the journal is live: others see it is not orphaned
        try:
            journal = self._journal / f"{journal_id}.json"
            entries = [
                {"path": str(path.relative_to(self.root)), "content": None if data is None else data.decode()}
                for path, data in writes
            ]
            _replace(journal, _encode(entries, pretty=False))
            _fsync_dir(self._journal)
            self._apply(writes)
            journal.unlink()
            _fsync_dir(self._journal)
        finally:
            _unlock(lock, fd)

    @staticmethod
    def _apply(writes: Sequence[tuple[Path, bytes | None]]) -> None:
        folders: set[Path] = set()
        for path, data in writes:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                _make_dirs(path.parent)
                _replace(path, data)
            folders.add(path.parent)
        for folder in folders:
            _fsync_dir(folder)

    def _journals(self) -> list[Path]:
        try:
            with os.scandir(self._journal) as entries:
                return [self._journal / e.name for e in entries if e.name.endswith(".json") and e.name[0] != "."]
        except FileNotFoundError:
            return []

    def interrupted(self) -> bool:
        """Whether a journal is left by a commit whose process died (nobody holds its lock)."""
        for journal in self._journals():
            fd = _try_lock(journal.parent / f".{journal.stem}.lock")
            if fd is not None:
                _unlock(journal.parent / f".{journal.stem}.lock", fd)
                if journal.exists():
                    return True
        return False

    def _inside(self, relative: str) -> Path:
        """A journal's path, refused unless it stays inside the store (a journal is only ever written by us)."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()) or path == self.root.resolve():
            raise StoreError(f"a journal in {self._journal} names a file outside the store: {relative[:80]!r}")
        return self.root / relative

    def recover(self) -> int:
        """Replay every journal left by a dead process, under the locks of the files it names; returns how many."""
        replayed = 0
        for journal in self._journals():
            lock = journal.parent / f".{journal.stem}.lock"
            fd = _wait_lock(lock, self.deadline())  # a live commit holds it until its journal is gone
            held: dict[Path, int] = {}
            try:
                try:
                    entries = json.loads(journal.read_bytes())
                except FileNotFoundError:
                    continue
                writes = [
                    (self._inside(entry["path"]), None if entry["content"] is None else entry["content"].encode())
                    for entry in entries
                ]
                for path, _ in sorted(writes):  # one order for every recovery: two of them cannot deadlock
                    file_lock = _lock_file(path)
                    if file_lock not in held:
                        held[file_lock] = _wait_lock(file_lock, self.deadline())
                self._apply(writes)
                journal.unlink()
                _fsync_dir(self._journal)
                replayed += 1
            finally:
                for file_lock, file_fd in held.items():
                    _unlock(file_lock, file_fd)
                _unlock(lock, fd)
        return replayed

    # ------------------------------------------------------------------ transactions
    def _run(self, tenant: str, fn: Callable[[Tx], T], writing: bool) -> T:
        deadline = self.deadline()
        while True:
            if self.interrupted():
                self.recover()
            tx = FileTx(self, tenant, writing=writing)
            try:
                result = fn(tx)
                if writing:
                    tx.commit()
                return result
            except _Busy as busy:
                tx.release()
                if time.monotonic() > deadline:
                    raise StoreError("the store is busy (records stayed locked too long); try again") from None
                _unlock(busy.lock, _wait_lock(busy.lock, deadline))  # wait holding nothing, then run again
            except _Interrupted:
                tx.release()
                self.recover()
            except OSError as exc:
                raise StoreError(f"the file store failed: {exc.strerror or exc}") from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a file edited by hand, and badly
                raise StoreError(f"a file in the store is not valid JSON: {exc}") from exc
            finally:
                tx.release()

    async def read(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, self._run, tenant, fn, False)

    async def write(self, tenant: str, fn: Callable[[Tx], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writers, self._run, tenant, fn, True)

    def migrate_sync(self) -> list[int]:
        _make_dirs(self.root)
        self.root.chmod(0o700)
        marker = self.root / "store.json"
        lock = self.root / ".store.lock"
        fd = _wait_lock(lock, self.deadline())
        try:
            found = _read(marker)
            if found is not None:
                if found.get("format", 0) > FORMAT:
                    raise StoreError(f"{self.root} was written by a newer cbworkflow (format {found['format']})")
                applied = []
            else:
                self._apply([(marker, _encode({"kind": "cbworkflow-json-store", "format": FORMAT}))])
                applied = [FORMAT]
        finally:
            _unlock(lock, fd)
        self.recover()
        return applied

    async def migrate(self) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self._writers, self.migrate_sync)

    async def ping(self) -> None:
        def check() -> None:
            if not os.access(self.root / "store.json", os.R_OK):
                raise StoreError(f"the file store at {self.root} cannot be read")

        await asyncio.get_running_loop().run_in_executor(self._readers, check)

    async def close(self) -> None:
        self._writers.shutdown(wait=True)
        self._readers.shutdown(wait=True)
