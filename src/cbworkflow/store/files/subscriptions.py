"""Webhook subscriptions and deliveries in the JSON-file store:

    <tenant>/subscriptions/<id>.json
    <tenant>/deliveries/<subscription id>/<delivery id>.json
    <tenant>/deliveries/<subscription id>/by-sequence/<event sequence>.json   one delivery per event and subscription
    <root>/.deliveries/<due time>.<tenant>.<subscription id>.<delivery id>.json   every pending delivery, in due order

The `.deliveries/` folder is to deliveries what `.due/` is to instances: its names say what is pending and when,
so a sender lists one folder instead of every tenant's deliveries. The order check (no earlier pending delivery
of the same subscription and instance) reads the pending deliveries themselves: this store is for small
deployments (docs/performance.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...errors import Conflict, InvalidInput
from ...models.subscriptions import DeliveryRecord, DeliveryStatus, SubscriptionRecord
from ..base import CLASH, DueDelivery, Page, PageRequest
from . import disk
from .docs import Doc, fields, newest_page
from .layout import STORED, Layout, file_name, parse_time
from .transaction import FileTransaction

_PENDING_ENTRY = re.compile(r"(\d{17})\.([a-z0-9][a-z0-9_-]{0,63})\.([a-z0-9][a-z0-9_-]{0,63})\.(.+)\.json")


def _pending_dir(layout: Layout) -> Path:
    return layout.root / ".deliveries"


def _delivery_path(layout: Layout, tenant: str, subscription_id: str, delivery_id: str) -> Path | None:
    folder, name = file_name(subscription_id), file_name(delivery_id)
    if folder is None or name is None:
        return None
    return layout.root / tenant / "deliveries" / folder / f"{name}.json"


def _pending_entry(layout: Layout, doc: Doc | None) -> Path | None:
    """The `.deliveries/` entry of a pending delivery, named by when it is due."""
    if doc is None or doc["status"] != DeliveryStatus.PENDING or not doc.get("next_attempt_at"):
        return None
    due_us = max(0, int(parse_time(doc["next_attempt_at"]).timestamp() * 1_000_000))
    return _pending_dir(layout) / f"{due_us:017d}.{doc['tenant']}.{doc['subscription_id']}.{doc['id']}.json"


def _sync_pending(txn: FileTransaction, layout: Layout, old: Doc | None, new: Doc | None) -> None:
    before, after = _pending_entry(layout, old), _pending_entry(layout, new)
    if before != after:
        if before is not None:
            txn.put(before, None)
        if after is not None and new is not None:
            txn.put(after, {"tenant": new["tenant"], "id": new["id"]})


def _lease_free(doc: Doc, now: datetime) -> bool:
    until = doc.get("lease_until")
    return until is None or parse_time(until) < now


def _delivery_doc(record: DeliveryRecord, stored: int) -> Doc:
    return {**record.model_dump(mode="json"), STORED: stored}


class FileSubscriptions:
    """The subscriptions part of a tenant's `FileTx`."""

    txn: FileTransaction
    layout: Layout
    tenant: str
    home: Path

    def _subscription_path(self, subscription_id: str) -> Path | None:
        return self.layout.record(self.tenant, "subscriptions", subscription_id)

    def insert_subscription(self, record: SubscriptionRecord) -> None:
        path = self._subscription_path(record.id)
        if path is None:
            raise InvalidInput("subscription id: not a valid id")
        if self.txn.get(path) is not None:
            raise Conflict(CLASH)
        self.txn.put(path, {**record.model_dump(mode="json"), "tenant": self.tenant, STORED: self.txn.stamp()})

    def get_subscription(self, subscription_id: str) -> SubscriptionRecord | None:
        path = self._subscription_path(subscription_id)
        doc = None if path is None else self.txn.get(path)
        return SubscriptionRecord.model_validate(fields(doc)) if doc else None

    def update_subscription(self, record: SubscriptionRecord) -> None:
        path = self._subscription_path(record.id)
        old = None if path is None else self.txn.get(path)
        if path is None or old is None:
            raise RuntimeError(f"subscription {record.id} is not stored")
        kept = {"tenant": self.tenant, "created_at": old["created_at"], STORED: old[STORED]}
        self.txn.put(path, {**record.model_dump(mode="json"), **kept})

    def delete_subscription(self, subscription_id: str) -> bool:
        path = self._subscription_path(subscription_id)
        if path is None or self.txn.get(path) is None:
            return False
        self.txn.put(path, None)
        folder = self.home / "deliveries" / subscription_id
        for doc in list(self.txn.scan(folder)):
            self.txn.put(folder / f"{doc['id']}.json", None)
            self.txn.put(folder / "by-sequence" / f"{doc['event_sequence']}.json", None)
            _sync_pending(self.txn, self.layout, doc, None)
        self.txn.after_commit.append(lambda: _remove_tree(folder))
        return True

    def list_subscriptions(self, page: PageRequest) -> Page[SubscriptionRecord]:
        docs, cursor = newest_page(self.txn.scan(self.home / "subscriptions"), page)
        return Page([SubscriptionRecord.model_validate(fields(doc)) for doc in docs], cursor)

    def enabled_subscriptions(self) -> list[SubscriptionRecord]:
        docs = sorted((d for d in self.txn.scan(self.home / "subscriptions") if d["enabled"]), key=lambda d: d[STORED])
        return [SubscriptionRecord.model_validate(fields(doc)) for doc in docs]

    # ------------------------------------------------------------------ deliveries
    def insert_deliveries(self, records: Sequence[DeliveryRecord]) -> None:
        for record in records:
            path = _delivery_path(self.layout, self.tenant, record.subscription_id, record.id)
            if path is None:
                raise InvalidInput("delivery id: not a valid id")
            link = path.parent / "by-sequence" / f"{record.event_sequence}.json"
            if self.txn.get(path) is not None or self.txn.get(link) is not None:
                raise Conflict(CLASH)
            doc = {**_delivery_doc(record, self.txn.stamp()), "tenant": self.tenant}
            self.txn.put(path, doc)
            self.txn.put(link, {"id": record.id})
            _sync_pending(self.txn, self.layout, None, doc)

    def get_delivery(self, subscription_id: str, delivery_id: str) -> DeliveryRecord | None:
        path = _delivery_path(self.layout, self.tenant, subscription_id, delivery_id)
        doc = None if path is None else self.txn.get(path)
        return DeliveryRecord.model_validate(fields(doc)) if doc else None

    def update_delivery(self, record: DeliveryRecord) -> None:
        path = _delivery_path(self.layout, self.tenant, record.subscription_id, record.id)
        old = None if path is None else self.txn.get(path)
        if path is None or old is None:
            raise RuntimeError(f"delivery {record.id} is not stored")
        doc = {**_delivery_doc(record, old[STORED]), "tenant": self.tenant}
        self.txn.put(path, doc)
        _sync_pending(self.txn, self.layout, old, doc)

    def list_deliveries(
        self, subscription_id: str, status: DeliveryStatus | None, page: PageRequest
    ) -> Page[DeliveryRecord]:
        folder = file_name(subscription_id)
        if folder is None:
            return Page([], None)
        docs: Any = self.txn.scan(self.home / "deliveries" / folder)
        if status is not None:
            docs = (doc for doc in docs if doc["status"] == status.value)
        found, cursor = newest_page(docs, page)
        return Page([DeliveryRecord.model_validate(fields(doc)) for doc in found], cursor)


