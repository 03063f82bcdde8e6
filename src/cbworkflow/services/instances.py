"""Instances: enrol a contact in a template, then every change of the run, each one atomic.

Every change goes through `_change`: inside one store write it loads the instance (locked), asks the engine for
the step, saves the new instance and appends its events. Concurrent changes to one instance are serialised by
the store; the engine's status checks then answer 409 to whoever comes second.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..clock import Clock
from ..engine import steps
from ..engine.entering import AI_ACTOR
from ..errors import Conflict, Forbidden, InvalidInput, NotFound
from ..ids import ID_RE, new_id
from ..models.access import Principal, Role
from ..models.consent import BUILT_IN_ACTION_CHANNELS, Channel
from ..models.contacts import Contact
from ..models.events import SYSTEM_ACTOR, Event, EventType
from ..models.instances import (
    TERMINAL,
    InstanceCreate,
    InstanceStatus,
    MoveRequest,
    RetryRequest,
    TransitionRequest,
    WorkflowInstance,
)
from ..models.templates import WorkflowTemplate
from ..store.base import InstanceFilter, Page, PageRequest, Snapshot, Store, Tx
from .templates import report_for

TIMELINE_INLINE_LIMIT = 500  # events embedded in GET /instances/{id}; the rest via /timeline
MAX_NAMES = 500  # contacts or actors named in one read (a page shows at most a few hundred)


@dataclass(frozen=True)
class InstancePage:
    """What the instance's web page shows, read in one transaction: the instance (without its embedded timeline),
    its contact and template when they still exist, one page of its timeline (oldest first), and who did what."""

    instance: WorkflowInstance
    contact: Contact | None
    template: WorkflowTemplate | None
    timeline: Page[Event]
    actors: dict[str, str]  # an event's actor -> a name a person reads


def actor_names(tx: Tx, actors: Collection[str]) -> dict[str, str]:
    """Names for the actors of events: a person's name, an API token's name, the engine or the model."""
    names: dict[str, str] = {}
    for actor in list(dict.fromkeys(actors))[:MAX_NAMES]:
        if actor == SYSTEM_ACTOR:
            names[actor] = "the system"
        elif actor == AI_ACTOR:
            names[actor] = "the AI"
        elif not ID_RE.fullmatch(actor):
            continue
        elif (user := tx.get_user(actor)) is not None:
            names[actor] = user.user.name
        elif (token := tx.get_token_record(actor)) is not None:
            names[actor] = f"API token {token.token.name}" if token.token.name else "an API token"
    return names


def snapshot_of(tenant: str, start_node: str, nodes: dict[str, object]) -> Snapshot:
    """A content-addressed frozen copy: the same graph in the same tenant always gets the same id.

    The tenant is part of the hash, so two tenants with identical graphs never share a row.
    """
    canonical = json.dumps(
        {"tenant": tenant, "start_node": start_node, "nodes": nodes}, sort_keys=True, separators=(",", ":")
    )
    return Snapshot(hashlib.sha256(canonical.encode()).hexdigest()[:32], start_node, nodes)


def template_snapshot(tenant: str, template: WorkflowTemplate) -> Snapshot:
    """The frozen snapshot of the template's graph as it is now (to store with the instances made from it)."""
    assert template.start_node is not None
    return snapshot_of(tenant, template.start_node, {k: v.model_dump(mode="json") for k, v in template.nodes.items()})


def new_instance(
    tenant: str, contact_id: str, template: WorkflowTemplate, now: datetime
) -> tuple[WorkflowInstance, Snapshot]:
    """A pending instance of `template` and the frozen snapshot of its graph (to store with it)."""
    return pending_instance(tenant, contact_id, template, now), template_snapshot(tenant, template)


