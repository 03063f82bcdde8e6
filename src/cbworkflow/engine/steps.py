"""Instance steps as pure functions: (instance, input, time, actor, context) -> (new instance, events).

Each function returns a `Step`; a service (or the worker) applies it inside one store transaction, so a step is
recorded whole or not at all. What entering a node does is in `entering`; the steps here decide whether a change
is allowed (409 otherwise) and which events record it. The clock, the contact and the sandbox come in as
arguments, so tests drive a week of simulated time in milliseconds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..errors import Conflict, InvalidInput
from ..merge_patch import merge_patch
from ..models.common import MAX_STATE_BYTES, json_size
from ..models.events import SYSTEM_ACTOR, Event, EventType
from ..models.instances import MOVABLE, TERMINAL, InstanceStatus, WorkflowInstance
from ..models.templates import ActionNode, AIRule, DecisionNode, Node, WaitNode, WebhookNode
from .entering import AI_ACTOR, StepBuilder

# What callers of the steps use from `entering`, so they import one module.
from .entering import MAX_NODES_PER_STEP as MAX_NODES_PER_STEP
from .entering import NO_CONTEXT as NO_CONTEXT
from .entering import Context as Context
from .entering import Step as Step
from .entering import parse_rule as parse_rule
from .entering import waiting_for as waiting_for

MAX_TAGS = 100  # as many as a request body may carry


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


def _update_state(b: StepBuilder, updates: dict[str, Any] | None, extra: dict[str, Any], node_id: str | None) -> None:
    """Merge `updates` into the state (JSON Merge Patch) with a `state_updated` event; nothing when there are none."""
    if updates:
        b.instance.state = _merged_state(b.instance.state, updates)
        b.emit(EventType.STATE_UPDATED, "State updated", {"updates": updates, **extra}, node_id)


def created_events(instance: WorkflowInstance, actor: str, extra: dict[str, Any] | None = None) -> list[Event]:
    """The `instance_created` event; `extra` adds to its data (a trigger-started instance names its trigger)."""
    b = StepBuilder(instance, instance.created_at, actor)
    b.emit(
        EventType.INSTANCE_CREATED,
        f"Enrolled in {instance.template_id} {instance.template_version}",
        {"template_version": instance.template_version, **(extra or {})},
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
    b = StepBuilder(instance, now, actor, ctx)
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
    b = StepBuilder(instance, now, actor, ctx)
    extra = _on_behalf(on_behalf_of)
    _update_state(b, state_updates, extra, node_id)
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
    b.leave_and_enter(node_id, node, outcome)
    return b.step()


def pause(instance: WorkflowInstance, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    _conflict_unless(instance, MOVABLE, "pause")
    b = StepBuilder(instance, now, actor)
    b.instance.paused_status = instance.status
    b.instance.status = InstanceStatus.PAUSED
    b.emit(EventType.INSTANCE_PAUSED, "Paused", _on_behalf(on_behalf_of), instance.current_node)
    return b.step()


def resume(
    instance: WorkflowInstance,
    now: datetime,
    actor: str,
    on_behalf_of: str | None = None,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """Back to the status it had; a task whose contact refused its channel meanwhile takes `opted_out` (or the
    instance is cancelled) at once, so it never comes back to the work queue."""
    _conflict_unless(instance, frozenset({InstanceStatus.PAUSED}), "resume")
    b = StepBuilder(instance, now, actor, ctx)
    b.instance.status = instance.paused_status or InstanceStatus.ACTIVE
    b.instance.paused_status = None
    b.emit(EventType.INSTANCE_RESUMED, "Resumed", _on_behalf(on_behalf_of), instance.current_node)
    node_id = instance.current_node
    node = instance.nodes.get(node_id or "")
    if node_id and isinstance(node, ActionNode) and instance.task_since is not None:
        refused = ctx.refused(node.action)
        if refused is not None:
            following = b.opted_out(node_id, node, refused)
            if following is not None:
                b.enter(following)
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
    b = StepBuilder(instance, now, actor)
    b.cancel(reason, instance.current_node, _on_behalf(on_behalf_of))
    return b.step()


def reach_goal(
    instance: WorkflowInstance, goal_id: str, now: datetime, actor: str, data: dict[str, Any] | None = None
) -> Step:
    """A goal of the template happened for the contact: the unfinished instance is completed at once, wherever it
    is, with end status `goal:<id>`; its timer, task and pending automatic work are dropped with it (the worker's
    result for an older revision is then stale, and dropped too)."""
    if instance.status in TERMINAL:
        raise Conflict(f"cannot complete an instance that is {instance.status.value}; it has already finished")
    b = StepBuilder(instance, now, actor)
    inst = b.instance
    end_status = f"goal:{goal_id}"
    inst.status = InstanceStatus.COMPLETED
    inst.end_status = end_status
    inst.completed_at = now
    inst.paused_status = None
    b.drop_work()
    node_id = instance.current_node
    b.emit(EventType.GOAL_REACHED, f"Goal {goal_id} reached", {"goal": goal_id, **(data or {})}, node_id)
    b.emit(EventType.INSTANCE_COMPLETED, f"Completed ({end_status})", {"end_status": end_status}, node_id)
    return b.step()


def update_state(
    instance: WorkflowInstance,
    updates: dict[str, Any],
    now: datetime,
    actor: str,
    on_behalf_of: str | None = None,
) -> Step:
    b = StepBuilder(instance, now, actor)
    b.instance.state = _merged_state(instance.state, updates)
    b.emit(
        EventType.STATE_UPDATED,
        "State updated",
        {"updates": updates} | _on_behalf(on_behalf_of),
        instance.current_node,
    )
    return b.step()


def add_note(instance: WorkflowInstance, text: str, now: datetime, actor: str, on_behalf_of: str | None = None) -> Step:
    b = StepBuilder(instance, now, actor)
    b.emit(EventType.USER_NOTE, text, {"text": text} | _on_behalf(on_behalf_of), instance.current_node)
    return b.step()


def change_tag(instance: WorkflowInstance, tag: str, add: bool, now: datetime, actor: str) -> Step | None:
    """Add or remove an instance tag; None when nothing changes (tags are idempotent)."""
    if (tag in instance.tags) == add:
        return None
    if add and len(instance.tags) >= MAX_TAGS:
        raise Conflict(f"the instance already has {MAX_TAGS} tags, the most an instance may have")
    b = StepBuilder(instance, now, actor)
    if add:
        b.instance.tags.append(tag)
        b.emit(EventType.TAG_ADDED, f"Tagged {tag}", {"tag": tag}, instance.current_node)
    else:
        b.instance.tags.remove(tag)
        b.emit(EventType.TAG_REMOVED, f"Untagged {tag}", {"tag": tag}, instance.current_node)
    return b.step()


# ---------------------------------------------------------------------------------------------- recovery
FINISHED = frozenset({InstanceStatus.COMPLETED, InstanceStatus.CANCELLED})  # a failed instance is not finished here
MAX_NODES_LISTED = 20  # node ids an unknown-node answer lists


def retry(
    instance: WorkflowInstance,
    now: datetime,
    actor: str,
    *,
    state_updates: dict[str, Any] | None = None,
    on_behalf_of: str | None = None,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """A failed instance enters again the node where it failed (its `current_node`, kept by the failure), after
    `state_updates` are merged: someone fixed what made it fail (the state an expression reads, the contact's
    phone). Entering runs the node as on any entry; if the cause is still there, the instance fails again."""
    _conflict_unless(instance, frozenset({InstanceStatus.FAILED}), "retry")
    at = instance.current_node
    node_id = at if at is not None and at in instance.nodes else instance.start_node  # failed before any node
    b = StepBuilder(instance, now, actor, ctx)
    b.instance.completed_at = None
    extra = _on_behalf(on_behalf_of)
    _update_state(b, state_updates, extra, node_id)
    name = instance.nodes[node_id].name or node_id
    b.emit(EventType.INSTANCE_RETRIED, f"Retried at {name}", {"node": node_id, **extra}, node_id)
    b.enter(node_id)
    return b.step()


def move(
    instance: WorkflowInstance,
    now: datetime,
    actor: str,
    *,
    node_id: str,
    reason: str,
    on_behalf_of: str | None = None,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """Put an unfinished or failed instance at any node of its frozen graph, entering it as usual (an admin's
    repair: a contact sent down the wrong branch, a flow that failed). A pending instance starts there; a paused
    one stays paused at its new node, with the status entering it gave to come back to on resume."""
    if instance.status in FINISHED:
        raise Conflict(
            f"cannot move an instance that is {instance.status.value}; only unfinished or failed instances move"
        )
    if node_id not in instance.nodes:
        names = sorted(instance.nodes)
        shown = ", ".join(names[:MAX_NODES_LISTED]) + (", …" if len(names) > MAX_NODES_LISTED else "")
        raise InvalidInput(
            f"node: {node_id!r} is not a node of this instance's graph "
            f"({instance.template_id} {instance.template_version}); its nodes: {shown}"
        )
    paused = instance.status is InstanceStatus.PAUSED
    moved_from = instance.current_node
    b = StepBuilder(instance, now, actor, ctx)
    inst = b.instance
    inst.completed_at = None
    inst.paused_status = None
    inst.started_at = inst.started_at or now
    data = {"moved_from": moved_from, "moved_to": node_id, "reason": reason, **_on_behalf(on_behalf_of)}
    b.emit(EventType.INSTANCE_MOVED, f"Moved from {moved_from or '(no node)'} to {node_id}: {reason}", data, moved_from)
    b.enter(node_id)
    if paused and inst.status in MOVABLE:
        inst.paused_status, inst.status = inst.status, InstanceStatus.PAUSED
    return b.step()


def migrate(
    instance: WorkflowInstance,
    nodes: dict[str, Node],
    start_node: str,
    version: str,
    to_node: str | None,
    now: datetime,
    actor: str,
    ctx: Context = NO_CONTEXT,
) -> Step:
    """Put an unfinished instance on another version of its template (`nodes`), at `to_node` (None: a pending
    instance, which starts at the new start node when started). At a node of the same id, type and action it stays
    as it is, whatever else of the node changed (a timer keeps its time, a task its place in the queue, a
    come-back-later wait its round: nothing is sent or asked again); otherwise it enters `to_node` as a move
    would. An `instance_migrated` event records the versions and nodes."""
    if instance.status in TERMINAL:
        raise Conflict(f"cannot migrate an instance that is {instance.status.value}; it has already finished")
    from_node = instance.current_node
    old, new = instance.nodes.get(from_node or ""), nodes.get(to_node or "")
    same = (
        to_node == from_node
        and old is not None
        and new is not None
        and type(old) is type(new)
        and getattr(old, "action", None) == getattr(new, "action", None)
    )
    paused = instance.status is InstanceStatus.PAUSED
    b = StepBuilder(instance, now, actor, ctx)
    inst = b.instance
    inst.nodes, inst.start_node = nodes, start_node
    data = {
        "from_version": instance.template_version,
        "to_version": version,
        "from_node": from_node,
        "to_node": to_node,
    }
    where = f" at {to_node}" if to_node and to_node != from_node else ""
    b.emit(EventType.INSTANCE_MIGRATED, f"Moved to version {version}{where}", data, to_node or from_node)
    inst.template_version = version
    if same or to_node is None:
        return b.step()
    inst.paused_status = None
    b.enter(to_node)
    if paused and inst.status in MOVABLE:
        inst.paused_status, inst.status = inst.status, InstanceStatus.PAUSED
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
    b = StepBuilder(instance, now, SYSTEM_ACTOR, ctx)
    due = instance.wake_at.isoformat() if instance.wake_at else None
    b.emit(EventType.WAIT_COMPLETED, f"Wait over: {outcome}", {"outcome": outcome, "due": due}, node_id)
    b.leave_and_enter(node_id, node, outcome)
    return b.step()


def receive_event(
    instance: WorkflowInstance, name: str, data: dict[str, Any], now: datetime, actor: str, ctx: Context = NO_CONTEXT
) -> Step:
    """The event an instance waits for arrived: outcome `received`."""
    node_id, node = _at(instance)
    b = StepBuilder(instance, now, actor, ctx)
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
    b = StepBuilder(instance, now, AI_ACTOR, ctx)
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
    *,
    started_recorded: bool = False,
) -> Step:
    """An executor or a webhook call finished: go on with `outcome`, or fail the instance when there is none.
    `started_recorded`: `action_started` was written before the call (`sending`), so it is not written again."""
    node_id, node = _at(instance)
    b = StepBuilder(instance, now, SYSTEM_ACTOR, ctx)
    if not started_recorded:
        what = f"webhook {getattr(node, 'webhook_url', '')}" if isinstance(node, WebhookNode) else node_action(node)
        b.emit(EventType.ACTION_STARTED, f"Ran {what}", {"started_at": details.get("started_at")}, node_id)
    if outcome is None or outcome not in node.transitions:
        error = details.get("error") or f"no outcome {outcome!r} on node {node_id!r}"
        b.emit(EventType.ACTION_FAILED, f"Failed: {error}", details, node_id)
        b.fail(str(error), node_id)
    else:
        b.emit(EventType.ACTION_COMPLETED, f"Done: {outcome}", {**details, "outcome": outcome}, node_id)
        b.leave_and_enter(node_id, node, outcome)
    return b.step()


def node_action(node: Node) -> str:
    return getattr(node, "action", "") or ""


def sending(instance: WorkflowInstance, channel: str, now: datetime) -> list[Event]:
    """The `action_started` of an action that reaches the contact, written in the transaction that checked consent,
    before the call: the timeline orders it against an opt-out (whichever committed first won)."""
    node_id, node = _at(instance)
    b = StepBuilder(instance, now, SYSTEM_ACTOR)
    b.emit(
        EventType.ACTION_STARTED,
        f"Sending {node_action(node)} ({channel})",
        {"started_at": now.isoformat(), "channel": channel},
        node_id,
    )
    return b.events


def channel_refused(instance: WorkflowInstance, now: datetime, ctx: Context) -> Step | None:
    """When the instance is at an action on a channel its contact opted out of (a task, or an automatic step about
    to run): the outcome `opted_out`, or the instance cancelled (`entering`). None when nothing is refused."""
    node_id, node = _at(instance)
    if not isinstance(node, ActionNode) or instance.status not in MOVABLE:
        return None
    channel = ctx.refused(node.action)
    if channel is None:
        return None
    b = StepBuilder(instance, now, SYSTEM_ACTOR, ctx)
    following = b.opted_out(node_id, node, channel)
    if following is not None:
        b.enter(following)
    return b.step()


def come_back(instance: WorkflowInstance, now: datetime, ctx: Context = NO_CONTEXT) -> Step:
    """A come-back-later wait ended: the action is a task (or runs) again, at the same node."""
    node_id, _ = _at(instance)
    b = StepBuilder(instance, now, SYSTEM_ACTOR, ctx)
    b.come_back(node_id)
    return b.step()


def hold(instance: WorkflowInstance, until: datetime, reason: str, now: datetime) -> Step:
    """The automatic step the instance is at may not reach the contact before `until` (`reason`: the contact
    hours, or a frequency cap): it waits, due then."""
    node_id, _ = _at(instance)
    b = StepBuilder(instance, now, SYSTEM_ACTOR)
    b.hold(node_id, until, reason)
    return b.step()


def open_task_at(instance: WorkflowInstance, opens: datetime, now: datetime) -> Step:
    """The task the instance is at may not be handed out before `opens` (contact hours): it opens to claims then
    (a revision, no timeline event: nobody did anything)."""
    b = StepBuilder(instance, now, SYSTEM_ACTOR)
    b.instance.task_since = opens
    b.instance.held_by = None
    b.instance.lease_expires_at = None
    return b.step()


def claim_task(instance: WorkflowInstance, token_id: str, until: datetime, now: datetime) -> Step:
    """A person takes the task: held until `until` (a revision, no timeline event: holding is not outreach)."""
    b = StepBuilder(instance, now, token_id)
    b.instance.held_by = token_id
    b.instance.lease_expires_at = until
    return b.step()


def release_task(instance: WorkflowInstance, now: datetime, actor: str) -> Step:
    b = StepBuilder(instance, now, actor)
    b.instance.held_by = None
    b.instance.lease_expires_at = None
    return b.step()
