"""Instance steps as pure functions: (instance, input, time, actor, context) -> (new instance, events).

Each function returns a `Step`; a service (or the worker) applies it inside one store transaction, so a step is
recorded whole or not at all. Entering a node runs its behaviour (workflows.md § Template):
- end: the instance completes;
- heuristic decision: the expression is evaluated at once in the sandbox and the engine goes on;
- action with an executor, AI decision, webhook: due at once (`wake_at`), for the worker;
- wait: due when its time comes (`wake_at`), or when its event arrives (`waiting_for: event:<name>`);
- action without an executor, manual decision: a task for a person (`task_since`).
The engine keeps going through nodes that complete at once, and fails the instance when one step visits more
than `MAX_NODES_PER_STEP` nodes (a loop). The clock, the contact and the sandbox come in as arguments, so tests
drive a week of simulated time in milliseconds.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..errors import Conflict, InvalidInput
from ..ids import new_id
from ..merge_patch import merge_patch
from ..models.common import MAX_STATE_BYTES, json_size
from ..models.events import SYSTEM_ACTOR, Event, EventType
from ..models.instances import MOVABLE, TERMINAL, InstanceStatus, WorkflowInstance
from ..models.templates import (
    ActionNode,
    AIRule,
    DecisionNode,
    EndNode,
    HeuristicRule,
    Node,
    Rule,
    WaitNode,
    WebhookNode,
)
from ..times import parse_duration, parse_until

MAX_NODES_PER_STEP = 100
RULES_SECONDS_PER_STEP = 0.25  # CPU time all heuristic rules of one step may take together (each: 50 ms at most)
MAX_TAGS = 100  # as many as a request body may carry


_RULE: TypeAdapter[Any] = TypeAdapter(Rule)
AI_ACTOR = "ai"


@dataclass(frozen=True)
class Context:
    """What entering nodes needs besides the instance: which actions run by themselves, and the contact (read
    only when an expression or a placeholder needs it)."""

    automatic_actions: frozenset[str] = frozenset()
    load_contact: Callable[[], Mapping[str, Any] | None] = lambda: None

    @cached_property
    def contact(self) -> Mapping[str, Any] | None:
        """The contact as JSON (None when it was deleted)."""
        return self.load_contact()

    def placeholders(self, instance: WorkflowInstance) -> dict[str, Any]:
        """The data placeholders and expressions read: state, contact, instance and template ids."""
        return {
            "state": instance.state,
            "contact": dict(self.contact or {}),
            "instance": {"id": instance.id},
            "template": {"id": instance.template_id},
        }


NO_CONTEXT = Context()


def parse_rule(node: DecisionNode) -> Any:
    """The node's rule as a model, or None when it is missing or malformed (validation reports it)."""
    try:
        return _RULE.validate_python(node.rule)
    except ValidationError:
        return None


@dataclass
class Step:
    """What one change of an instance produced."""

    instance: WorkflowInstance
    events: list[Event] = field(default_factory=list)


