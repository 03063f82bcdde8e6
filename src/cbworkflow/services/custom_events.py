"""Custom events (`POST /api/events`, and the `emit_event` action of one workflow telling another): they resume
the instances waiting for them, reach goals and fire triggers, all in one transaction.

An event for a contact (`contact_id`, or the contact of `instance_id`) is kept on the contact's timeline as a
contact-level `event_received`, resumes that contact's instances waiting for it (or only the instance given), and
is a happening for the templates' goals and triggers (`triggers.py`). An event for the whole tenant resumes every
instance of the tenant waiting for it; it has no contact, so it reaches no goal and fires no trigger.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..engine import steps
from ..errors import InvalidInput, NotFound
from ..ids import new_id
from ..models.access import Principal
from ..models.contacts import Contact
from ..models.events import Event, EventPost, EventResult, EventType, GoalResult
from ..models.instances import InstanceStatus
from ..store.base import InstanceFilter, PageRequest, Store, Tx
from .happenings import Happening
from .triggers import Reaction, Reactions

MAX_EVENT_TARGETS = 1000  # waiting instances one event may resume; more is a bulk job


@dataclass
class Raised:
    """What a custom event touched."""

    resumed: list[str] = field(default_factory=list)
    reaction: Reaction = field(default_factory=Reaction)


def raise_event(
    tx: Tx,
    reactions: Reactions,
    *,
    name: str,
    data: Mapping[str, Any],
    now: datetime,
    actor: str,
    contact_id: str | None = None,
    instance_id: str | None = None,
) -> Raised:
    """Raise custom event `name` in `tx`: 404 for an unknown contact or instance, 422 for an instance that is not
    the contact's."""
    waiting = f"event:{name}"
    contact: Contact | None = None
    if instance_id is not None:
        found = tx.get_instance(instance_id)
        if found is None:
            raise NotFound(f"no instance with id {instance_id!r}")
        if contact_id is not None and found.contact_id != contact_id:
            raise InvalidInput(f"instance {instance_id!r} is not an instance of contact {contact_id!r}")
        targets = [found] if found.waiting_for == waiting and found.status is InstanceStatus.WAITING else []
        contact = tx.read_contact(found.contact_id)  # an instance may outlive its contact; unlocked (lock order)
    else:
        if contact_id is not None:
            contact = tx.get_contact(contact_id)
            if contact is None:
                raise NotFound(f"no contact with id {contact_id!r}")
        where = InstanceFilter(contact_id=contact_id, status=InstanceStatus.WAITING.value, waiting_for=waiting)
        listed = tx.list_instances(where, PageRequest(limit=MAX_EVENT_TARGETS)).items
        targets = [found for i in listed if (found := tx.get_instance(i.id)) is not None]  # each locked
    raised = Raised()
    for instance in targets:
        if instance.waiting_for != waiting or instance.status is not InstanceStatus.WAITING:
            continue
        step = steps.receive_event(instance, name, dict(data), now, actor, reactions.context(tx, instance))
        tx.update_instance(step.instance)
        tx.append_events(step.events)
        raised.resumed.append(instance.id)
    if contact is not None:
        tx.append_events([_received(contact, name, data, now, actor)])
        happening = Happening(contact, "event", event=name, data=data)
        raised.reaction = reactions.react(tx, [happening], now=now, actor=actor)
    return raised


def _received(contact: Contact, name: str, data: Mapping[str, Any], now: datetime, actor: str) -> Event:
    """The contact-level record of a custom event (its instances' timelines record their own)."""
    return Event(
        id=new_id(),
        type=EventType.EVENT_RECEIVED,
        timestamp=now,
        actor=actor,
        data={"event": name, "data": dict(data)},
        message=f"Event {name} received",
        contact_id=contact.id,
    )


def result_of(name: str, raised: Raised) -> EventResult:
    reaction = raised.reaction
    return EventResult(
        name=name,
        resumed=raised.resumed,
        started=reaction.started,
        goals_reached=[
            GoalResult(instance_id=g.instance_id, template_id=g.template_id, goal=g.goal)
            for g in reaction.goals_reached
        ],
        trigger_errors=reaction.trigger_errors,
    )


class EventService:
    def __init__(self, store: Store, clock: Clock, reactions: Reactions) -> None:
        self.store = store
        self.clock = clock
        self.reactions = reactions

    async def post(self, principal: Principal, body: EventPost) -> EventResult:
        """`POST /api/events`: the event raised in one transaction; what it touched."""
        now = self.clock.now()

        def run(tx: Tx) -> Raised:
            return raise_event(
                tx,
                self.reactions,
                name=body.name,
                data=body.data,
                now=now,
                actor=principal.token_id,
                contact_id=body.contact_id,
                instance_id=body.instance_id,
            )

        raised = await self.store.write(principal.tenant, run)
        if raised.resumed:
            self.reactions.wake()  # what they entered may be due now
        self.reactions.done(raised.reaction)
        return result_of(body.name, raised)
