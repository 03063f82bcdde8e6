"""Instance steps as pure functions: (instance, input, time, actor) -> (new instance, events to append).

Each function returns a `Step`; the instance service applies it inside one store transaction, so a step is
recorded whole or not at all. Entering a node runs its behaviour: an end node completes the instance; an action
waits for a person (`active`); decision, wait and webhook nodes sit `waiting` until the automatic behaviour of
the engine (or a person's `/transition`) moves them on. The engine keeps going through nodes that complete at
once, and fails the instance when one step visits more than `MAX_NODES_PER_STEP` nodes (a loop).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import Conflict, InvalidInput
from ..ids import new_id
from ..merge_patch import merge_patch
from ..models.common import MAX_STATE_BYTES, json_size
from ..models.events import SYSTEM_ACTOR, Event, EventType
from ..models.instances import MOVABLE, TERMINAL, InstanceStatus, WorkflowInstance
from ..models.templates import ActionNode, DecisionNode, EndNode, WaitNode, WebhookNode

MAX_NODES_PER_STEP = 100
MAX_TAGS = 100  # as many as a request body may carry


@dataclass
class Step:
    """What one change of an instance produced."""

    instance: WorkflowInstance
    events: list[Event] = field(default_factory=list)


class _Builder:
    """Accumulates the new instance fields and events of one step."""

    def __init__(self, instance: WorkflowInstance, now: datetime, actor: str) -> None:
        # The frozen nodes are shared, never copied (they never change); only the mutable fields are copied.
        self.instance = instance.model_copy(
            update={
                "state": copy.deepcopy(instance.state),
                "metadata": copy.deepcopy(instance.metadata),
                "tags": list(instance.tags),
                "timeline": [],
            }
        )
        self.instance.updated_at = now
        self.instance.revision += 1
        self.now = now
        self.actor = actor
        self.events: list[Event] = []

    def emit(
        self,
        type_: EventType,
        message: str,
        data: dict[str, Any] | None = None,
        node_id: str | None = None,
        actor: str | None = None,
    ) -> None:
        inst = self.instance
        self.events.append(
            Event(
                id=new_id(),
                type=type_,
                timestamp=self.now,
                node_id=node_id,
                actor=actor or self.actor,
                data=data or {},
                message=message,
                instance_id=inst.id,
                contact_id=inst.contact_id,
                template_id=inst.template_id,
            )
        )

    def step(self) -> Step:
        return Step(self.instance, self.events)

    def enter(self, node_id: str) -> None:
        """Enter `node_id` and keep going through nodes that complete at once."""
        visited = 0
        inst = self.instance
        while True:
            visited += 1
            if visited > MAX_NODES_PER_STEP:
                self.fail(f"one step visited more than {MAX_NODES_PER_STEP} nodes: the template loops", node_id)
                return
            node = inst.nodes.get(node_id)
            if node is None:
                self.fail(f"the template sends the instance to node {node_id!r}, which does not exist", node_id)
                return
            inst.current_node = node_id
            inst.wake_at = None
            inst.waiting_for = None
            self.emit(EventType.NODE_ENTERED, f"Entered {node.name or node_id}", {"node_type": node.type}, node_id)
            if isinstance(node, EndNode):  # completed by whoever's step reached it
                inst.status = InstanceStatus.COMPLETED
                inst.end_status = node.end_status
                inst.completed_at = self.now
                self.emit(
                    EventType.INSTANCE_COMPLETED,
                    f"Completed ({node.end_status})",
                    {"end_status": node.end_status},
                    node_id,
                )
                return
            if isinstance(node, ActionNode):
                inst.status = InstanceStatus.ACTIVE
                return
            # Decision, wait and webhook nodes wait for the worker or for a person.
            inst.status = InstanceStatus.WAITING
            inst.waiting_for = waiting_for(node)
            return

    def fail(self, reason: str, node_id: str | None) -> None:
        inst = self.instance
        inst.status = InstanceStatus.FAILED
        inst.completed_at = self.now
        self.emit(EventType.INSTANCE_FAILED, f"Failed: {reason}", {"error": reason}, node_id, actor=SYSTEM_ACTOR)


def waiting_for(node: DecisionNode | WaitNode | WebhookNode) -> str:
    """What an instance at `node` waits for, in words a dashboard can show: `<kind>` or `event:<name>`."""
    if isinstance(node, DecisionNode):
        kind = (node.rule or {}).get("type")
        return f"{kind}_decision" if kind in ("manual", "ai", "heuristic") else "decision"
    if isinstance(node, WaitNode):
        condition = node.wait_condition or {}
        if condition.get("type") == "event":
            return f"event:{condition.get('event')}"
        return "timer"
    return "webhook"


def _merged_state(state: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = merge_patch(state, updates)
    if json_size(merged) > MAX_STATE_BYTES:
        raise InvalidInput(f"state: the merged state would be larger than {MAX_STATE_BYTES // 1024} KiB as JSON")
    return merged


def _conflict_unless(instance: WorkflowInstance, allowed: frozenset[InstanceStatus], doing: str) -> None:
    if instance.status not in allowed:
        names = " or ".join(sorted(s.value for s in allowed))
        raise Conflict(f"cannot {doing} an instance that is {instance.status.value}; it must be {names}")


def _on_behalf(on_behalf_of: str | None) -> dict[str, Any]:
    return {"on_behalf_of": on_behalf_of} if on_behalf_of else {}


def created_events(instance: WorkflowInstance, actor: str) -> list[Event]:
    b = _Builder(instance, instance.created_at, actor)
    b.emit(
        EventType.INSTANCE_CREATED,
        f"Enrolled in {instance.template_id} {instance.template_version}",
        {"template_version": instance.template_version},
    )
    return b.events


def start(instance: WorkflowInstance, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    _conflict_unless(instance, frozenset({InstanceStatus.PENDING}), "start")
    b = _Builder(instance, now, actor)
    b.instance.started_at = now
    b.instance.status = InstanceStatus.ACTIVE
    b.emit(EventType.INSTANCE_STARTED, "Started", _on_behalf(on_behalf_of))
    b.enter(instance.start_node)
    return b.step()


def transition(
    instance: WorkflowInstance,
    outcome: str,
    now: datetime,
    actor: str,
    *,
    note: str | None = None,
    state_updates: dict[str, Any] | None = None,
    expected_node: str | None = None,
    on_behalf_of: str | None = None,
    previous_node: str | None = None,
) -> Step:
    """A person records `outcome` for the current node. `previous_node` is the node the caller last saw."""
    if expected_node is not None and expected_node != instance.current_node:
        raise Conflict(
            f"the instance is at {instance.current_node!r}, not {expected_node!r}: someone moved it first",
            current_node=instance.current_node,
        )
    _conflict_unless(instance, MOVABLE, "record an outcome on")
    node_id = instance.current_node
    assert node_id is not None
    node = instance.nodes[node_id]
    if outcome not in node.transitions:
        if previous_node is not None and previous_node != node_id:
            raise Conflict(
                f"the instance moved from {previous_node!r} to {node_id!r} while this outcome was sent",
                current_node=node_id,
            )
        allowed = ", ".join(sorted(node.transitions)) or "none"
        raise InvalidInput(f"outcome: {outcome!r} is not an outcome of node {node_id!r}; allowed: {allowed}")
    b = _Builder(instance, now, actor)
    extra = _on_behalf(on_behalf_of)
    if state_updates:
        b.instance.state = _merged_state(b.instance.state, state_updates)
        b.emit(EventType.STATE_UPDATED, "State updated", {"updates": state_updates, **extra}, node_id)
    data: dict[str, Any] = {"outcome": outcome, **extra}
    if note:
        data["note"] = note
    if isinstance(node, DecisionNode):
        b.emit(EventType.DECISION_MANUAL_INPUT, f"Decided {outcome}", data, node_id)
    elif isinstance(node, WaitNode):
        b.emit(EventType.WAIT_COMPLETED, f"Wait ended by hand: {outcome}", {**data, "skipped": True}, node_id)
    else:
        b.emit(EventType.USER_ACTION, f"Recorded {outcome}" + (f": {note}" if note else ""), data, node_id)
    b.emit(EventType.NODE_EXITED, f"Left {node.name or node_id} with {outcome}", {"outcome": outcome}, node_id)
    b.enter(node.transitions[outcome])
    return b.step()


def pause(instance: WorkflowInstance, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    _conflict_unless(instance, MOVABLE, "pause")
    b = _Builder(instance, now, actor)
    b.instance.paused_status = instance.status
    b.instance.status = InstanceStatus.PAUSED
    b.emit(EventType.INSTANCE_PAUSED, "Paused", _on_behalf(on_behalf_of), instance.current_node)
    return b.step()


def resume(instance: WorkflowInstance, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    _conflict_unless(instance, frozenset({InstanceStatus.PAUSED}), "resume")
    b = _Builder(instance, now, actor)
    b.instance.status = instance.paused_status or InstanceStatus.ACTIVE
    b.instance.paused_status = None
    b.emit(EventType.INSTANCE_RESUMED, "Resumed", _on_behalf(on_behalf_of), instance.current_node)
    return b.step()


def cancel(
    instance: WorkflowInstance,
    now: datetime,
    actor: str,
    on_behalf_of: str | None = None,
    reason: str | None = None,
) -> Step:
    if instance.status in TERMINAL:
        raise Conflict(f"cannot cancel an instance that is {instance.status.value}; it has already finished")
    b = _Builder(instance, now, actor)
    b.instance.status = InstanceStatus.CANCELLED
    b.instance.paused_status = None
    b.instance.completed_at = now
    b.instance.wake_at = None
    b.instance.waiting_for = None
    data = _on_behalf(on_behalf_of) | ({"reason": reason} if reason else {})
    b.emit(
        EventType.INSTANCE_CANCELLED,
        "Cancelled" + (f": {reason}" if reason else ""),
        data,
        instance.current_node,
    )
    return b.step()


def update_state(
    instance: WorkflowInstance,
    updates: dict[str, Any],
    now: datetime,
    actor: str,
    on_behalf_of: str | None = None,
) -> Step:
    b = _Builder(instance, now, actor)
    b.instance.state = _merged_state(instance.state, updates)
    b.emit(
        EventType.STATE_UPDATED,
        "State updated",
        {"updates": updates} | _on_behalf(on_behalf_of),
        instance.current_node,
    )
    return b.step()


def add_note(instance: WorkflowInstance, text: str, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    b = _Builder(instance, now, actor)
    b.emit(EventType.USER_NOTE, text, {"text": text} | _on_behalf(on_behalf_of), instance.current_node)
    return b.step()


def change_tag(instance: WorkflowInstance, tag: str, add: bool, now: datetime, actor: str) -> Step | None:
    """Add or remove an instance tag; None when nothing changes (tags are idempotent)."""
    if (tag in instance.tags) == add:
        return None
    if add and len(instance.tags) >= MAX_TAGS:
        raise Conflict(f"the instance already has {MAX_TAGS} tags, the most an instance may have")
    b = _Builder(instance, now, actor)
    if add:
        b.instance.tags.append(tag)
        b.emit(EventType.TAG_ADDED, f"Tagged {tag}", {"tag": tag}, instance.current_node)
    else:
        b.instance.tags.remove(tag)
        b.emit(EventType.TAG_REMOVED, f"Untagged {tag}", {"tag": tag}, instance.current_node)
    return b.step()
