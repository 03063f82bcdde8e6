"""`SystemTx` over SQLAlchemy Core: the calls that span tenants, shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, Connection, delete, func, insert, or_, select, update

from ...models.access import Tenant
from ...models.jobs import JobRecord, JobStatus
from ...models.users import UserRecord
from .. import schema as s
from ..base import DueWork, Page, PageRequest, SystemTx, TokenRecord, Tx
from ..jobs import claimed
from ..paging import cut_page, time_id_cursor
from . import rows
from .deliveries import DeliveryClaims
from .tx import RowLocks, save_job


class SqlSystemTx(DeliveryClaims, SystemTx):
    """A transaction on one connection, over every tenant; `for_tenant` gives a tenant's `Tx` on the same one."""

    def __init__(self, conn: Connection, locks: RowLocks, tenant_tx: Callable[[str], Tx]) -> None:
        self.conn = conn
        self.locks = locks
        self._tenant_tx = tenant_tx

    def for_tenant(self, tenant: str) -> Tx:
        return self._tenant_tx(tenant)

    # ------------------------------------------------------------------ tenants
    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self.conn.execute(select(s.tenants).where(s.tenants.c.id == tenant_id)).first()
        return rows.tenant(row) if row else None

    def insert_tenant(self, tenant: Tenant) -> None:
        self.conn.execute(insert(s.tenants).values(**tenant.model_dump()))

    def count_tenants(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(s.tenants)).scalar_one())

    def list_tenants(self, page: PageRequest) -> Page[Tenant]:
        """Newest first on (created_at, id): tenants have no integer key, and their ids are unique."""
        t = s.tenants.c
        query = select(s.tenants)
        if page.cursor is not None:
            when, last = time_id_cursor(page.cursor)
            query = query.where(rows.beyond((t.created_at, t.id), (when, last)))
        found = self.conn.execute(query.order_by(t.created_at.desc(), t.id.desc()).limit(page.limit + 1)).all()
        chosen, cursor = cut_page(found, page.limit, lambda row: (row.created_at.isoformat(), row.id))
        return Page([rows.tenant(r) for r in chosen], cursor)

    # ------------------------------------------------------------------ authentication
    def find_token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        row = self.conn.execute(select(s.tokens).where(s.tokens.c.secret_hash == secret_hash)).first()
        return TokenRecord(token=rows.token(row), secret_hash=row.secret_hash) if row else None

    def find_users_by_email(self, email_key: str, limit: int) -> list[UserRecord]:
        u = s.users.c  # along ix_users_email_key, in its order
        query = select(s.users).where(u.email_key == email_key).order_by(u.created_at, u.pk).limit(limit)
        return [rows.user(row) for row in self.conn.execute(query)]

    # ------------------------------------------------------------------ the worker's due work
    def claim_due(
        self, now: datetime, worker_id: str, lease_until: datetime, limit: int, others: int | None = None
    ) -> list[DueWork]:
        i = s.instances.c
        free = or_(i.worker_lease_until.is_(None), i.worker_lease_until < now)
        pick = (
            select(i.pk, i.tenant, i.id, i.revision, i.waiting_for)
            .where(s.MOVABLE_SQL, i.wake_at <= now, free)
            .order_by(i.wake_at)
            .limit(limit)
        )
        taken: dict[int, DueWork] = {}
        found = self.conn.execute(self.locks.skip_locked(pick)).all()
        for row in found:
            work = DueWork(row.tenant, row.id, row.revision, row.waiting_for)
            if others is None or work.timer:
                taken[row.pk] = work
            elif others > 0:
                others -= 1
                taken[row.pk] = work
        if len(found) == limit and len(taken) < limit:
            # Slow work this worker cannot start filled the pick: timers due behind it are looked for alone, so
            # a backlog of models or webhooks never holds them back (along their own index).
            timers = pick.where(s.TIMER_DUE_SQL)
            for row in self.conn.execute(self.locks.skip_locked(timers)).all():
                if len(taken) < limit and row.pk not in taken:
                    taken[row.pk] = DueWork(row.tenant, row.id, row.revision, row.waiting_for)
        if taken:  # the rows picked are locked (SQLite: the one writer) until this transaction ends
            leased = update(s.instances).where(rows.among(self.conn, i.pk, list(taken), BigInteger))
            self.conn.execute(leased.values(worker_id=worker_id, worker_lease_until=lease_until))
        return list(taken.values())

    def next_wake(self, now: datetime) -> datetime | None:
        i = s.instances.c
        free = or_(i.worker_lease_until.is_(None), i.worker_lease_until < now)
        earliest: datetime | None = self.conn.execute(
            select(i.wake_at).where(s.MOVABLE_SQL, i.wake_at.is_not(None), free).order_by(i.wake_at).limit(1)
        ).scalar_one_or_none()
        leased: datetime | None = self.conn.execute(
            select(func.min(i.worker_lease_until)).where(s.MOVABLE_SQL, i.wake_at <= now, i.worker_lease_until >= now)
        ).scalar_one()
        found = [t for t in (earliest, leased) if t is not None]
        return min(found) if found else None

    # ------------------------------------------------------------------ the worker's jobs
    def claim_job(self, now: datetime, worker_id: str, lease_until: datetime) -> JobRecord | None:
        j = s.jobs.c  # along the partial ix_jobs_unfinished, whose condition is repeated word for word
        free = or_(j.status == JobStatus.QUEUED.value, j.lease_until.is_(None), j.lease_until < now)
        pick = select(s.jobs).where(s.UNFINISHED_JOBS_SQL, free).order_by(j.created_at, j.id).limit(1)
        row = self.conn.execute(self.locks.skip_locked(pick, of=s.jobs)).first()
        if row is None:
            return None
        job = claimed(rows.job(row), now, worker_id, lease_until)
        if not save_job(self.conn, row.tenant, job):
            raise RuntimeError(f"job {job.id} changed under a write lock (revision {job.revision})")
        return job

    # ------------------------------------------------------------------ the outbox
    def sequence_heads(self) -> dict[str, int]:
        q = s.event_sequences.c
        return {str(tenant): int(last) for tenant, last in self.conn.execute(select(q.tenant, q.last)).all()}

    # ------------------------------------------------------------------ maintenance
    def count_instances_by_status(self) -> dict[str, int]:
        i = s.instances.c
        counted = self.conn.execute(select(i.status, func.count()).group_by(i.status)).all()
        return {str(status): int(count) for status, count in counted}

    def purge_idempotency(self, before: datetime) -> int:
        done = self.conn.execute(delete(s.idempotency_keys).where(s.idempotency_keys.c.created_at < before))
        return int(done.rowcount)

    def purge_sessions(self, before: datetime) -> int:
        done = self.conn.execute(delete(s.sessions).where(s.sessions.c.expires_at < before))  # ix_sessions_expires
        return int(done.rowcount)
