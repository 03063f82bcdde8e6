"""Webhook subscriptions and deliveries in SQL: a tenant's records (`SubscriptionRows`, part of `SqlTx`) and the
senders' claim across tenants (`DeliveryClaims`, part of `SqlSystemTx`).

A delivery may be sent when it is pending and due, no live lease holds it, its subscription is enabled, and no
delivery of the same subscription and order key (the instance) with a lower event sequence is still pending. The
last condition is what keeps one instance's messages in order while letting every other instance's go: only the
head of each (subscription, instance) queue is ever eligible, so a failing delivery holds back the ones behind it
and nothing else. Both checks walk partial indexes of pending rows (`ix_deliveries_due`, `ix_deliveries_queue`),
whose condition the queries repeat word for word.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Row, Table, and_, delete, exists, insert, literal_column, or_, select, update
from sqlalchemy.sql import ColumnElement, Select

from ...models.subscriptions import DeliveryRecord, DeliveryStatus, SubscriptionRecord
from .. import schema as s
from ..base import DueDelivery, Page, PageRequest


class _Locks(Protocol):
    """`RowLocks` (tx.py), as far as the claim needs it."""

    def skip_locked(self, query: Select[Any], of: Table = ...) -> Select[Any]: ...


PENDING: ColumnElement[str] = literal_column(
    "'pending'"
)  # written out, so the partial indexes' condition matches the query's
_MUTABLE = ("status", "attempts", "next_attempt_at", "held_by", "lease_until", "redelivered_at")
CANDIDATES = 4  # rows looked at per delivery wanted: some belong to subscriptions at their concurrency limit


def _subscription(row: Any) -> SubscriptionRecord:
    return SubscriptionRecord.model_validate(row._mapping)


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord.model_validate(row._mapping)


def _subscription_values(record: SubscriptionRecord) -> dict[str, Any]:
    return record.model_dump()


def _delivery_values(record: DeliveryRecord) -> dict[str, Any]:
    values = record.model_dump(exclude={"attempts"})
    values["status"] = record.status.value
    values["attempts"] = [attempt.model_dump(mode="json") for attempt in record.attempts]
    return values


class SubscriptionRows:
    """The subscriptions part of `SqlTx`, which gives the locking and paging helpers."""

    conn: Connection
    tenant: str
    _locked: Callable[[Select[Any]], Select[Any]]
    _page: Callable[[Select[Any], Any, PageRequest], tuple[list[Row[Any]], str | None]]

    def insert_subscription(self, record: SubscriptionRecord) -> None:
        self.conn.execute(insert(s.subscriptions), {**_subscription_values(record), "tenant": self.tenant})

    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        c = s.subscriptions.c
        query = select(s.subscriptions).where(c.tenant == self.tenant, c.id == subscription_id)
        row = self.conn.execute(self._locked(query)).first()
        return _subscription(row) if row else None

    def update_subscription(self, record: SubscriptionRecord) -> None:
        c = s.subscriptions.c
        values = _subscription_values(record)
        for fixed in ("tenant", "id", "created_at"):
            del values[fixed]
        statement = update(s.subscriptions).where(c.tenant == self.tenant, c.id == record.id).values(**values)
        if self.conn.execute(statement).rowcount != 1:
            raise RuntimeError(f"subscription {record.id} is not stored")

    def delete_subscription(self, subscription_id: str) -> bool:
        c, d = s.subscriptions.c, s.deliveries.c
        gone = self.conn.execute(delete(s.subscriptions).where(c.tenant == self.tenant, c.id == subscription_id))
        if not gone.rowcount:
            return False
        self.conn.execute(delete(s.deliveries).where(d.tenant == self.tenant, d.subscription_id == subscription_id))
        return True

    def list_subscriptions(self, page: PageRequest) -> Page[SubscriptionRecord]:
        query = select(s.subscriptions).where(s.subscriptions.c.tenant == self.tenant)
        found, cursor = self._page(query, s.subscriptions, page)
        return Page([_subscription(row) for row in found], cursor)

    def enabled_subscriptions(self) -> list[SubscriptionRecord]:
        c = s.subscriptions.c
        query = select(s.subscriptions).where(c.tenant == self.tenant, c.enabled.is_(True)).order_by(c.pk)
        return [_subscription(row) for row in self.conn.execute(query)]

    # ------------------------------------------------------------------ deliveries
    def insert_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        if records:
            self.conn.execute(insert(s.deliveries), [{**_delivery_values(r), "tenant": self.tenant} for r in records])

    def get_delivery(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None:
        d = s.deliveries.c
        query = select(s.deliveries).where(
            d.tenant == self.tenant, d.subscription_id == subscription_id, d.id == delivery_id
        )
        row = self.conn.execute(self._locked(query)).first()
        return _delivery(row) if row else None

    def update_delivery(self, record: DeliveryRecord) -> None:
        d = s.deliveries.c
        values = _delivery_values(record)
        changed = {key: values[key] for key in _MUTABLE}
        statement = update(s.deliveries).where(d.tenant == self.tenant, d.id == record.id).values(**changed)
        if self.conn.execute(statement).rowcount != 1:
            raise RuntimeError(f"delivery {record.id} is not stored")

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> Page[DeliveryRecord]:
        d = s.deliveries.c
        query = select(s.deliveries).where(d.tenant == self.tenant, d.subscription_id == subscription_id)
        if status is not None:
            query = query.where(d.status == status.value)
        found, cursor = self._page(query, s.deliveries, page)
        return Page([_delivery(row) for row in found], cursor)


class DeliveryClaims:
    """The senders' claim, part of `SqlSystemTx`."""

    conn: Connection
    locks: _Locks

    def claim_deliveries(
        self,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        limit: int,
        in_flight: Mapping[tuple[str, str], int],
        per_subscription: int,
    ) -> list[DueDelivery]:
        d, c = s.deliveries.c, s.subscriptions.c
        earlier = s.deliveries.alias("earlier")
        e = earlier.c
        held_back = exists().where(
            e.tenant == d.tenant,
            e.subscription_id == d.subscription_id,
            e.order_key == d.order_key,
            e.status == PENDING,
            e.event_sequence < d.event_sequence,
        )
        enabled = exists().where(c.tenant == d.tenant, c.id == d.subscription_id, c.enabled.is_(True))
        free = or_(d.lease_until.is_(None), d.lease_until < now)
        pick = (
            select(d.pk, d.tenant, d.subscription_id)
            .where(d.status == PENDING, d.next_attempt_at <= now, free, enabled, ~held_back)
            .order_by(d.next_attempt_at, d.pk)
            .limit(limit * CANDIDATES)
        )
        # Subscriptions at their limit are left out in the query, not after it: a backlog of theirs must not fill
        # every candidate row and starve the other subscriptions (a slow receiver holds up only itself).
        full = [key for key, busy in in_flight.items() if busy >= per_subscription]
        if full:
            pick = pick.where(~or_(*(and_(d.tenant == tenant, d.subscription_id == sid) for tenant, sid in full)))
        room = dict(in_flight)
        chosen: list[int] = []
        for pk, tenant, subscription_id in self.conn.execute(self.locks.skip_locked(pick, of=s.deliveries)):
            key = (tenant, subscription_id)
            if room.get(key, 0) >= per_subscription:
                continue
            room[key] = room.get(key, 0) + 1
            chosen.append(pk)
            if len(chosen) >= limit:
                break
        if not chosen:
            return []
        claimed = self.conn.execute(
            update(s.deliveries)
            .where(d.pk.in_(chosen))
            .values(held_by=worker_id, lease_until=lease_until)
            .returning(*s.deliveries.c)
        ).all()
        pairs = {(row.tenant, row.subscription_id) for row in claimed}
        wanted = or_(*(and_(c.tenant == tenant, c.id == sid) for tenant, sid in pairs))
        found = {
            (row.tenant, row.id): row
            for row in self.conn.execute(select(c.tenant, c.id, c.url, c.secret).where(wanted))
        }
        records = sorted(
            (_delivery(row) for row in claimed), key=lambda r: (r.next_attempt_at or now, r.event_sequence)
        )
        return [
            DueDelivery(r, found[(r.tenant, r.subscription_id)].url, found[(r.tenant, r.subscription_id)].secret)
            for r in records
        ]