class FileDeliveryClaims:
    """The senders' claim, part of `FileSystemTx`."""

    txn: FileTransaction
    layout: Layout

    def claim_deliveries(
        self,
        now: datetime,
        worker_id: str,
        lease_until: datetime,
        limit: int,
        in_flight: Mapping[tuple[str, str], int],
        per_subscription: int,
    ) -> list[DueDelivery]:
        pending = []  # (due, path, doc), every pending delivery: the order check needs the ones not due too
        heads: dict[tuple[str, str, str], int] = {}
        for due, tenant, subscription_id, delivery_id in self._pending():
            path = _delivery_path(self.layout, tenant, subscription_id, delivery_id)
            doc = None if path is None else self.txn.peek(path)
            if path is None or doc is None or doc["status"] != DeliveryStatus.PENDING:
                continue
            key = (tenant, subscription_id, doc["order_key"])
            heads[key] = min(heads.get(key, doc["event_sequence"]), doc["event_sequence"])
            pending.append((due, path, doc))
        room = dict(in_flight)
        subscriptions: dict[tuple[str, str], Doc | None] = {}
        claimed: list[DueDelivery] = []
        for due, path, doc in pending:
            if due > now or len(claimed) >= limit:
                break
            tenant, subscription_id = doc["tenant"], doc["subscription_id"]
            if heads[(tenant, subscription_id, doc["order_key"])] != doc["event_sequence"]:
                continue  # an earlier delivery of the same instance is still pending
            pair = (tenant, subscription_id)
            if pair not in subscriptions:
                found = self.layout.record(tenant, "subscriptions", subscription_id)
                subscriptions[pair] = None if found is None else self.txn.peek(found)
            subscription = subscriptions[pair]
            if subscription is None or not subscription["enabled"] or room.get(pair, 0) >= per_subscription:
                continue
            if not _lease_free(doc, now) or not self.txn.lock_if_free(path):
                continue  # another sender is on it
            current = self.txn.get(path)
            if current is None or _pending_entry(self.layout, current) != _pending_entry(self.layout, doc):
                continue  # changed since the listing
            if not _lease_free(current, now):
                continue
            leased = {**current, "held_by": worker_id, "lease_until": lease_until.isoformat()}
            self.txn.put(path, leased)
            room[pair] = room.get(pair, 0) + 1
            record = DeliveryRecord.model_validate(fields(leased))
            claimed.append(DueDelivery(record, subscription["url"], subscription["secret"]))
        return claimed

    def _pending(self) -> list[tuple[datetime, str, str, str]]:
        try:
            names = sorted(os.listdir(_pending_dir(self.layout)))
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            match = _PENDING_ENTRY.fullmatch(name)
            if match is None or file_name(match[4]) is None:
                continue
            due = datetime.fromtimestamp(int(match[1]) / 1_000_000, UTC)
            found.append((due, match[2], match[3], match[4]))
        return found


def _remove_tree(folder: Path) -> None:
    """The folder of a deleted subscription's deliveries, once its files are gone."""
    disk.remove_empty_dir(folder / "by-sequence")
    disk.remove_empty_dir(folder)
