"""Export and import a tenant's data as one JSON file per entity (the seed's layout).

    DIR/tenant.json
    DIR/contacts/{id}.json
    DIR/templates/{id}.json      the current template plus "versions": every kept version
    DIR/instances/{id}.json      the instance with its frozen nodes and its whole "timeline"
    DIR/tokens/{id}.json         tokens with the hash of their secret (never the secret)
    DIR/events/contact-events.jsonl   contact-level events (tags), one per line

Export pages through the store, so memory stays flat at a million contacts. It writes into an empty folder only,
or, asked to replace, removes what an earlier export wrote there (and nothing else) first. What it writes holds
personal data and token hashes, so files are 0600 and folders 0700. Import reads every file first and refuses,
naming the file and the problem, a malformed one or an id that already exists; only then does it write, in one
transaction, so a bad file changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import Conflict
from ..models.access import Tenant, Token
from ..models.contacts import Contact
from ..models.events import Event
from ..models.instances import WorkflowInstance
from ..models.templates import TemplateVersion, WorkflowTemplate
from ..store.base import ContactFilter, InstanceFilter, PageRequest, Store, SystemTx, TokenRecord, Tx
from .instances import snapshot_of

BATCH = 500
KINDS = ("contacts", "templates", "instances", "tokens")

OUTBOX_ONLY = {"sequence"}  # the store that imports the events numbers them anew, in its own outbox


class TransferError(Exception):
    """A file cannot be imported; the message names the file and the problem."""


class ExportFolderNotEmpty(TransferError):
    """The export folder holds files already; the caller decides whether to replace an earlier export."""


FILE_MODE = 0o600
FOLDER_MODE = 0o700
TENANT_FILE = "tenant.json"
EVENTS_FILE = Path("events") / "contact-events.jsonl"


@dataclass
class Counts:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in self.counts.items())


def _private_file(path: Path) -> Any:
    """A file open for writing that only its owner may read, whatever the umask or an earlier file's mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return os.fdopen(fd, "w", encoding="utf-8")


def _private_folder(path: Path) -> None:
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    path.chmod(FOLDER_MODE)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".json.tmp")
    with _private_file(tmp) as out:
        out.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)


def remove_earlier_export(out: Path) -> None:
    """Remove what `export_tenant` writes (its JSON files, the tenant and events files, then its folders if they
    are left empty); anything else in `out` stays."""
    for kind in KINDS:
        folder = out / kind
        if folder.is_dir():
            for path in [*folder.glob("*.json"), *folder.glob("*.json.tmp")]:
                path.unlink()
            if not any(folder.iterdir()):
                folder.rmdir()
    for path in (out / TENANT_FILE, out / f"{TENANT_FILE}.tmp", out / EVENTS_FILE):
        path.unlink(missing_ok=True)
    events = out / EVENTS_FILE.parent
    if events.is_dir() and not any(events.iterdir()):
        events.rmdir()


Fetch = Callable[[Tx, PageRequest], Any]


async def _each(store: Store, tenant: str, fetch: Fetch) -> AsyncIterator[Any]:
    """Every item of a paged store list, one page in memory at a time."""
    cursor: str | None = None
    while True:
        request = PageRequest(BATCH, cursor)
        page = await store.read(tenant, partial(_call, fetch, request))
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _call(fetch: Fetch, request: PageRequest, tx: Tx) -> Any:
    return fetch(tx, request)


def _all_contacts(tx: Tx, page: PageRequest) -> Any:
    return tx.list_contacts(ContactFilter(), page)


def _all_templates(tx: Tx, page: PageRequest) -> Any:
    return tx.list_templates(None, page)


def _all_instances(tx: Tx, page: PageRequest) -> Any:
    return tx.list_instances(InstanceFilter(), page)


def _all_tokens(tx: Tx, page: PageRequest) -> Any:
    return tx.list_tokens(page)


