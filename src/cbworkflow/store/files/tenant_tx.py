"""One tenant's transaction over the JSON files: every path it touches is under `<root>/<tenant>/`, except the
indexes that span tenants by nature (`.tokens/` for lookup by hash, `.user-emails/` for signing in by address,
`.due/` and `.deliveries/` for the worker), which it keeps in step with the records."""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ...errors import Conflict, InvalidInput, StoreError
from ...ids import SLUG_RE
from ...models.access import Token
from ...models.contacts import Contact
from ...models.events import Event
from ...models.instances import WorkflowInstance, task_action
from ...models.jobs import JobRecord
from ...models.templates import Node, TemplateVersion, WorkflowTemplate
from ..base import CLASH, Page, PageRequest, Snapshot, SnapshotCache, TokenRecord, Tx
from ..filters import ContactFilter, InstanceFilter, TaskFilter
from ..paging import cut_page, int_cursor, name_cursor, time_cursor
from ..phones import name_key, phone_digits, phone_query_digits
from ..tallies import Tally
from . import disk
from .counts import FileCounts
from .docs import WORKER, Doc, event, fields, job_saved, newest_page, newest_stored, token_record
from .docs import job as stored_job
from .hooks import FileHooks, enrol_key_field
from .keys import FileKeys
from .layout import FINISHED_STATUSES, MOVABLE_STATUSES, STORED, TIMELINE, Layout, parse_time
from .outbox import FileOutbox
from .people import FilePeople
from .settings import FileSettings
from .subscriptions import FileSubscriptions
from .transaction import FileTransaction


def _required(path: Path | None, what: str) -> Path:
    if path is None:
        raise InvalidInput(f"{what}: not a valid id")
    return path


