"""The part of a tenant's transaction that holds its contact rules (services/contact_rules.py): its settings, a
template's own contact hours, and the sends frequency caps count."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from ..models.contact_rules import ContactHours, ContactRules, TenantSettings


class RulesTx(ABC):
    @abstractmethod
    def get_settings(self) -> TenantSettings:
        """The tenant's settings (the defaults when none were saved); never locked."""

    @abstractmethod
    def put_settings(self, settings: TenantSettings) -> None: ...

    @abstractmethod
    def record_send(self, contact_id: str, channel: str, at: datetime) -> None:
        """An automatic send to the contact on `channel` went ahead at `at` (what frequency caps count)."""

    @abstractmethod
    def sends_since(self, contact_id: str, channel: str, since: datetime) -> list[datetime]:
        """When the contact's sends on `channel` after `since` went ahead, oldest first."""

    @abstractmethod
    def template_contact_hours(self, template_id: str) -> ContactHours | None:
        """The template's own contact hours (None: it has none, or there is no such template); never locked."""

    def contact_rules(self, template_id: str) -> ContactRules:
        """The contact hours, time zone and caps a step of `template_id` follows; read once per transaction (a
        bulk enrolment enters thousands of steps in one)."""
        memo: dict[str, ContactRules] = self.__dict__.setdefault("_contact_rules", {})
        found = memo.get(template_id)
        if found is None:
            found = memo[template_id] = ContactRules.of(*self.rules_sources(template_id))
        return found

    def rules_sources(self, template_id: str) -> tuple[TenantSettings, ContactHours | None]:
        """The tenant's settings and the template's own hours; a backend may read both at once."""
        return self.get_settings(), self.template_contact_hours(template_id)