class _Builder:
    """Accumulates the new instance fields and events of one step."""

    def __init__(self, instance: WorkflowInstance, now: datetime, actor: str, ctx: Context = NO_CONTEXT) -> None:
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
        self.ctx = ctx
        self.events: list[Event] = []
        self.rules_left = RULES_SECONDS_PER_STEP

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
            inst.task_since = None
            inst.suggestion = None
            inst.held_by = None
            inst.lease_expires_at = None
            self.emit(EventType.NODE_ENTERED, f"Entered {node.name or node_id}", {"node_type": node.type}, node_id)
            following = self._arrive(node_id, node)
            if following is None:
                return
            node_id = following

    def _arrive(self, node_id: str, node: Node) -> str | None:
        """Run the behaviour of the node just entered; the next node when it completed at once, else None."""
        inst = self.instance
        if isinstance(node, EndNode):  # completed by whoever's step reached it
            inst.status = InstanceStatus.COMPLETED
            inst.end_status = node.end_status
            inst.completed_at = self.now
            self.emit(
                EventType.INSTANCE_COMPLETED, f"Completed ({node.end_status})", {"end_status": node.end_status}, node_id
            )
            return None
        if isinstance(node, ActionNode):
            inst.status = InstanceStatus.ACTIVE
            if node.action in self.ctx.automatic_actions:
                inst.wake_at = self.now  # the worker runs the executor
            else:
                inst.task_since = self.now  # a person does it
            return None
        inst.status = InstanceStatus.WAITING
        if isinstance(node, DecisionNode):
            rule = parse_rule(node)
            if isinstance(rule, HeuristicRule):
                return self._heuristic(node_id, node, rule)
            if isinstance(rule, AIRule):
                inst.waiting_for = "ai_decision"
                inst.wake_at = self.now
                return None
            inst.waiting_for = "manual_decision"
            inst.task_since = self.now
            return None
        if isinstance(node, WaitNode):
            self._start_wait(node_id, node)
            return None
        inst.waiting_for = "webhook"
        inst.wake_at = self.now
        return None

    def _heuristic(self, node_id: str, node: DecisionNode, rule: HeuristicRule) -> str | None:
        from .sandbox import ExpressionError, evaluate

        if self.rules_left <= 0:
            self._rule_failed(node_id, f"the rules of one step took longer than {RULES_SECONDS_PER_STEP} s together")
            return None
        data = self.ctx.placeholders(self.instance)
        began = time.thread_time()
        try:
            value = evaluate(
                rule.expression,
                {"state": data["state"], "contact": data["contact"]},
                now=self.now,
                timeout_s=min(0.05, self.rules_left),
            )
        except ExpressionError as exc:
            self._rule_failed(node_id, f"the expression failed: {exc}")
            return None
        finally:
            self.rules_left -= time.thread_time() - began
        outcome = ("true" if value else "false") if isinstance(value, bool) else value
        if not isinstance(outcome, str) or outcome not in node.transitions:
            allowed = ", ".join(sorted(node.transitions))
            self._rule_failed(node_id, f"the expression gave {value!r:.80}, which is not an outcome ({allowed})")
            return None
        self.emit(
            EventType.DECISION_EVALUATED,
            f"Rule chose {outcome}",
            {"outcome": outcome, "rule": "heuristic"},
            node_id,
            actor=SYSTEM_ACTOR,
        )
        return self.leave(node_id, node, outcome)

    def _rule_failed(self, node_id: str, error: str) -> None:
        self.emit(EventType.ACTION_FAILED, error, {"error": error}, node_id, actor=SYSTEM_ACTOR)
        self.fail(error, node_id)

    def _start_wait(self, node_id: str, node: WaitNode) -> None:
        inst = self.instance
        condition = node.wait_condition or {}
        kind = condition.get("type")
        inst.waiting_for = waiting_for(node)
        try:
            if kind == "duration":
                inst.wake_at = self.now + parse_duration(str(condition.get("duration")))
            elif kind == "until":
                from .render import render

                inst.wake_at = parse_until(render(str(condition.get("until")), self.ctx.placeholders(inst)))
            elif kind == "event" and condition.get("timeout"):
                inst.wake_at = self.now + parse_duration(str(condition.get("timeout")))
            elif kind != "event":
                raise ValueError(f"the wait condition type {kind!r} is not duration, until or event")
        except ValueError as exc:
            self.fail(f"the wait cannot start: {exc}", node_id)
            return
        data: dict[str, Any] = {"condition": kind}
        if inst.wake_at is not None:
            data["wake_at"] = inst.wake_at.isoformat()
        if kind == "event":
            data["event"] = condition.get("event")
        self.emit(EventType.WAIT_STARTED, f"Waiting ({inst.waiting_for})", data, node_id, actor=SYSTEM_ACTOR)

    def leave(self, node_id: str, node: Node, outcome: str) -> str | None:
        """Exit with `outcome`: the next node, or None (the instance failed) when the node has no such outcome."""
        if outcome not in node.transitions:
            self.fail(f"node {node_id!r} has no outcome {outcome!r}", node_id)
            return None
        self.emit(EventType.NODE_EXITED, f"Left {node.name or node_id} with {outcome}", {"outcome": outcome}, node_id)
        return node.transitions[outcome]

    def leave_and_enter(self, node_id: str, node: Node, outcome: str) -> None:
        following = self.leave(node_id, node, outcome)
        if following is not None:
            self.enter(following)

    def fail(self, reason: str, node_id: str | None) -> None:
        inst = self.instance
        inst.status = InstanceStatus.FAILED
        inst.completed_at = self.now
        inst.wake_at = None
        inst.task_since = None
        inst.held_by = None
        inst.lease_expires_at = None
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


def start(
    instance: WorkflowInstance,
    now: datetime,
    actor: str,
    on_behalf_of: str | None = None,
    ctx: Context = NO_CONTEXT,
) -> Step:
    _conflict_unless(instance, frozenset({InstanceStatus.PENDING}), "start")
    b = _Builder(instance, now, actor, ctx)
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
    ctx: Context = NO_CONTEXT,
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
    b = _Builder(instance, now, actor, ctx)
    extra = _on_behalf(on_behalf_of)
    if state_updates:
        b.instance.state = _merged_state(b.instance.state, state_updates)
        b.emit(EventType.STATE_UPDATED, "State updated", {"updates": state_updates, **extra}, node_id)
    data: dict[str, Any] = {"outcome": outcome, **extra}
    if note:
        data["note"] = note
    if isinstance(node, DecisionNode):
        if instance.suggestion is not None:
            data["suggestion"] = instance.suggestion
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
    b.instance.task_since = None
    b.instance.held_by = None
    b.instance.lease_expires_at = None
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