class FileTx(FileHooks, FileKeys, FileCounts, FileOutbox, FilePeople, FileSettings, FileSubscriptions, Tx):
    """Reads and changes of one tenant's records, inside a `FileTransaction`."""

    def __init__(self, txn: FileTransaction, layout: Layout, snapshots: SnapshotCache, tenant: str) -> None:
        if not SLUG_RE.match(tenant):
            raise InvalidInput(f"tenant {tenant!r}: not a tenant id")
        self.txn = txn
        self.layout = layout
        self.snapshots = snapshots
        self.tenant = tenant
        self.home = layout.home(tenant)

    # ------------------------------------------------------------------ paths
    def _record(self, folder: str, record_id: str) -> Path | None:
        return self.layout.record(self.tenant, folder, record_id)

    def _get_record(self, folder: str, record_id: str) -> tuple[Path | None, Doc | None]:
        """A record's path and content (locked in a write); (None, None) for an id that cannot exist."""
        path = self._record(folder, record_id)
        return path, None if path is None else self.txn.get(path)

    def _insert_new(self, path: Path, doc: Doc) -> None:
        if self.txn.get(path) is not None:
            raise Conflict(CLASH)
        self.txn.put(path, doc)

    # ------------------------------------------------------------------ tokens
    def insert_token(self, record: TokenRecord) -> None:
        token = record.token
        path = _required(self.layout.record(token.tenant, "tokens", token.id), "token id")
        link = self.layout.token_link(record.secret_hash)
        if link is None:
            raise InvalidInput("token hash: not a hash")
        if self.txn.get(link) is not None:
            raise Conflict(CLASH)
        self._insert_new(
            path, {**token.model_dump(mode="json"), "secret_hash": record.secret_hash, STORED: self.txn.stamp()}
        )
        self.txn.put(link, {"tenant": token.tenant, "id": token.id})

    def get_token_record(self, token_id: str) -> TokenRecord | None:
        _, doc = self._get_record("tokens", token_id)
        return token_record(doc) if doc else None

    def list_tokens(self, page: PageRequest) -> Page[Token]:
        docs, cursor = newest_page(self.txn.scan(self.home / "tokens"), page)
        return Page([token_record(doc).token for doc in docs], cursor)

    def delete_token(self, token_id: str) -> bool:
        path, doc = self._get_record("tokens", token_id)
        if path is None or doc is None:
            return False
        self.txn.put(path, None)
        link = self.layout.token_link(doc["secret_hash"])
        if link is not None:
            self.txn.put(link, None)
        return True

    # ------------------------------------------------------------------ contacts
    def _links(self, contact_id: str, *, lock: bool = False) -> list[str]:
        path = self._record("contact-instances", contact_id)
        if path is None:
            return []
        doc = self.txn.get(path) if lock else self.txn.peek(path)
        return list(doc["instance_ids"]) if doc else []

    def _contact(self, doc: Doc) -> Contact:
        return Contact.model_validate({**fields(doc, TIMELINE), "workflow_instance_ids": self._links(doc["id"])})

    def get_contact(self, contact_id: str) -> Contact | None:
        _, doc = self._get_record("contacts", contact_id)
        return self._contact(doc) if doc else None

    def read_contact(self, contact_id: str) -> Contact | None:
        path = self._record("contacts", contact_id)
        doc = None if path is None else self.txn.peek(path)
        return Contact.model_validate(fields(doc, TIMELINE)) if doc else None

    def get_contact_by_external_id(self, external_id: str) -> Contact | None:
        link = self.txn.get(self.layout.external_id(self.tenant, external_id))
        if link is None or link["external_id"] != external_id:
            return None
        contact = self.get_contact(link["contact_id"])
        return contact if contact is not None and contact.external_id == external_id else None

    @staticmethod
    def _contact_doc(contact: Contact, stored: int, timeline: list[Any]) -> Doc:
        doc = contact.model_dump(mode="json", exclude={"workflow_instance_ids"})
        return {**doc, TIMELINE: timeline, STORED: stored}

    def _claim_external_id(self, external_id: str | None, contact_id: str) -> None:
        if external_id is None:
            return
        path = self.layout.external_id(self.tenant, external_id)
        taken = self.txn.get(path)
        if taken is not None and taken["contact_id"] != contact_id:
            raise Conflict(CLASH)
        self.txn.put(path, {"external_id": external_id, "contact_id": contact_id})

    def _free_external_id(self, external_id: str | None, contact_id: str) -> None:
        if external_id is None:
            return
        path = self.layout.external_id(self.tenant, external_id)
        taken = self.txn.get(path)
        if taken is not None and taken["contact_id"] == contact_id:
            self.txn.put(path, None)

    def insert_contact(self, contact: Contact) -> None:
        path = _required(self._record("contacts", contact.id), "contact id")
        if self.txn.get(path) is not None:
            raise Conflict(CLASH)
        self._claim_external_id(contact.external_id, contact.id)
        self.txn.put(path, self._contact_doc(contact, self.txn.stamp(), []))

    def update_contact(self, contact: Contact) -> None:
        path = _required(self._record("contacts", contact.id), "contact id")
        old = self.txn.get(path)
        if old is None:
            raise RuntimeError(f"contact {contact.id} is not stored")
        if old.get("external_id") != contact.external_id:
            self._free_external_id(old.get("external_id"), contact.id)
            self._claim_external_id(contact.external_id, contact.id)
        self.txn.put(path, self._contact_doc(contact, old[STORED], old[TIMELINE]))

    def delete_contact(self, contact_id: str) -> bool:
        path, old = self._get_record("contacts", contact_id)
        if path is None or old is None:
            return False
        self._free_external_id(old.get("external_id"), contact_id)
        self.txn.put(path, None)  # its own events go with it; its instances' events stay with the instances
        self.blank_events(old[TIMELINE])
        return True

    def _contact_docs(self, where: ContactFilter) -> Iterator[Doc]:
        """The tenant's contacts that `where` picks (a scan)."""
        wanted = set(where.tags)
        checks = (("county", where.county), ("organization", where.organization), ("external_id", where.external_id))

        def matches(doc: Doc) -> bool:
            return all(value is None or doc.get(key) == value for key, value in checks) and wanted <= set(
                doc.get("tags") or ()
            )

        return filter(matches, self.txn.scan(self.home / "contacts"))

    def list_contacts(self, where: ContactFilter, page: PageRequest) -> Page[Contact]:
        docs, cursor = newest_page(self._contact_docs(where), page)
        return Page([self._contact(doc) for doc in docs], cursor)

    def count_contacts(self, where: ContactFilter) -> int:
        return sum(1 for _ in self._contact_docs(where))

    def search_contacts(self, query: str, page: PageRequest) -> Page[Contact]:
        """A scan, newest stored first. `query` has 3+ characters."""
        text = query.strip().lower()
        digits = phone_query_digits(query)

        def matches(doc: Doc) -> bool:
            if text in (doc.get("name") or "").lower() or text in (doc.get("email") or "").lower():
                return True
            if digits is None:
                return False
            found = phone_digits(doc.get("phone"), doc.get("phone_e164"))
            return found is not None and digits in found

        after = None if page.cursor is None else int_cursor(page.cursor)
        found, cursor = newest_stored(filter(matches, self.txn.scan(self.home / "contacts")), page, after)
        return Page([self._contact(doc) for doc in found], cursor)

    def search_names(self, prefix: str, page: PageRequest) -> Page[Contact]:
        """A scan, by name key then stored stamp (the SQL stores' order: name key, then row number)."""
        keyed = ((name_key(doc.get("name") or ""), doc[STORED], doc) for doc in self.txn.scan(self.home / "contacts"))
        found = ((key, stamp, doc) for key, stamp, doc in keyed if key.startswith(prefix))
        if page.cursor is not None:
            after = name_cursor(page.cursor)
            found = (item for item in found if (item[0], item[1]) > after)
        best = heapq.nsmallest(page.limit + 1, found, key=lambda item: (item[0], item[1]))
        chosen, cursor = cut_page(best, page.limit, lambda item: (item[0], item[1]))
        return Page([self._contact(doc) for _, _, doc in chosen], cursor)

    # ------------------------------------------------------------------ templates
    def get_template(self, template_id: str) -> WorkflowTemplate | None:
        _, doc = self._get_record("templates", template_id)
        return WorkflowTemplate.model_validate(fields(doc)) if doc else None

    def insert_template(self, template: WorkflowTemplate) -> None:
        path = _required(self._record("templates", template.id), "template id")
        doc = {**template.model_dump(mode="json"), "trigger_errors": [], STORED: self.txn.stamp()}
        self._insert_new(path, doc)
        self._sync_hooks(template, template.id)

    def update_template(self, template: WorkflowTemplate) -> None:
        path = _required(self._record("templates", template.id), "template id")
        old = self.txn.get(path)
        if old is None:
            raise RuntimeError(f"template {template.id} is not stored")
        kept = {"created_at": old["created_at"], "trigger_errors": old.get("trigger_errors", []), STORED: old[STORED]}
        self.txn.put(path, {**template.model_dump(mode="json"), **kept})
        self._sync_hooks(template, template.id)

    def delete_template(self, template_id: str) -> bool:
        path, doc = self._get_record("templates", template_id)
        if path is None or doc is None:
            return False
        self.txn.put(path, None)
        self._sync_hooks(None, template_id)
        versions = self.layout.versions_dir(self.tenant, template_id)
        assert versions is not None
        for version_doc in list(self.txn.scan(versions)):
            version = self.layout.version(self.tenant, template_id, str(version_doc.get("version")))
            if version is not None:
                self.txn.put(version, None)
        self.txn.after_commit.append(lambda: disk.remove_empty_dir(versions))
        return True

    def list_templates(self, tag: str | None, page: PageRequest) -> Page[WorkflowTemplate]:
        docs = self.txn.scan(self.home / "templates")
        if tag is not None:
            docs = (doc for doc in docs if tag in (doc.get("tags") or ()))
        found, cursor = newest_page(docs, page)
        return Page([WorkflowTemplate.model_validate(fields(doc)) for doc in found], cursor)

    def insert_template_version(self, version: TemplateVersion) -> None:
        path = self.layout.version(self.tenant, version.template_id, version.version)
        self._insert_new(
            _required(path, "template version"), {**version.model_dump(mode="json"), STORED: self.txn.stamp()}
        )

    def delete_template_version(self, template_id: str, version: str) -> None:
        path = self.layout.version(self.tenant, template_id, version)
        if path is not None and self.txn.get(path) is not None:
            self.txn.put(path, None)

    def list_template_versions(self, template_id: str, page: PageRequest) -> Page[TemplateVersion]:
        folder = self.layout.versions_dir(self.tenant, template_id)
        if folder is None:
            return Page([], None)
        docs, cursor = newest_page(self.txn.scan(folder), page)
        return Page([TemplateVersion.model_validate(fields(doc)) for doc in docs], cursor)

    # ------------------------------------------------------------------ instances
    def put_snapshot(self, snapshot: Snapshot) -> None:
        path = _required(self._record("snapshots", snapshot.id), "snapshot id")
        if self.txn.peek(path) is None:  # content-addressed: a copy written at the same time is the same
            self.txn.put(path, {"id": snapshot.id, "start_node": snapshot.start_node, "nodes": snapshot.nodes})

    def _snapshot(self, snapshot_id: str) -> tuple[str, dict[str, Node]]:
        def read() -> tuple[str, Any]:
            path = self._record("snapshots", snapshot_id)
            doc = None if path is None else self.txn.peek(path)
            if doc is None:
                raise StoreError(f"the frozen nodes {snapshot_id} of an instance are missing from the store")
            return doc["start_node"], doc["nodes"]

        return self.snapshots.load(self.tenant, snapshot_id, read)

    def _instance(self, doc: Doc) -> WorkflowInstance:
        start_node, nodes = self._snapshot(doc["snapshot_id"])
        kept = fields(doc, TIMELINE, "snapshot_id", *WORKER)
        return WorkflowInstance.model_validate({**kept, "start_node": start_node, "nodes": nodes})

    def get_instance(self, instance_id: str) -> WorkflowInstance | None:
        _, doc = self._get_record("instances", instance_id)
        return self._instance(doc) if doc else None

    @staticmethod
    def _instance_fields(instance: WorkflowInstance) -> Doc:
        return instance.model_dump(mode="json", exclude={"nodes", "timeline", "start_node"}) | enrol_key_field(instance)

    def _sync_due(self, old: Doc | None, new: Doc | None) -> None:
        """Keep the instance's `.due/` entry in step with its wake time and status."""
        before, after = self.layout.due_entry(old), self.layout.due_entry(new)
        if before != after:
            if before is not None:
                self.txn.put(before, None)
            if after is not None and new is not None:
                self.txn.put(after, {"tenant": new["tenant"], "id": new["id"]})

    def insert_instance(self, instance: WorkflowInstance, snapshot_id: str) -> None:
        path = _required(self._record("instances", instance.id), "instance id")
        links = _required(self._record("contact-instances", instance.contact_id), "contact id")
        doc = {**self._instance_fields(instance), "snapshot_id": snapshot_id, TIMELINE: [], STORED: self.txn.stamp()}
        self._insert_new(path, doc)
        self._sync_due(None, doc)
        self._count_move(instance.template_id, None, doc)
        self.txn.put(links, {"instance_ids": [*self._links(instance.contact_id, lock=True), instance.id]})

    def update_instance(self, instance: WorkflowInstance) -> None:
        path = _required(self._record("instances", instance.id), "instance id")
        old = self.txn.get(path)
        if old is None or old["revision"] != instance.revision - 1:
            raise RuntimeError(f"instance {instance.id} changed under a write lock (revision {instance.revision})")
        fixed = {key: old[key] for key in ("contact_id", "template_id", "template_version", "created_at")}
        keep = {"snapshot_id": old["snapshot_id"], TIMELINE: old[TIMELINE], STORED: old[STORED]}
        doc = {**self._instance_fields(instance), **fixed, **keep}
        self.txn.put(path, doc)
        self._sync_due(old, doc)
        self._sync_enrol_key(old, doc)
        self._count_move(old["template_id"], old, doc)

    def rebase_instance(self, instance_id: str, snapshot_id: str, template_version: str) -> None:
        path = _required(self._record("instances", instance_id), "instance id")
        doc = self.txn.get(path)
        if doc is not None:
            self.txn.put(path, {**doc, "snapshot_id": snapshot_id, "template_version": template_version})

    def delete_instance(self, instance_id: str) -> bool:
        path, old = self._get_record("instances", instance_id)
        if path is None or old is None:
            return False
        self.txn.put(path, None)
        self.blank_events(old[TIMELINE])
        self._sync_due(old, None)
        self._sync_enrol_key(old, None)
        self._count_move(old["template_id"], old, None)
        links = self._record("contact-instances", old["contact_id"])
        if links is not None:
            kept = [i for i in self._links(old["contact_id"], lock=True) if i != instance_id]
            self.txn.put(links, {"instance_ids": kept} if kept else None)
        return True

    def _instances_of(self, contact_id: str, *, lock: bool = False) -> Iterator[Doc]:
        for instance_id in self._links(contact_id):
            path = self._record("instances", instance_id)
            doc = None if path is None else (self.txn.get(path) if lock else self.txn.peek(path))
            if doc is not None:
                yield doc

    def list_instances(self, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]:
        scan = self.txn.scan(self.home / "instances")
        docs = scan if where.contact_id is None else self._instances_of(where.contact_id)
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

        found, cursor = newest_page(filter(matches, docs), page)
        return Page([self._instance(doc) for doc in found], cursor)

    def unfinished_instances_of_contact(self, contact_id: str) -> list[WorkflowInstance]:
        found = [doc for doc in self._instances_of(contact_id, lock=True) if doc["status"] not in FINISHED_STATUSES]
        found.sort(key=lambda doc: (parse_time(doc["created_at"]), doc[STORED]))
        return [self._instance(doc) for doc in found]

    def release_work(self, instance_id: str, worker_id: str) -> None:
        path, doc = self._get_record("instances", instance_id)
        if path is not None and doc is not None and doc.get("worker_id") == worker_id:
            self.txn.put(path, fields(doc, *WORKER) | {STORED: doc[STORED]})

    def enrolled_contacts(self, template_id: str, contact_ids: Sequence[str]) -> set[str]:
        """Reads each contact's instances through its `contact-instances` list, not the whole folder."""
        return {
            contact_id
            for contact_id in set(contact_ids)
            if any(
                doc["template_id"] == template_id and doc["status"] not in FINISHED_STATUSES
                for doc in self._instances_of(contact_id)
            )
        }

    # ------------------------------------------------------------------ contacts import
    def find_contacts(
        self, *, ids: Sequence[str], external_ids: Sequence[str], emails: Sequence[str], phones: Sequence[str]
    ) -> list[Contact]:
        """Ids and external ids through their files; emails and phones by one scan of the contacts (this store
        has no index of them: docs/performance.md)."""
        found: dict[str, Contact] = {}
        for contact_id in ids:
            contact = self.get_contact(contact_id)
            if contact is not None:
                found[contact.id] = contact
        for external_id in external_ids:
            contact = self.get_contact_by_external_id(external_id)
            if contact is not None:
                found[contact.id] = contact
        wanted_emails, wanted_phones = set(emails), set(phones)
        if wanted_emails or wanted_phones:
            for doc in self.txn.scan(self.home / "contacts"):
                email = doc.get("email")
                if (email and email.lower() in wanted_emails) or doc.get("phone_e164") in wanted_phones:
                    if doc["id"] not in found:
                        contact = self.get_contact(doc["id"])  # locked in a write
                        if contact is not None:
                            found[contact.id] = contact
        return list(found.values())

    def contacts_with_instances(self, contact_ids: Sequence[str]) -> set[str]:
        return {contact_id for contact_id in contact_ids if self._links(contact_id)}

    def stage_job_rows(self, job_id: str, seq: int, items: Sequence[dict[str, Any]]) -> None:
        path = _required(self.layout.job_rows(self.tenant, job_id, seq), "job id")
        self.txn.put(path, {"job_id": job_id, "seq": seq, "items": list(items)})

    def job_rows(self, job_id: str, seq: int) -> list[dict[str, Any]] | None:
        path = self.layout.job_rows(self.tenant, job_id, seq)
        doc = None if path is None else self.txn.get(path)
        return None if doc is None else list(doc["items"])

    def delete_job_rows(self, job_id: str, seq: int | None = None) -> None:
        folder = self.layout.job_rows(self.tenant, job_id)
        if folder is None:
            return
        if seq is not None:
            paths = [folder / f"{seq:09d}.json"]
        else:
            paths = [folder / f"{doc['seq']:09d}.json" for doc in self.txn.scan(folder)]
        for path in paths:
            if self.txn.get(path) is not None:
                self.txn.put(path, None)
        self.txn.after_commit.append(lambda: disk.remove_empty_dir(folder))

    # ------------------------------------------------------------------ jobs
    def insert_job(self, job: JobRecord) -> None:
        path = _required(self._record("jobs", job.id), "job id")
        self._insert_new(path, {**job.model_dump(mode="json"), "tenant": self.tenant, STORED: self.txn.stamp()})

    def get_job(self, job_id: str) -> JobRecord | None:
        _, doc = self._get_record("jobs", job_id)
        return stored_job(doc) if doc else None

    def update_job(self, job: JobRecord) -> bool:
        path, old = self._get_record("jobs", job.id)
        if path is None or old is None or old["revision"] != job.revision - 1:
            return False  # another worker took the job over (or it is gone)
        self.txn.put(path, job_saved(job, old))
        return True

    def list_jobs(self, page: PageRequest) -> Page[JobRecord]:
        docs, cursor = newest_page(self.txn.scan(self.home / "jobs"), page)
        return Page([stored_job(doc) for doc in docs], cursor)

    # ------------------------------------------------------------------ the work queue
    def _task_docs(self, where: TaskFilter, now: datetime) -> list[Doc]:
        """The tenant's tasks matching `where`, oldest first (a scan)."""
        found = []
        for doc in self.txn.scan(self.home / "instances"):
            if doc.get("task_since") is None or doc["status"] not in MOVABLE_STATUSES:
                continue
            if where.template_id is not None and doc["template_id"] != where.template_id:
                continue
            if where.held_by is not None and not (doc.get("held_by") == where.held_by and _lease_runs(doc, now)):
                continue
            if where.action is not None and task_action(self._instance(doc)) != where.action:
                continue
            if (where.county is not None or where.tag is not None) and not self._contact_matches(doc, where):
                continue
            found.append(doc)
        found.sort(key=_task_key)
        return found

    def _contact_matches(self, doc: Doc, where: TaskFilter) -> bool:
        path = self._record("contacts", doc["contact_id"])
        contact = None if path is None else self.txn.peek(path)
        if contact is None:
            return False
        if where.county is not None and contact.get("county") != where.county:
            return False
        return where.tag is None or where.tag in (contact.get("tags") or ())

    def list_tasks(self, where: TaskFilter, now: datetime, page: PageRequest) -> Page[WorkflowInstance]:
        docs = self._task_docs(where, now)
        if page.cursor is not None:
            after = time_cursor(page.cursor)
            docs = [doc for doc in docs if _task_key(doc) > after]
        chosen, cursor = cut_page(docs[: page.limit + 1], page.limit, lambda doc: (doc["task_since"], doc[STORED]))
        return Page([self._instance(doc) for doc in chosen], cursor)

    def next_open_task(self, where: TaskFilter, now: datetime) -> WorkflowInstance | None:
        for doc in self._task_docs(where, now):
            path = self.home / "instances" / f"{doc['id']}.json"
            if not self.txn.lock_if_free(path):
                continue  # someone is claiming it now
            current = self.txn.get(path)
            if current is None or current.get("task_since") is None or current["status"] not in MOVABLE_STATUSES:
                continue
            if current.get("held_by") and _lease_runs(current, now):
                continue
            found = self._instance(current)
            if found.task_since is not None and found.task_since > now:
                continue  # opens to claims later (contact hours)
            return found
        return None

    # ------------------------------------------------------------------ events
    def append_events(self, events: Sequence[Event]) -> None:
        if not events:
            return
        by_file: dict[Path, list[Any]] = {}
        numbered = []
        for added in events:
            entry = {**added.model_dump(mode="json"), STORED: self.txn.stamp()}
            numbered.append(entry)
            if added.instance_id is not None:
                path = self._record("instances", added.instance_id)
            elif added.contact_id is not None:
                path = self._record("contacts", added.contact_id)
            else:
                continue  # a tenant-level event (a subscription disabled): in the outbox only
            if path is None:
                raise RuntimeError(f"event {added.id} names a record that cannot exist")
            by_file.setdefault(path, []).append(entry)
        self.number_events(numbered)
        for path, entries in by_file.items():
            doc = self.txn.get(path)
            if doc is None:
                raise RuntimeError(f"events for {path.stem}, which is not stored")
            self.txn.put(path, {**doc, TIMELINE: [*doc[TIMELINE], *entries]})
        tally = Tally()
        tally.events(events)
        self._add_counts(tally)

    def instance_events(self, instance_id: str, page: PageRequest, newest_first: bool = False) -> Page[Event]:
        path = self._record("instances", instance_id)
        doc = None if path is None else self.txn.peek(path)
        timeline: list[Any] = doc[TIMELINE] if doc else []
        after = None if page.cursor is None else int_cursor(page.cursor)
        if newest_first:
            positions = range(len(timeline) - 1 if after is None else min(after, len(timeline)) - 1, -1, -1)
        else:
            positions = range(0 if after is None else after + 1, len(timeline))
        chosen, cursor = cut_page(positions[: page.limit + 1], page.limit, lambda position: (position,))
        return Page([event(timeline[i]) for i in chosen], cursor)

    def contact_events(self, contact_id: str, page: PageRequest) -> Page[Event]:
        """Newest stored first: the contact's own events and its instances'."""
        sources = list(self._instances_of(contact_id))
        path = self._record("contacts", contact_id)
        contact = None if path is None else self.txn.peek(path)
        if contact is not None:
            sources.append(contact)
        found = (entry for doc in sources for entry in doc[TIMELINE] if entry.get("contact_id") == contact_id)
        after = None if page.cursor is None else int_cursor(page.cursor)
        chosen, cursor = newest_stored(found, page, after)
        return Page([event(entry) for entry in chosen], cursor)


def _lease_runs(doc: Doc, now: datetime) -> bool:
    """The person holding the task still holds it (their lease has not run out)."""
    until = doc.get("lease_expires_at")
    return until is not None and parse_time(until) > now


def _task_key(doc: Doc) -> tuple[datetime, int]:
    return parse_time(doc["task_since"]), doc[STORED]