def pending_instance(tenant: str, contact_id: str, template: WorkflowTemplate, now: datetime) -> WorkflowInstance:
    """A new `pending` instance of `template` for the contact, before it is stored."""
    assert template.start_node is not None
    return WorkflowInstance(
        id=new_id(),
        tenant=tenant,
        contact_id=contact_id,
        template_id=template.id,
        template_version=template.version,
        start_node=template.start_node,
        status=InstanceStatus.PENDING,
        nodes=template.nodes,
        created_at=now,
        updated_at=now,
    )


def enrollable(tx: Tx, template_id: str) -> WorkflowTemplate:
    """The template contacts may be enrolled in: 404 when there is none, 422 when it has validation errors."""
    template = tx.get_template(template_id)
    if template is None:
        raise NotFound(f"no workflow template with id {template_id!r}")
    enrollable_report(template)
    return template


def enrollable_report(template: WorkflowTemplate) -> None:
    """422 naming every validation error of a template that cannot run (be enrolled in, or simulated)."""
    report = report_for(template)
    if not report.valid:
        raise InvalidInput(
            f"template {template.id!r} has validation errors; fix them before enrolling contacts: "
            + "; ".join(e.message for e in report.errors),
            errors=[e.model_dump() for e in report.errors],
        )


class InstanceService:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        automatic_actions: frozenset[str] = frozenset(),
        channels: Mapping[str, Channel] = BUILT_IN_ACTION_CHANNELS,
    ) -> None:
        self.store = store
        self.clock = clock
        self.automatic_actions = automatic_actions
        self.channels = channels  # which channel each action uses (consent)
        self.notify: Callable[[], None] = lambda: None  # wakes this process's worker when work became due

    def context(self, tx: Tx, instance: WorkflowInstance) -> steps.Context:
        """What the engine needs to enter nodes: the deployment's automatic actions and (lazily) the contact."""

        def contact() -> dict[str, object] | None:
            found = tx.read_contact(instance.contact_id)
            return found.model_dump(mode="json") if found else None

        return steps.Context(
            self.automatic_actions, contact, self.channels, lambda: tx.contact_rules(instance.template_id)
        )

    def _saved(self, instance: WorkflowInstance) -> WorkflowInstance:
        if instance.wake_at is not None and instance.wake_at <= self.clock.now():
            self.notify()
        return instance

    # ---------------------------------------------------------------- reads
    def readable(self, principal: Principal, instance: WorkflowInstance | None, instance_id: str) -> WorkflowInstance:
        """The instance, if it exists and `principal` may read it (a volunteer: only while it holds it)."""
        if instance is None:
            raise NotFound(f"no instance with id {instance_id!r}")
        if principal.role is Role.VOLUNTEER and not instance.held_by_token(principal.token_id, self.clock.now()):
            raise Forbidden("a volunteer may act only on instances it holds: claim the task first")
        return instance

    async def get(self, principal: Principal, instance_id: str) -> WorkflowInstance:
        def run(tx: Tx) -> WorkflowInstance:
            instance = self.readable(principal, tx.get_instance(instance_id), instance_id)
            page = tx.instance_events(instance_id, PageRequest(limit=TIMELINE_INLINE_LIMIT))
            instance.timeline = page.items
            return instance

        return await self.store.read(principal.tenant, run)

    async def list(self, tenant: str, where: InstanceFilter, page: PageRequest) -> Page[WorkflowInstance]:
        return await self.store.read(tenant, lambda tx: tx.list_instances(where, page))

    async def timeline(self, principal: Principal, instance_id: str, page: PageRequest) -> Page[Event]:
        def run(tx: Tx) -> Page[Event]:
            self.readable(principal, tx.get_instance(instance_id), instance_id)
            return tx.instance_events(instance_id, page)

        return await self.store.read(principal.tenant, run)

    async def summary(self, principal: Principal, instance_id: str) -> WorkflowInstance:
        """The instance alone (no timeline): one lookup, for a page that follows it live."""
        return await self.store.read(
            principal.tenant, lambda tx: self.readable(principal, tx.get_instance(instance_id), instance_id)
        )

    async def page(self, principal: Principal, instance_id: str, timeline: PageRequest) -> InstancePage:
        """The instance with its contact, its template, one page of its timeline and the names of those who acted
        (for the web page), in one read."""

        def run(tx: Tx) -> InstancePage:
            instance = self.readable(principal, tx.get_instance(instance_id), instance_id)
            events = tx.instance_events(instance_id, timeline)
            return InstancePage(
                instance,
                tx.get_contact(instance.contact_id),
                tx.get_template(instance.template_id),
                events,
                actor_names(tx, [e.actor for e in events.items] + ([instance.held_by] if instance.held_by else [])),
            )

        return await self.store.read(principal.tenant, run)

    async def contact_names(self, tenant: str, contact_ids: Collection[str]) -> dict[str, str]:
        """The names of these contacts (at most MAX_NAMES; a contact deleted since is left out), in one read: a
        list page names the contact of each instance it shows."""

        def run(tx: Tx) -> dict[str, str]:
            wanted = list(dict.fromkeys(contact_ids))[:MAX_NAMES]
            found = tx.find_contacts(ids=wanted, external_ids=(), emails=(), phones=())  # one indexed lookup
            return {contact.id: contact.name for contact in found}

        return await self.store.read(tenant, run)

    async def actor_names(self, tenant: str, actors: Collection[str]) -> dict[str, str]:
        """Names for the actors of events (`actor_names`), in one read."""
        return await self.store.read(tenant, lambda tx: actor_names(tx, actors))

    # ---------------------------------------------------------------- create / delete
    async def create(self, principal: Principal, body: InstanceCreate) -> WorkflowInstance:
        now = self.clock.now()

        def run(tx: Tx) -> WorkflowInstance:
            if tx.get_contact(body.contact_id) is None:
                raise NotFound(f"no contact with id {body.contact_id!r}")
            template = enrollable(tx, body.template_id)
            instance, snapshot = new_instance(principal.tenant, body.contact_id, template, now)
            instance.state, instance.tags, instance.metadata = body.initial_state, body.tags, body.metadata
            tx.put_snapshot(snapshot)
            tx.insert_instance(instance, snapshot.id)
            tx.append_events(steps.created_events(instance, principal.token_id))
            if not body.start:
                return instance
            step = steps.start(instance, now, principal.token_id, ctx=self.context(tx, instance))
            tx.update_instance(step.instance)
            tx.append_events(step.events)
            return step.instance

        return self._saved(await self.store.write(principal.tenant, run))

    async def delete(self, principal: Principal, instance_id: str) -> None:
        if not await self.store.write(principal.tenant, lambda tx: tx.delete_instance(instance_id)):
            raise NotFound(f"no instance with id {instance_id!r}")

    # ---------------------------------------------------------------- changes
    async def _change(
        self,
        principal: Principal,
        instance_id: str,
        decide: Callable[[Tx, WorkflowInstance], steps.Step | None],
    ) -> WorkflowInstance:
        def run(tx: Tx) -> WorkflowInstance:
            instance = self.readable(principal, tx.get_instance(instance_id), instance_id)
            step = decide(tx, instance)
            if step is None:
                return instance
            tx.update_instance(step.instance)
            tx.append_events(step.events)
            return step.instance

        return self._saved(await self.store.write(principal.tenant, run))

    async def start(self, principal: Principal, instance_id: str, on_behalf_of: str | None = None) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal,
            instance_id,
            lambda tx, i: steps.start(i, now, principal.token_id, on_behalf_of, ctx=self.context(tx, i)),
        )

    async def pause(self, principal: Principal, instance_id: str, on_behalf_of: str | None = None) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal, instance_id, lambda _tx, i: steps.pause(i, now, principal.token_id, on_behalf_of)
        )

    async def resume(self, principal: Principal, instance_id: str, on_behalf_of: str | None = None) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal,
            instance_id,
            lambda tx, i: steps.resume(i, now, principal.token_id, on_behalf_of, ctx=self.context(tx, i)),
        )

    async def cancel(
        self,
        principal: Principal,
        instance_id: str,
        on_behalf_of: str | None = None,
        reason: str | None = None,
    ) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal,
            instance_id,
            lambda _tx, i: steps.cancel(i, now, principal.token_id, on_behalf_of, reason),
        )

    async def transition(self, principal: Principal, instance_id: str, body: TransitionRequest) -> WorkflowInstance:
        now = self.clock.now()

        def decide(tx: Tx, instance: WorkflowInstance) -> steps.Step:
            node = instance.nodes.get(instance.current_node or "")
            previous = None
            if node is not None and body.outcome not in node.transitions:
                previous = _node_just_left_with(tx, instance, body.outcome)
            return steps.transition(
                instance,
                body.outcome,
                now,
                principal.token_id,
                note=body.note,
                state_updates=body.state_updates,
                expected_node=body.expected_node,
                on_behalf_of=body.actor,
                previous_node=previous,
                ctx=self.context(tx, instance),
            )

        return await self._change(principal, instance_id, decide)

    async def _enter_again(
        self, principal: Principal, instance_id: str, step: Callable[..., steps.Step], **options: Any
    ) -> WorkflowInstance:
        """Apply a recovery step, `step(instance, now, actor, ctx=…, **options)`, which enters a node."""
        now = self.clock.now()
        return await self._change(
            principal, instance_id, lambda tx, i: step(i, now, principal.token_id, ctx=self.context(tx, i), **options)
        )

    async def retry(self, principal: Principal, instance_id: str, body: RetryRequest) -> WorkflowInstance:
        """A failed instance enters again the node where it failed (409 unless it is failed)."""
        options = {"state_updates": body.state_updates, "on_behalf_of": body.actor}
        return await self._enter_again(principal, instance_id, steps.retry, **options)

    async def move(self, principal: Principal, instance_id: str, body: MoveRequest) -> WorkflowInstance:
        """Put an unfinished or failed instance at `body.node` (422 for a node not in its graph, 409 if finished)."""
        options = {"node_id": body.node, "reason": body.reason, "on_behalf_of": body.actor}
        return await self._enter_again(principal, instance_id, steps.move, **options)

    async def update_state(
        self,
        principal: Principal,
        instance_id: str,
        updates: dict[str, object],
        on_behalf_of: str | None = None,
    ) -> WorkflowInstance:
        now = self.clock.now()

        def decide(_tx: Tx, instance: WorkflowInstance) -> steps.Step:
            if instance.status in TERMINAL:
                raise Conflict(f"cannot change the state of an instance that is {instance.status.value}")
            return steps.update_state(instance, updates, now, principal.token_id, on_behalf_of)

        return await self._change(principal, instance_id, decide)

    async def add_note(
        self, principal: Principal, instance_id: str, text: str, on_behalf_of: str | None = None
    ) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal,
            instance_id,
            lambda _tx, i: steps.add_note(i, text, now, principal.token_id, on_behalf_of),
        )

    async def change_tag(self, principal: Principal, instance_id: str, tag: str, add: bool) -> WorkflowInstance:
        now = self.clock.now()
        return await self._change(
            principal, instance_id, lambda _tx, i: steps.change_tag(i, tag, add, now, principal.token_id)
        )


LEAVING = (EventType.NODE_EXITED, EventType.INSTANCE_MOVED)  # events whose node_id is a node the instance left


def _node_just_left_with(tx: Tx, instance: WorkflowInstance, outcome: str) -> str | None:
    """The node the instance last left (by an outcome or a move), if `outcome` belongs to it: then a late outcome
    is a conflict (someone moved it first), not a typo."""
    recent = tx.instance_events(instance.id, PageRequest(limit=20), newest_first=True).items
    for event in recent:
        if event.type in LEAVING and event.node_id:
            node = instance.nodes.get(event.node_id)
            if node is not None and outcome in node.transitions:
                return event.node_id
            return None
    return None
