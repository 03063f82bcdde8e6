"""Contacts import and export (`POST /api/contacts/import`, `GET /api/contacts/export`, `cbworkflow contacts`).

An import reads the file twice (`contact_files.prepare`): nothing is written unless the whole file is readable.
Its rows are then written a batch per transaction: each batch looks up every contact its rows may match in one
call (`Tx.find_contacts`: ids, external ids, emails, E.164 phones), decides each row, and writes the creations and
updates. Matching, in order: the `id` column, then `external_id`, then an email that exactly one contact has, then
an E.164 phone that exactly one contact has (a contact with another email is someone else). A row that matches two
contacts is rejected rather than creating a third, so importing the same file twice never duplicates anyone.

Up to `inline_limit` rows are imported inside the request. A larger file becomes a job: its items are staged in
the store with the job (the worker may run on another machine), a chunk of `batch_size` per row of `job_rows`, and
each of the job's batches imports one chunk, deletes it and moves the job's cursor in the same transaction, so a
worker killed at any moment resumes with no row written twice and none skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from ..clock import Clock
from ..ids import new_id
from ..models.access import Principal
from ..models.common import MAX_FIELD_BYTES, json_size
from ..models.consent import Channel
from ..models.contacts import Contact
from ..models.imports import REJECTIONS_SHOWN, ROWS_SHOWN, FileFormat, ImportResult
from ..models.jobs import Job, JobKind, JobRecord
from ..store.base import ContactFilter, Page, PageRequest, Store, Tx
from .consent import opt_out
from .contact_events import change_events, happenings
from .contact_files import Prepared, prepare
from .happenings import Happening
from .jobs import JobService
from .triggers import Reactions

COMPARED = (
    "name",
    "email",
    "phone",
    "phone_e164",
    "county",
    "organization",
    "role",
    "external_id",
    "timezone",
    "tags",
    "metadata",
)
EXPORT_PAGE = 500


@dataclass(frozen=True)
class Rejected:
    """A row not imported."""

    line: int
    reason: str


@dataclass(frozen=True)
class Imported:
    """A row imported: the contact it created, updated or left unchanged, and how it was found."""

    line: int
    contact_id: str | None
    matched_by: str | None
    action: str


Outcome = Rejected | Imported


@dataclass
class Report:
    """What an import did so far: counts of every row, the first rejections and rows in detail."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    dry_run: bool = False
    rejections: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejections_truncated: bool = False
    rows_truncated: bool = False
    on_rejection: Callable[[int, str], None] | None = None  # the CLI writes every one to its file

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if self.on_rejection is not None:
            self.on_rejection(line, reason)
        if len(self.rejections) < REJECTIONS_SHOWN:
            self.rejections.append({"line": line, "reason": reason})
        else:
            self.rejections_truncated = True

    def row(self, line: int, contact_id: str | None, matched_by: str | None, action: str) -> None:
        if action == "created":
            self.created += 1
        elif action == "updated":
            self.updated += 1
        else:
            self.unchanged += 1
        if len(self.rows) < ROWS_SHOWN:
            self.rows.append({"line": line, "contact_id": contact_id, "matched_by": matched_by, "action": action})
        else:
            self.rows_truncated = True

    def add(self, outcomes: Sequence[Outcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Rejected):
                self.reject(outcome.line, outcome.reason)
            else:
                self.row(outcome.line, outcome.contact_id, outcome.matched_by, outcome.action)

    def result(self) -> dict[str, Any]:
        return self.answer().model_dump(mode="json")

    def answer(self) -> ImportResult:
        return ImportResult.model_validate(
            {
                "created": self.created,
                "updated": self.updated,
                "unchanged": self.unchanged,
                "rejected": self.rejected,
                "dry_run": self.dry_run,
                "rejections": self.rejections,
                "rows": self.rows,
                "rejections_truncated": self.rejections_truncated,
                "rows_truncated": self.rows_truncated,
            }
        )

    @classmethod
    def of(cls, result: dict[str, Any], dry_run: bool) -> Report:
        """A job's report so far, from its stored `result`."""
        if not result:
            return cls(dry_run=dry_run)
        return cls(
            **{key: result[key] for key in ("created", "updated", "unchanged", "rejected")},
            dry_run=dry_run,
            rejections=list(result["rejections"]),
            rows=list(result["rows"]),
            rejections_truncated=result["rejections_truncated"],
            rows_truncated=result["rows_truncated"],
        )


class _Index:
    """The contacts a batch may match, by each key; kept in step with the batch's own writes."""

    def __init__(self, found: Sequence[Contact]) -> None:
        self.by_id: dict[str, Contact] = {}
        self.by_external: dict[str, str] = {}
        self.by_email: dict[str, set[str]] = {}
        self.by_phone: dict[str, set[str]] = {}
        for contact in found:
            self.add(contact)

    def add(self, contact: Contact) -> None:
        self.by_id[contact.id] = contact
        if contact.external_id is not None:
            self.by_external[contact.external_id] = contact.id
        if contact.email:
            self.by_email.setdefault(contact.email.lower(), set()).add(contact.id)
        if contact.phone_e164:
            self.by_phone.setdefault(contact.phone_e164, set()).add(contact.id)

    def remove(self, contact: Contact) -> None:
        if self.by_external.get(contact.external_id or "") == contact.id:
            del self.by_external[contact.external_id or ""]
        if contact.email:
            self.by_email.get(contact.email.lower(), set()).discard(contact.id)
        if contact.phone_e164:
            self.by_phone.get(contact.phone_e164, set()).discard(contact.id)


class _Rejected(Exception):
    pass


def _listed(ids: set[str]) -> str:
    shown = sorted(ids)
    return ", ".join(shown[:3]) + (f" and {len(shown) - 3} more" if len(shown) > 3 else "")


class ContactImport:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        jobs: JobService,
        phone_region: str,
        *,
        batch_size: int = 500,
        inline_limit: int = 5_000,
        reactions: Reactions | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.jobs = jobs
        self.region = phone_region
        self.reactions = reactions or Reactions()
        self.batch_size = batch_size
        self.inline_limit = inline_limit

    # ---------------------------------------------------------------- reading the file
    async def prepare(self, path: Path, fmt: FileFormat) -> Prepared:
        """The first pass, off the event loop: MalformedFile (422) when the file cannot be read as a whole."""
        return await asyncio.to_thread(prepare, path, fmt, self.region)

    # ---------------------------------------------------------------- the request
    async def import_file(self, principal: Principal, path: Path, fmt: FileFormat, dry_run: bool) -> ImportResult | Job:
        """Import inside the request when the file has up to `inline_limit` rows, else queue a job (202)."""
        prepared = await self.prepare(path, fmt)
        try:
            if prepared.rows > self.inline_limit:
                return await self.queue(principal, prepared, fmt, dry_run)
            report = Report(dry_run=dry_run)
            async for _ in self.batches(principal.tenant, principal.token_id, prepared, report):
                pass
            return report.answer()
        finally:
            prepared.discard()

    async def batches(self, tenant: str, actor: str, prepared: Prepared, report: Report) -> AsyncIterator[int]:
        """Import the prepared rows, one transaction per batch (a read one for a dry run), each batch's outcomes
        added to `report` once it has committed; yields each batch's number of rows."""
        chunks = prepared.chunks(self.batch_size)
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:  # the file read off the loop
            run = partial(self.batch, items=chunk, dry_run=report.dry_run, actor=actor)
            if report.dry_run:
                outcomes = await self.store.read(tenant, run)
            else:
                outcomes = await self.store.write(tenant, run)
            report.add(outcomes)
            if not report.dry_run:
                self.reactions.wake()  # instances its triggers started may have work due now
            yield len(chunk)

    async def queue(self, principal: Principal, prepared: Prepared, fmt: FileFormat, dry_run: bool) -> Job:
        """A job for a large file, its items staged in the store in the job's own transaction."""
        params = {"format": fmt.value, "dry_run": dry_run, "rows": prepared.rows, "batch_size": self.batch_size}

        def stage(tx: Tx, job_id: str) -> None:
            chunks = 0
            for seq, chunk in enumerate(prepared.chunks(self.batch_size)):
                tx.stage_job_rows(job_id, seq, chunk)
                chunks = seq + 1
            params["chunks"] = chunks

        return await self.jobs.queue(principal, JobKind.CONTACTS_IMPORT, params, prepared.rows, stage=stage)

    # ---------------------------------------------------------------- one batch
    def batch(
        self,
        tx: Tx,
        *,
        items: Sequence[dict[str, Any]],
        dry_run: bool,
        actor: str,
        now: datetime | None = None,
    ) -> list[Outcome]:
        """Decide and write one batch of items, in `tx`; returns what became of each row, in file order (the
        store may run the function again: it keeps nothing outside)."""
        now = now or self.clock.now()
        rows = [item for item in items if "reject" not in item]
        ids = {item["fields"]["id"] for item in rows if item["fields"].get("id")}
        found = tx.find_contacts(
            ids=sorted(ids),
            external_ids=sorted({item["fields"]["external_id"] for item in rows if item["fields"].get("external_id")}),
            emails=sorted({item["email_key"] for item in rows if item.get("email_key")}),
            phones=sorted({item["phone_e164"] for item in rows if item.get("phone_e164") and item["phone_match"]}),
        )
        index = _Index(found)
        kept = tx.contacts_with_instances(sorted(ids - set(index.by_id))) if ids else set()
        outcomes: list[Outcome] = []
        created: list[Contact] = []  # inserted together at the end (no row of the file can match another's)
        changed: list[tuple[Contact, Contact]] = []  # (before, after) of the contacts updated
        refusals: list[tuple[str, list[str]]] = []  # (contact id, channels) the file adds to its opt-outs
        for item in items:
            if "reject" in item:
                outcomes.append(Rejected(item["line"], item["reject"]))
                continue
            try:
                outcome = self._row(tx, item, index, kept, created, changed, dry_run=dry_run, now=now)
            except _Rejected as rejected:
                outcomes.append(Rejected(item["line"], str(rejected)))
                continue
            outcomes.append(outcome)
            adds = _new_refusals(item, outcome.contact_id, index)
            if adds and outcome.contact_id:
                refusals.append((outcome.contact_id, adds))
        if not dry_run:
            tx.insert_contacts(created)
            self._changes(tx, created, changed, actor, now)
            for contact_id, adds in refusals:  # with what they do to the contact's instances (services/consent.py)
                contact = tx.get_contact(contact_id)
                if contact is not None:
                    channels = [Channel(name) for name in adds]
                    opt_out(
                        tx, self.reactions, contact, channels, now, actor, reason="in an imported file", source="import"
                    )
        return outcomes

    def _changes(
        self, tx: Tx, created: list[Contact], changed: list[tuple[Contact, Contact]], actor: str, now: datetime
    ) -> None:
        """The batch's contact-level events, and what its changes make the templates do, in one go each: events
        in one append, goals and triggers over the whole batch (enrolling in batches, as bulk enrolment does)."""
        pairs: list[tuple[Contact | None, Contact]] = [(None, contact) for contact in created]
        pairs += changed
        events = [event for before, after in pairs for event in change_events(before, after, now, actor, "import")]
        tx.append_events(events)
        happened: list[Happening] = [h for before, after in pairs for h in happenings(before, after)]
        self.reactions.react(tx, happened, now=now, actor=actor)

    def _match(self, item: dict[str, Any], index: _Index) -> tuple[Contact | None, str | None]:
        fields = item["fields"]
        row_id, external_id = fields.get("id"), fields.get("external_id")
        if row_id and row_id in index.by_id:
            contact = index.by_id[row_id]
            holder = index.by_external.get(external_id or "")
            if external_id and holder is not None and holder != contact.id:
                raise _Rejected(
                    f"id {row_id!r} names one contact, but external_id {external_id!r} belongs to contact {holder}"
                )
            return contact, "id"
        if external_id and external_id in index.by_external:
            return index.by_id[index.by_external[external_id]], "external_id"
        matched: Contact | None = None
        how = None
        email = item.get("email_key")
        if email:
            holders = index.by_email.get(email, set())
            if len(holders) > 1:
                raise _Rejected(
                    f"email {fields['email']!r} matches {len(holders)} contacts ({_listed(holders)}); "
                    "add an id or external_id column to say which one"
                )
            if holders:
                matched, how = index.by_id[next(iter(holders))], "email"
        phone = item.get("phone_e164")
        if matched is None and phone and item["phone_match"]:
            # A contact with an email of its own is someone else (the row's email matched no one).
            holders = {c for c in index.by_phone.get(phone, set()) if not (email and index.by_id[c].email)}
            if len(holders) > 1:
                raise _Rejected(
                    f"phone {phone} matches {len(holders)} contacts ({_listed(holders)}); "
                    "add an id, external_id or email column to say which one"
                )
            if holders:
                matched, how = index.by_id[next(iter(holders))], "phone"
        if matched is not None and external_id and matched.external_id not in (None, external_id):
            raise _Rejected(
                f"{how} matches contact {matched.id}, whose external_id is {matched.external_id!r}, not {external_id!r}"
            )
        return matched, how

    def _row(
        self,
        tx: Tx,
        item: dict[str, Any],
        index: _Index,
        kept: set[str],
        created_now: list[Contact],
        changed: list[tuple[Contact, Contact]],
        *,
        dry_run: bool,
        now: datetime,
    ) -> Imported:
        fields = dict(item["fields"])
        line = item["line"]
        contact, how = self._match(item, index)
        given = {key: value for key, value in fields.items() if key != "id"}
        if "phone" in given:
            given["phone_e164"] = item["phone_e164"]
        if contact is None:
            contact_id = fields.get("id")
            if contact_id in kept:
                raise _Rejected(
                    f"id {contact_id!r} belonged to a deleted contact whose instances are kept; leave "
                    "the id out or choose another"
                )
            created = Contact.model_validate(
                {
                    "id": contact_id or new_id(),
                    "tenant": tx.tenant,
                    **given,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            created_now.append(created)
            index.add(created)
            return Imported(line, created.id if (contact_id or not dry_run) else None, None, "created")
        if item["metadata"] == "merge":
            given["metadata"] = {**contact.metadata, **given["metadata"]}
            if json_size(given["metadata"]) > MAX_FIELD_BYTES:
                raise _Rejected(f"metadata: larger than {MAX_FIELD_BYTES // 1024} KiB as JSON with the contact's own")
        updated = contact.model_copy(update=given)
        if all(getattr(updated, name) == getattr(contact, name) for name in COMPARED):
            adds = [name for name in item.get("opt_outs", ()) if name not in contact.opted_out]
            return Imported(line, contact.id, how, "updated" if adds else "unchanged")  # opt-outs: written after
        updated.updated_at = now
        if not dry_run:
            tx.update_contact(updated)
            changed.append((contact, updated))
        index.remove(contact)
        index.add(updated)
        return Imported(line, contact.id, how, "updated")

    # ---------------------------------------------------------------- as a job
    def job_batch(self, tx: Tx, job: JobRecord, now: datetime) -> bool:
        """The job's next staged chunk, in `tx`: imported, deleted, and the job's cursor, progress and result
        moved with it. True when it was the last."""
        seq = int(job.cursor or 0)
        chunks = int(job.params.get("chunks", 0))
        dry_run = bool(job.params.get("dry_run"))
        items = tx.job_rows(job.id, seq) if seq < chunks else None
        if items is None:
            return True
        report = Report.of(job.result, dry_run)
        report.add(self.batch(tx, items=items, dry_run=dry_run, actor=job.created_by or "system", now=now))
        tx.delete_job_rows(job.id, seq)
        job.result = report.result()
        job.progress.done += len(items)
        job.cursor = str(seq + 1)
        return seq + 1 >= chunks

    # ---------------------------------------------------------------- export
    async def export(self, tenant: str, where: ContactFilter) -> AsyncIterator[list[Contact]]:
        """The contacts `where` picks, newest first, a page at a time (never the whole table in memory)."""
        cursor: str | None = None
        while True:
            page = await self.store.read(tenant, partial(_page, where=where, cursor=cursor))
            if page.items:
                yield page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def _page(tx: Tx, *, where: ContactFilter, cursor: str | None) -> Page[Contact]:
    return tx.list_contacts(where, PageRequest(limit=EXPORT_PAGE, cursor=cursor))


def _new_refusals(item: dict[str, Any], contact_id: str | None, index: _Index) -> list[str]:
    """The channels the row adds to the contact's opt-outs (those it has already keep their first time)."""
    named = item.get("opt_outs") or []
    contact = index.by_id.get(contact_id or "")
    have = contact.opted_out if contact is not None else {}
    return [name for name in named if name not in have]
