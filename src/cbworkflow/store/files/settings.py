"""The tenant's contact rules in the JSON-file store: a `settings` key of its `tenant.json`, a template's own
contact hours read without locking it, and each contact's sends (`sends/<contact>.json`: channel to times), which
frequency caps count."""

from __future__ import annotations

from datetime import datetime, timedelta

from ...models.contact_rules import ContactHours, TenantSettings
from .layout import Layout
from .transaction import FileTransaction

KEEP_SENDS = timedelta(days=400)  # sends older than this count for no cap (a cap's window is at most a year)


class FileSettings:
    """The settings part of a tenant's `FileTx`."""

    txn: FileTransaction
    layout: Layout
    tenant: str

    def get_settings(self) -> TenantSettings:
        path = self.layout.tenant_file(self.tenant)
        doc = None if path is None else self.txn.peek(path)
        return TenantSettings.model_validate((doc or {}).get("settings") or {})

    def put_settings(self, settings: TenantSettings) -> None:
        path = self.layout.tenant_file(self.tenant)
        doc = None if path is None else self.txn.get(path)
        if path is None or doc is None:
            return  # no such tenant: nothing to keep them on (the service checked it exists)
        self.txn.put(path, {**doc, "settings": settings.model_dump(mode="json")})

    def template_contact_hours(self, template_id: str) -> ContactHours | None:
        path = self.layout.record(self.tenant, "templates", template_id)
        doc = None if path is None else self.txn.peek(path)
        hours = (doc or {}).get("contact_hours")
        return ContactHours.model_validate(hours) if hours else None

    def record_send(self, contact_id: str, channel: str, at: datetime) -> None:
        path = self.layout.record(self.tenant, "sends", contact_id)
        if path is None:
            return
        doc = self.txn.get(path) or {}
        kept = [when for when in doc.get(channel, []) if datetime.fromisoformat(when) > at - KEEP_SENDS]
        self.txn.put(path, {**doc, channel: [*kept, at.isoformat()]})

    def sends_since(self, contact_id: str, channel: str, since: datetime) -> list[datetime]:
        path = self.layout.record(self.tenant, "sends", contact_id)
        doc = (None if path is None else self.txn.get(path)) or {}
        return sorted(when for when in map(datetime.fromisoformat, doc.get(channel, [])) if when > since)