async def export_tenant(store: Store, tenant: str, out: Path, *, replace: bool = False) -> Counts:
    """Write `tenant` into `out`, which must be empty or missing; with `replace`, an earlier export in it is
    removed first (after the tenant is found, so a mistyped tenant leaves the earlier export alone)."""
    counts = Counts()
    if out.exists() and not out.is_dir():
        raise TransferError(f"{out} is not a folder")
    tenant_row = await store.system_read(partial(_get_tenant, tenant))
    if tenant_row is None:
        raise TransferError(f"no tenant {tenant!r} in {store.describe()}")
    if out.is_dir() and any(out.iterdir()):
        if not replace:
            raise ExportFolderNotEmpty(f"{out} is not empty")
        remove_earlier_export(out)
    _private_folder(out)
    for kind in (*KINDS, EVENTS_FILE.parent.name):
        _private_folder(out / kind)
    _write_json(out / TENANT_FILE, tenant_row.model_dump(mode="json"))

    with _private_file(out / EVENTS_FILE) as events_file:
        async for contact in _each(store, tenant, _all_contacts):
            _write_json(out / "contacts" / f"{contact.id}.json", contact.model_dump(mode="json"))
            counts.counts["contacts"] += 1
            own = [
                e async for e in _each(store, tenant, partial(_contact_events_of, contact.id)) if e.instance_id is None
            ]
            for event in reversed(own):  # oldest first, as they happened: an import appends them in file order
                events_file.write(event.model_dump_json(exclude=OUTBOX_ONLY) + "\n")
    async for template in _each(store, tenant, _all_templates):
        versions = [v async for v in _each(store, tenant, partial(_versions_of, template.id))]
        data = template.model_dump(mode="json")
        data["versions"] = [v.model_dump(mode="json") for v in reversed(versions)]
        _write_json(out / "templates" / f"{template.id}.json", data)
        counts.counts["templates"] += 1
    async for instance in _each(store, tenant, _all_instances):
        timeline = [e async for e in _each(store, tenant, partial(_events_of, instance.id))]
        data = instance.model_dump(mode="json")
        data["timeline"] = [e.model_dump(mode="json", exclude=OUTBOX_ONLY) for e in timeline]
        _write_json(out / "instances" / f"{instance.id}.json", data)
        counts.counts["instances"] += 1
    async for token in _each(store, tenant, _all_tokens):
        record = await store.read(tenant, partial(_token_record, token.id))
        if record is not None:
            data = {**token.model_dump(mode="json"), "secret_hash": record.secret_hash}
            _write_json(out / "tokens" / f"{token.id}.json", data)
            counts.counts["tokens"] += 1
    return counts


def _get_tenant(tenant: str, stx: SystemTx) -> Tenant | None:
    return stx.get_tenant(tenant)


def _contact_events_of(contact_id: str, tx: Tx, page: PageRequest) -> Any:
    return tx.contact_events(contact_id, page)


def _versions_of(template_id: str, tx: Tx, page: PageRequest) -> Any:
    return tx.list_template_versions(template_id, page)


def _events_of(instance_id: str, tx: Tx, page: PageRequest) -> Any:
    return tx.instance_events(instance_id, page)


def _token_record(token_id: str, tx: Tx) -> TokenRecord | None:
    return tx.get_token_record(token_id)


def _read(path: Path, model: type[BaseModel], *, named_by_id: bool = True) -> Any:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TransferError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TransferError(f"{path}: expected a JSON object")
    extra = {k: data.pop(k) for k in ("versions", "timeline", "secret_hash") if k in data}
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise TransferError(f"{path}: {where}: {first['msg']}") from None
    if named_by_id and path.stem != getattr(parsed, "id", path.stem):
        raise TransferError(f"{path}: the file name does not match the id {parsed.id!r}")  # type: ignore[attr-defined]
    return parsed, extra


async def import_tenant(store: Store, tenant: str, src: Path) -> Counts:
    """Import a folder written by `export_tenant` into `tenant` (created if missing).

    Import files are trusted like the database itself (they carry token hashes and roles): import only folders
    exported by an operator, never files a tenant sent.
    """
    if not src.is_dir():
        raise TransferError(f"{src}: not a folder")
    files = {kind: sorted((src / kind).glob("*.json")) for kind in KINDS}
    # Pass 1: every file parses, belongs together, and clashes with nothing stored. Nothing is written.
    contact_ids: set[str] = set()
    external_ids: dict[str, Path] = {}
    for kind, model in (
        ("contacts", Contact),
        ("templates", WorkflowTemplate),
        ("instances", WorkflowInstance),
        ("tokens", Token),
    ):
        for path in files[kind]:
            parsed, extra = _read(path, model)
            _check_extra(path, kind, parsed, extra)
            if await store.read(tenant, partial(_exists, kind, parsed.id)):
                raise TransferError(f"{path}: a {kind[:-1]} with id {parsed.id!r} already exists in tenant {tenant!r}")
            if kind == "contacts":
                contact_ids.add(parsed.id)
                await _check_external_id(store, tenant, path, parsed, external_ids)
            if kind == "tokens" and await store.system_read(partial(_hash_taken, extra["secret_hash"])):
                raise TransferError(f"{path}: a token with this secret already exists (in this or another tenant)")
    contact_events = _contact_events(src, contact_ids)
    tenant_file = src / "tenant.json"
    tenant_row = _read(tenant_file, Tenant, named_by_id=False)[0] if tenant_file.exists() else None

    # Pass 2: one transaction, so an import is applied whole or not at all.
    def write_all(stx: SystemTx) -> Counts:
        counts = Counts()
        tx = stx.for_tenant(tenant)
        if stx.get_tenant(tenant) is None:
            stx.insert_tenant(
                Tenant(
                    id=tenant,
                    name=tenant_row.name if tenant_row else tenant,
                    created_at=tenant_row.created_at if tenant_row else datetime.now(UTC),
                )
            )
        for kind in KINDS:
            _write_files(tenant, kind, files[kind], tx)
            counts.counts[kind] = len(files[kind])
        tx.append_events(contact_events)
        return counts

    try:
        return await store.system_write(write_all)
    except Conflict as exc:
        raise TransferError(f"{src}: {exc.detail}; nothing was imported") from None


