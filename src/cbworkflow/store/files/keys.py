"""Idempotency keys in the JSON-file store: one file per (route, key), named by their hash, under the tenant."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ..base import IdempotencyRecord
from .docs import Doc
from .layout import Layout, parse_time
from .transaction import FileTransaction


class FileKeys:
    """The idempotency-key part of a tenant's `FileTx` (plain records: the rules are the service's)."""

    txn: FileTransaction
    layout: Layout
    tenant: str

    def _idempotency(self, route: str, key: str) -> tuple[Path, Doc | None]:
        path = self.layout.idempotency(self.tenant, route, key)
        doc = self.txn.get(path)
        if doc is not None and (doc["route"], doc["key"]) != (route, key):
            doc = None
        return path, doc

    def get_idempotency(self, route: str, key: str) -> IdempotencyRecord | None:
        _, doc = self._idempotency(route, key)
        if doc is None:
            return None
        return IdempotencyRecord(**{**doc, "created_at": parse_time(doc["created_at"])})

    def insert_idempotency(self, record: IdempotencyRecord) -> bool:
        path, doc = self._idempotency(record.route, record.key)
        if doc is not None:
            return False
        self.txn.put(path, {**asdict(record), "created_at": record.created_at.isoformat()})
        return True

    def finish_idempotency(self, route: str, key: str, status_code: int, body: str) -> None:
        path, doc = self._idempotency(route, key)
        if doc is not None:
            self.txn.put(path, {**doc, "done": True, "status_code": status_code, "body": body})

    def delete_idempotency(self, route: str, key: str) -> None:
        path, doc = self._idempotency(route, key)
        if doc is not None:
            self.txn.put(path, None)
