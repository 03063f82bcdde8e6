"""What happens to a contact that templates listen for (workflows.md § Triggers, § Goals), and the rules both
triggers and goals share: which of them a happening matches, their `where` in the sandbox, and how their failures
are kept on the template.

A happening is raised in the transaction of the change it reports (a contact created, a tag added, a custom event),
so what triggers and goals do with it commits, or rolls back, with that change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from ..engine.sandbox import ExpressionError, evaluate
from ..models.contacts import Contact
from ..models.templates import Goal, TemplateHooks, Trigger, TriggerError
from ..store.base import Tx

On = Literal["contact_created", "tag_added", "event"]

WHERE_TIMEOUT_S = 0.05  # CPU time one `where` may take (a heuristic rule's)
ERRORS_KEPT = 10  # trigger errors a template keeps, newest first
ERROR_QUIET = timedelta(minutes=1)  # the same error again within this is not written again (the template's row)


@dataclass(frozen=True)
class Happening:
    """Something that happened to `contact`: created, tagged `tag`, or sent the custom event `event` with `data`.
    `new`: the contact was created in this transaction, so it has no instances yet (nothing to look up)."""

    contact: Contact
    on: On
    tag: str | None = None
    event: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    new: bool = False

    def variables(self) -> dict[str, Any]:
        """What a `where` sees: `contact` (its fields, as the API shows them) and `event` (`name`, `data`, `tag`)."""
        name = self.event if self.on == "event" else self.on
        event = {"name": name, "data": dict(self.data), "tag": self.tag}
        return {"contact": self.contact.model_dump(mode="json"), "event": event}


def matches(hook: Trigger | Goal, happening: Happening) -> bool:
    """The trigger or goal listens for this happening."""
    if hook.on != happening.on:
        return False
    if hook.on == "tag_added":
        return hook.tag is not None and hook.tag == happening.tag
    if hook.on == "event":
        return hook.event is not None and hook.event == happening.event
    return True


def where_holds(expression: str | None, happening: Happening, now: datetime) -> bool:
    """The `where` is true for the happening (none: always); ExpressionError when it fails or runs too long."""
    if expression is None:
        return True
    return bool(evaluate(expression, happening.variables(), now=now, timeout_s=WHERE_TIMEOUT_S))


@dataclass
class ErrorLog:
    """The trigger errors of one transaction, by template: answered to the caller, and kept on the templates."""

    now: datetime
    by_template: dict[str, list[TriggerError]] = field(default_factory=dict)

    def add(
        self,
        template_id: str,
        kind: Literal["trigger", "goal"],
        which: str,
        on: str,
        message: str,
        contact_id: str | None,
    ) -> None:
        found = self.by_template.setdefault(template_id, [])
        if any((e.kind, e.which, e.message) == (kind, which, message) for e in found):
            return  # one per trigger and message in a transaction (an import's batch)
        found.append(TriggerError(at=self.now, kind=kind, which=which, on=on, message=message, contact_id=contact_id))

    def failed(
        self,
        template_id: str,
        kind: Literal["trigger", "goal"],
        which: str,
        on: str,
        exc: ExpressionError,
        happening: Happening,
    ) -> None:
        self.add(template_id, kind, which, on, f"its where expression failed: {exc}", happening.contact.id)

    def all(self) -> list[TriggerError]:
        return [error for errors in self.by_template.values() for error in errors]

    def keep(self, tx: Tx, hooks: list[TemplateHooks]) -> None:
        """Write each template's new errors in front of its stored ones, unless they were all stored in the last
        minute already: a `where` failing for every contact of an import does not rewrite the template's row for
        each batch."""
        stored = {h.template_id: h.trigger_errors for h in hooks}
        for template_id, errors in self.by_template.items():
            old = stored.get(template_id, [])
            recent = {(e.kind, e.which, e.message) for e in old if self.now - e.at < ERROR_QUIET}
            if all((e.kind, e.which, e.message) in recent for e in errors):
                continue
            fresh = {(e.kind, e.which, e.message) for e in errors}
            kept = [*errors, *(e for e in old if (e.kind, e.which, e.message) not in fresh)]
            tx.record_trigger_errors(template_id, kept[:ERRORS_KEPT])