async def _check_external_id(store: Store, tenant: str, path: Path, contact: Contact, seen: dict[str, Path]) -> None:
    if contact.external_id is None:
        return
    if contact.external_id in seen:
        raise TransferError(f"{path}: external_id {contact.external_id!r} is also in {seen[contact.external_id]}")
    seen[contact.external_id] = path
    if await store.read(tenant, partial(_external_id_taken, contact.external_id)):
        raise TransferError(f"{path}: external_id {contact.external_id!r} already belongs to a contact in {tenant!r}")


def _external_id_taken(external_id: str, tx: Tx) -> bool:
    return tx.get_contact_by_external_id(external_id) is not None


def _hash_taken(secret_hash: str, stx: SystemTx) -> bool:
    return stx.find_token_by_hash(secret_hash) is not None


def _check_extra(path: Path, kind: str, parsed: Any, extra: dict[str, Any]) -> None:
    """The parts beside the record: template versions, an instance's timeline (its own events only), token hash."""
    try:
        if kind == "templates":
            for v in extra.get("versions", []):
                if TemplateVersion.model_validate(v).template_id != parsed.id:
                    raise TransferError(f"{path}: versions: a version of another template")
        if kind == "instances":
            for e in extra.get("timeline", []):
                event = Event.model_validate(e)
                if event.instance_id != parsed.id or event.contact_id != parsed.contact_id:
                    raise TransferError(f"{path}: timeline: event {event.id} belongs to another instance or contact")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        part = "versions" if kind == "templates" else "timeline"
        raise TransferError(f"{path}: {part}: {where}: {first['msg']}") from None
    if kind == "tokens" and not isinstance(extra.get("secret_hash"), str):
        raise TransferError(f"{path}: secret_hash: required")


def _contact_events(src: Path, contact_ids: set[str]) -> list[Event]:
    """Contact-level events, each of a contact in the import and of no instance."""
    path = src / "events" / "contact-events.jsonl"
    if not path.exists():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = Event.model_validate_json(line)
        except ValidationError as exc:
            raise TransferError(f"{path}: line {number}: {exc.errors()[0]['msg']}") from None
        if event.instance_id is not None or event.contact_id not in contact_ids:
            raise TransferError(f"{path}: line {number}: not an event of a contact in this import")
        events.append(event)
    return events


def _exists(kind: str, record_id: str, tx: Tx) -> bool:
    if kind == "contacts":
        return tx.get_contact(record_id) is not None
    if kind == "templates":
        return tx.get_template(record_id) is not None
    if kind == "instances":
        return tx.get_instance(record_id) is not None
    return tx.get_token_record(record_id) is not None


def _write_files(tenant: str, kind: str, paths: list[Path], tx: Tx) -> None:
    for path in paths:
        data = json.loads(path.read_text())
        data["tenant"] = tenant
        if kind == "contacts":
            tx.insert_contact(Contact.model_validate(data))
        elif kind == "templates":
            versions = data.pop("versions", [])
            template = WorkflowTemplate.model_validate(data)
            tx.insert_template(template)
            for v in versions:
                v["template"]["tenant"] = tenant
                tx.insert_template_version(TemplateVersion.model_validate(v))
        elif kind == "instances":
            timeline = [Event.model_validate(e) for e in data.pop("timeline", [])]
            instance = WorkflowInstance.model_validate(data)
            snapshot = snapshot_of(
                tenant, instance.start_node, {k: v.model_dump(mode="json") for k, v in instance.nodes.items()}
            )
            tx.put_snapshot(snapshot)
            tx.insert_instance(instance, snapshot.id)
            tx.append_events(timeline)
        else:
            secret_hash = data.pop("secret_hash")
            tx.insert_token(TokenRecord(Token.model_validate(data), secret_hash))
