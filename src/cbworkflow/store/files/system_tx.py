"""The calls that span tenants, over the JSON files: tenants, token lookup by hash, people by address (through
`.user-emails/`), the worker's `.due/` index, and maintenance scans of every tenant's folder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...errors import Conflict, InvalidInput
from ...ids import SLUG_RE
from ...models.access import Tenant
from ...models.jobs import JobRecord
from ...models.users import UserRecord
from ..base import CLASH, DueWork, Page, PageRequest, SnapshotCache, SystemTx, TokenRecord, Tx
from ..jobs import claimed
from ..paging import time_id_cursor
from .docs import Doc, fields, job_free, job_saved, lease_free, newest_page, token_record
from .docs import job as stored_job
from .layout import STORED, Layout, hashed, parse_time
from .people import user_record
from .subscriptions import FileDeliveryClaims
from .tenant_tx import FileTx
from .transaction import FileTransaction


def _tenant_key(doc: Doc) -> tuple[datetime, Any]:
    return parse_time(doc["created_at"]), doc["id"]


class FileSystemTx(FileDeliveryClaims, SystemTx):
    def __init__(self, txn: FileTransaction, layout: Layout, snapshots: SnapshotCache) -> None:
        self.txn = txn
        self.layout = layout
        self.snapshots = snapshots

    def for_tenant(self, tenant: str) -> Tx:
        return FileTx(self.txn, self.layout, self.snapshots, tenant)

    # ------------------------------------------------------------------ tenants
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        path = self.layout.tenant_file(tenant_id)
        doc = None if path is None else self.txn.peek(path)
        return Tenant.model_validate(fields(doc)) if doc else None

    def insert_tenant(self, tenant: Tenant) -> None:
        path = self.layout.tenant_file(tenant.id)
        if path is None:
            raise InvalidInput(f"tenant {tenant.id!r}: not a tenant id")
        if self.txn.get(path) is not None:
            raise Conflict(CLASH)
        self.txn.put(path, tenant.model_dump(mode="json"))

    def count_tenants(self) -> int:
        return sum(1 for folder in self.layout.tenant_dirs() if (folder / "tenant.json").exists())

    def list_tenants(self, page: PageRequest) -> Page[Tenant]:
        """Newest first on (created_at, id), as the SQL stores page them."""
        docs = (doc for folder in self.layout.tenant_dirs() if (doc := self.txn.peek(folder / "tenant.json")))
        found, cursor = newest_page(docs, page, _tenant_key, time_id_cursor)
        return Page([Tenant.model_validate(fields(doc)) for doc in found], cursor)

    # ------------------------------------------------------------------ authentication
    def find_token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        link_path = self.layout.token_link(secret_hash)
        link = None if link_path is None else self.txn.peek(link_path)
        if link is None or not SLUG_RE.match(link["tenant"]):
            return None
        path = self.layout.record(link["tenant"], "tokens", link["id"])
        doc = None if path is None else self.txn.peek(path)
        return token_record(doc) if doc and doc["secret_hash"] == secret_hash else None

    def find_users_by_email(self, email_key: str, limit: int) -> list[UserRecord]:
        """Through the address's `.user-emails/` folder: a link per tenant that has someone with it."""
        found = []
        for link in self.txn.scan(self.layout.user_emails(email_key)):
            tenant = str(link.get("tenant"))
            path = self.layout.record(tenant, "users", str(link.get("id"))) if SLUG_RE.match(tenant) else None
            doc = None if path is None else self.txn.peek(path)
            if doc is not None and doc.get("email_key") == email_key and link.get("email_key") == email_key:
                found.append(doc)
        found.sort(key=lambda doc: (parse_time(doc["created_at"]), doc[STORED]))
        return [user_record(doc) for doc in found[:limit]]

    # ------------------------------------------------------------------ the worker's due work
    def claim_due(
        self, now: datetime, worker_id: str, lease_until: datetime, limit: int, others: int | None = None
    ) -> list[DueWork]:
        claimed: list[DueWork] = []
        for wake, tenant, instance_id, entry in self.layout.due():
            if wake > now or len(claimed) >= limit:
                break
            path = self.layout.home(tenant) / "instances" / f"{instance_id}.json"
            if not self.txn.lock_if_free(path):
                continue  # another worker is on it
            doc = self.txn.get(path)
            if self.layout.due_entry(doc) != entry or doc is None or not lease_free(doc, now):
                continue  # moved on since the listing, or leased
            work = DueWork(tenant, instance_id, doc["revision"], doc.get("waiting_for"))
            if others is not None and not work.timer:
                if others <= 0:
                    continue  # slow work this worker cannot start now: left to others
                others -= 1
            self.txn.put(path, {**doc, "worker_id": worker_id, "worker_lease_until": lease_until.isoformat()})
            claimed.append(work)
        return claimed

    def next_wake(self, now: datetime) -> datetime | None:
        leases: list[datetime] = []
        for wake, tenant, instance_id, _ in self.layout.due():
            if wake > now:
                return min([wake, *leases])
            doc = self.txn.peek(self.layout.home(tenant) / "instances" / f"{instance_id}.json")
            if doc is None:
                continue
            if lease_free(doc, now):
                return wake
            leases.append(parse_time(doc["worker_lease_until"]))
        return min(leases, default=None)

    # ------------------------------------------------------------------ the worker's jobs
    def claim_job(self, now: datetime, worker_id: str, lease_until: datetime) -> JobRecord | None:
        """A scan of every tenant's jobs; the one claimed is locked as `claim_due` locks an instance, so two
        processes never both claim it."""
        free = sorted(
            (parse_time(doc["created_at"]), doc["id"], folder.name)
            for folder in self.layout.tenant_dirs()
            for doc in self.txn.scan(folder / "jobs")
            if job_free(doc, now)
        )
        for _, job_id, tenant in free:
            path = self.layout.record(tenant, "jobs", job_id)
            if path is None or not self.txn.lock_if_free(path):
                continue  # another worker is on it
            doc = self.txn.get(path)
            if doc is None or not job_free(doc, now):
                continue  # claimed, finished or gone since the scan
            job = claimed(stored_job(doc), now, worker_id, lease_until)
            self.txn.put(path, job_saved(job, doc))
            return job
        return None

    # ------------------------------------------------------------------ the outbox
    def sequence_heads(self) -> dict[str, int]:
        heads = {}
        for folder in self.layout.tenant_dirs():
            head = self.txn.peek(folder / "outbox" / "head.json")
            if head and head.get("last"):
                heads[folder.name] = int(head["last"])
        return heads

    # ------------------------------------------------------------------ maintenance
    def count_instances_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for folder in self.layout.tenant_dirs():
            for doc in self.txn.scan(folder / "instances"):
                counts[doc["status"]] = counts.get(doc["status"], 0) + 1
        return counts

    def purge_idempotency(self, before: datetime) -> int:
        gone = 0
        for folder in self.layout.tenant_dirs():
            for doc in list(self.txn.scan(folder / "idempotency")):
                if parse_time(doc["created_at"]) < before:
                    self.txn.put(folder / "idempotency" / f"{hashed(doc['route'], doc['key'])}.json", None)
                    gone += 1
        return gone

    def purge_sessions(self, before: datetime) -> int:
        """A scan of every tenant's `sessions/` folder: a known cost of this store, which is for small deployments.
        Each expired session is looked at again under its lock, so one kept alive meanwhile stays."""
        gone = 0
        for folder in self.layout.tenant_dirs():
            for doc in list(self.txn.scan(folder / "sessions")):
                path = self.layout.record(folder.name, "sessions", str(doc.get("id")))
                if path is None or parse_time(doc["expires_at"]) >= before:
                    continue
                current = self.txn.get(path)
                if current is not None and parse_time(current["expires_at"]) < before:
                    self.txn.put(path, None)
                    gone += 1
        return gone
