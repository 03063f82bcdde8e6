"""Triggers: templates that enrol contacts by themselves (workflows.md § Triggers), and the one entry point,
`Reactions.react`, through which every change of a contact (created, tagged, sent a custom event) reaches the
templates that listen for it: their goals first (`goals.py`), then their triggers.

`react` runs in the transaction of the change. It reads what the tenant's templates listen for once
(`Tx.template_hooks`: a small indexed read, no graph), and nothing more when nobody listens, so a contacts import
pays one query per batch. A trigger whose happening matches and whose `where` is true starts an instance as
`POST /api/instances` with `start` would, a batch of them in a few statements (as bulk enrolment does):

- no double enrolment: a contact with an unfinished instance of the template is skipped, unless the trigger says
  `"reenter": true`; and since two processes may raise the same trigger for one contact at once, the instance
  carries the enrolment key `<template>:<contact>`, which the store keeps unique among unfinished instances
  (`Tx.insert_enrolments`): the second transaction inserts nothing.
- one instance per contact and template per change, however many of its triggers match; none when the same
  change completed the contact's run of that template by a goal (a goal and a trigger on one event end the run,
  they do not start it again).
- a `where` that fails or runs out of time, or a template that cannot enrol (validation errors), does not fire;
  the error is answered to the caller and kept on the template (`trigger_errors`), never silent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..engine import steps
from ..engine.sandbox import ExpressionError
from ..models.consent import BUILT_IN_ACTION_CHANNELS, Channel
from ..models.events import Event
from ..models.instances import WorkflowInstance
from ..models.templates import TemplateHooks, Trigger, TriggerError, WorkflowTemplate
from ..store.base import Tx
from .goals import GoalReached, reach_goals
from .happenings import ErrorLog, Happening, matches, where_holds
from .instances import pending_instance, template_snapshot
from .templates import report_for


@dataclass
class Reaction:
    """What the templates did about a change: instances started, instances a goal completed, errors."""

    started: list[str] = field(default_factory=list)
    goals_reached: list[GoalReached] = field(default_factory=list)
    trigger_errors: list[TriggerError] = field(default_factory=list)
    due: bool = False  # a started instance has automatic work due now: wake the worker

    def add(self, other: Reaction) -> None:
        self.started += other.started
        self.goals_reached += other.goals_reached
        self.trigger_errors += other.trigger_errors
        self.due = self.due or other.due


@dataclass(frozen=True)
class _Chosen:
    happening: Happening
    number: int  # the trigger's place in the template's `triggers`, from 1
    trigger: Trigger


class Reactions:
    """Goals and triggers for the changes of contacts, in the transactions that make them."""

    def __init__(
        self,
        automatic_actions: frozenset[str] = frozenset(),
        wake: Callable[[], None] = lambda: None,
        channels: Mapping[str, Channel] = BUILT_IN_ACTION_CHANNELS,
    ) -> None:
        self.automatic_actions = automatic_actions
        self.channels = channels  # which channel each action uses (consent)
        self.wake = wake  # rouses this process's worker (set once the worker exists)

    def context(self, tx: Tx, instance: WorkflowInstance) -> steps.Context:
        """What the engine needs to move `instance` in `tx`: the automatic actions, the channels, the contact rules
        and the contact (read when a step needs it, never locked: the instance is, and a contact's change locks
        the contact first, then its instances)."""

        def contact() -> dict[str, Any] | None:
            found = tx.read_contact(instance.contact_id)
            return found.model_dump(mode="json") if found else None

        return steps.Context(
            self.automatic_actions, contact, self.channels, lambda: tx.contact_rules(instance.template_id)
        )

    def react(self, tx: Tx, happenings: Sequence[Happening], *, now: datetime, actor: str) -> Reaction:
        """Reach the goals and fire the triggers the happenings match, in `tx`."""
        if not happenings:
            return Reaction()
        hooks = tx.template_hooks()
        if not hooks:
            return Reaction()
        errors = ErrorLog(now)
        reaction = Reaction(goals_reached=reach_goals(tx, hooks, happenings, errors, now=now, actor=actor))
        ended = {(g.template_id, g.contact_id) for g in reaction.goals_reached}
        for template in hooks:
            chosen = self._chosen(template, happenings, errors, now)
            for contact_id in [c for c in chosen if (template.template_id, c) in ended]:
                del chosen[contact_id]  # the change ended its run by a goal: it does not start it again
            if chosen:
                self._enrol(tx, template.template_id, chosen, errors, reaction, now, actor)
        errors.keep(tx, hooks)
        reaction.trigger_errors = errors.all()
        return reaction

    def done(self, reaction: Reaction) -> None:
        """After the transaction committed: wake the worker when a started instance has work due."""
        if reaction.due:
            self.wake()

    @staticmethod
    def _chosen(
        template: TemplateHooks, happenings: Sequence[Happening], errors: ErrorLog, now: datetime
    ) -> dict[str, _Chosen]:
        """The contacts the template's triggers enrol, each with the first trigger that fired for it."""
        chosen: dict[str, _Chosen] = {}
        for happening in happenings:
            for number, trigger in enumerate(template.triggers, start=1):
                if happening.contact.id in chosen or not matches(trigger, happening):
                    continue
                try:
                    fires = where_holds(trigger.where, happening, now)
                except ExpressionError as exc:
                    errors.failed(template.template_id, "trigger", str(number), trigger.on, exc, happening)
                    continue
                if fires:
                    chosen[happening.contact.id] = _Chosen(happening, number, trigger)
        return chosen

    def _enrol(
        self,
        tx: Tx,
        template_id: str,
        chosen: dict[str, _Chosen],
        errors: ErrorLog,
        reaction: Reaction,
        now: datetime,
        actor: str,
    ) -> None:
        template = tx.get_template(template_id)
        if template is None:
            return
        report = report_for(template)
        if not report.valid:
            problem = "; ".join(e.message for e in report.errors[:3])
            for c in chosen.values():
                message = f"the template has validation errors, so it enrols no one: {problem}"
                errors.add(template_id, "trigger", str(c.number), c.trigger.on, message, c.happening.contact.id)
            return
        checked = [cid for cid, c in chosen.items() if not c.trigger.reenter and not c.happening.new]
        enrolled = tx.enrolled_contacts(template_id, checked) if checked else set()
        made: list[WorkflowInstance] = []
        events: list[Event] = []
        for contact_id, c in chosen.items():
            if contact_id in enrolled:
                continue
            instance, started = self._started(tx, template, c, now, actor)
            made.append(instance)
            events += started
        if not made:
            return
        snapshot = template_snapshot(tx.tenant, template)
        tx.put_snapshot(snapshot)
        inserted = tx.insert_enrolments(made, snapshot.id)
        tx.append_events([e for e in events if e.instance_id in inserted])
        for instance in made:
            if instance.id in inserted:
                reaction.started.append(instance.id)
                reaction.due = reaction.due or (instance.wake_at is not None and instance.wake_at <= now)

    def _started(
        self, tx: Tx, template: WorkflowTemplate, c: _Chosen, now: datetime, actor: str
    ) -> tuple[WorkflowInstance, list[Event]]:
        """A new instance for the chosen contact, started (entered its start node) before it is stored."""
        contact = c.happening.contact
        instance = pending_instance(tx.tenant, contact.id, template, now)
        if not c.trigger.reenter:
            instance.enrol_key = f"{template.id}:{contact.id}"
        events = steps.created_events(instance, actor, {"trigger": _described(c)})
        ctx = steps.Context(
            self.automatic_actions,
            lambda: contact.model_dump(mode="json"),
            self.channels,
            lambda: tx.contact_rules(template.id),
        )
        step = steps.start(instance, now, actor, ctx=ctx)  # the copy keeps the enrolment key
        return step.instance, events + step.events


def _described(c: _Chosen) -> dict[str, Any]:
    """How the `instance_created` event names the trigger that started the instance."""
    described: dict[str, Any] = {"number": c.number, "on": c.trigger.on}
    if c.trigger.tag:
        described["tag"] = c.trigger.tag
    if c.trigger.event:
        described["event"] = c.trigger.event
    return described