# ---------------------------------------------------------------------------------------------- the worker's steps
def _at(instance: WorkflowInstance) -> tuple[str, Node]:
    node_id = instance.current_node
    assert node_id is not None
    return node_id, instance.nodes[node_id]


def fire_timer(instance: WorkflowInstance, now: datetime, ctx: Context = NO_CONTEXT) -> Step:
    """A wait's time came: `elapsed` (duration, until), or `timeout` for an event that did not arrive."""
    node_id, node = _at(instance)
    kind = (node.wait_condition or {}).get("type") if isinstance(node, WaitNode) else None
    outcome = "timeout" if kind == "event" else "elapsed"
    b = _Builder(instance, now, SYSTEM_ACTOR, ctx)
    due = instance.wake_at.isoformat() if instance.wake_at else None
    b.emit(EventType.WAIT_COMPLETED, f"Wait over: {outcome}", {"outcome": outcome, "due": due}, node_id)
    b.leave_and_enter(node_id, node, outcome)
    return b.step()


def receive_event(
    instance: WorkflowInstance, name: str, data: dict[str, Any], now: datetime, actor: str, ctx: Context = NO_CONTEXT
) -> Step:
    """The event an instance waits for arrived: outcome `received`."""
    node_id, node = _at(instance)
    b = _Builder(instance, now, actor, ctx)
    b.emit(EventType.EVENT_RECEIVED, f"Event {name} received", {"event": name, "data": data}, node_id)
    b.emit(EventType.WAIT_COMPLETED, "Wait over: received", {"outcome": "received"}, node_id)
    b.leave_and_enter(node_id, node, "received")
    return b.step()


def ai_decided(
    instance: WorkflowInstance,
    outcome: str | None,
    details: dict[str, Any],
    rule: AIRule,
    now: datetime,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """Apply a model's answer (`outcome`, None when it failed) as workflows.md § AI decisions says: take it, or
    with `confirm` only suggest it; on failure take the `fallback`, or wait for a person."""
    node_id, node = _at(instance)
    b = _Builder(instance, now, AI_ACTOR, ctx)
    inst = b.instance
    if outcome is None and rule.fallback:
        b.emit(
            EventType.DECISION_EVALUATED,
            f"The model could not decide ({details.get('error')}); took the fallback {rule.fallback}",
            {**details, "outcome": rule.fallback, "fallback": True},
            node_id,
        )
        b.leave_and_enter(node_id, node, rule.fallback)
    elif outcome is None:
        b.emit(
            EventType.DECISION_EVALUATED,
            f"The model could not decide ({details.get('error')}); waiting for a person",
            {**details, "outcome": None},
            node_id,
        )
        inst.waiting_for = "manual_decision"
        inst.task_since = now
        inst.wake_at = None
    elif rule.confirm:
        inst.suggestion = {"outcome": outcome, "reason": details.get("reason", "")}
        inst.waiting_for = "ai_confirm"
        inst.task_since = now
        inst.wake_at = None
        b.emit(
            EventType.DECISION_EVALUATED,
            f"The model suggests {outcome}; a person confirms",
            {**details, "outcome": outcome, "confirm": True},
            node_id,
        )
    else:
        b.emit(EventType.DECISION_EVALUATED, f"The model chose {outcome}", {**details, "outcome": outcome}, node_id)
        b.leave_and_enter(node_id, node, outcome)
    return b.step()


def action_finished(
    instance: WorkflowInstance,
    outcome: str | None,
    details: dict[str, Any],
    now: datetime,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """An executor or a webhook call finished: go on with `outcome`, or fail the instance when there is none."""
    node_id, node = _at(instance)
    b = _Builder(instance, now, SYSTEM_ACTOR, ctx)
    what = (
        f"webhook {getattr(node, 'webhook_url', '')}" if isinstance(node, WebhookNode) else getattr(node, "action", "")
    )
    b.emit(EventType.ACTION_STARTED, f"Ran {what}", {"started_at": details.get("started_at")}, node_id)
    if outcome is None or outcome not in node.transitions:
        error = details.get("error") or f"no outcome {outcome!r} on node {node_id!r}"
        b.emit(EventType.ACTION_FAILED, f"Failed: {error}", details, node_id)
        b.fail(str(error), node_id)
    else:
        b.emit(EventType.ACTION_COMPLETED, f"Done: {outcome}", {**details, "outcome": outcome}, node_id)
        b.leave_and_enter(node_id, node, outcome)
    return b.step()


def claim_task(instance: WorkflowInstance, token_id: str, until: datetime, now: datetime) -> Step:
    """A person takes the task: held until `until` (a revision, no timeline event: holding is not outreach)."""
    b = _Builder(instance, now, token_id)
    b.instance.held_by = token_id
    b.instance.lease_expires_at = until
    return b.step()


def release_task(instance: WorkflowInstance, now: datetime, actor: str) -> Step:
    b = _Builder(instance, now, actor)
    b.instance.held_by = None
    b.instance.lease_expires_at = None
    return b.step()
