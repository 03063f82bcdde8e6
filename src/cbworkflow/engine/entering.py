"""Entering a node: what each kind of node does when an instance arrives (workflows.md § Template).

- end: the instance completes;
- heuristic decision: the expression is evaluated at once in the sandbox and the engine goes on;
- action with an executor (`emit_event` always has one), AI decision, webhook: due at once (`wake_at`), for the
  worker;
- split: an outcome chosen at once by weight, the same for the same instance (a hash of its id and the node's);
- wait: due when its time comes (`wake_at`), or when its event arrives (`waiting_for: event:<name>`);
- action without an executor, manual decision: a task for a person (`task_since`);
- action on a channel the contact opted out of (workflows.md § Consent): the outcome `opted_out` when the node has
  one, else the instance is cancelled, with an `action_failed` event saying why. Nothing is sent, no task is made;
- action on a channel under contact hours, outside them in the contact's local time: an automatic step waits
  (`waiting_for: contact_hours`, `wake_at` when they open); a task opens to claims then (`task_since`).
The engine keeps going through nodes that complete at once, and fails the instance when one step visits more
than `MAX_NODES_PER_STEP` nodes (a loop). `StepBuilder` accumulates one step (the new instance and its events);
the steps themselves (start, transition, retry, the worker's results…) are in `steps`.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from pydantic import TypeAdapter, ValidationError

from ..ids import new_id
from ..models.consent import BUILT_IN_ACTION_CHANNELS, Channel
from ..models.contact_rules import ContactRules
from ..models.events import SYSTEM_ACTOR, Event, EventType
from ..models.instances import InstanceStatus, WorkflowInstance
from ..models.templates import (
    EMIT_EVENT,
    ActionNode,
    AIRule,
    DecisionNode,
    EndNode,
    HeuristicRule,
    Node,
    Rule,
    SplitNode,
    WaitNode,
    WebhookNode,
)
from ..times import parse_duration, parse_until

MAX_NODES_PER_STEP = 100
RULES_SECONDS_PER_STEP = 0.25  # CPU time all heuristic rules of one step may take together (each: 50 ms at most)


_RULE: TypeAdapter[Any] = TypeAdapter(Rule)
AI_ACTOR = "ai"
OPTED_OUT = "opted_out"  # the outcome an action node may have for a contact who refused its channel


@dataclass(frozen=True)
class Context:
    """What entering nodes needs besides the instance: which actions run by themselves, and the contact (read
    only when an expression or a placeholder needs it)."""

    automatic_actions: frozenset[str] = frozenset()
    load_contact: Callable[[], Mapping[str, Any] | None] = lambda: None
    channels: Mapping[str, Channel] = field(default_factory=lambda: BUILT_IN_ACTION_CHANNELS)
    load_rules: Callable[[], ContactRules] = ContactRules
    # A dry run's splits: None for real instances (a split takes the branch its ids choose). Otherwise the
    # branches chosen so far, by node; a split not in it takes its first branch and is noted in `splits_met`, so
    # the simulation can run the step again down the others.
    split_plan: Mapping[str, str] | None = None
    splits_met: list[tuple[str, list[str]]] = field(default_factory=list)

    @cached_property
    def contact(self) -> Mapping[str, Any] | None:
        """The contact as JSON (None when it was deleted)."""
        return self.load_contact()

    @cached_property
    def rules(self) -> ContactRules:
        """The contact hours, time zone and caps of the instance's template and tenant."""
        return self.load_rules()

    def split(self, instance_id: str, node_id: str, weights: Mapping[str, int]) -> str:
        """The branch a split takes for this instance (see `split_plan` for dry runs)."""
        if self.split_plan is None:
            return split_outcome(instance_id, node_id, weights)
        if self.split_plan.get(node_id) in weights:  # a choice the split does not have is ignored, as elsewhere
            return self.split_plan[node_id]
        branches = sorted(weights)
        self.splits_met.append((node_id, branches))
        return branches[0] if branches else ""

    def opens(self, action: str | None, now: datetime) -> datetime:
        """When `action` may reach the contact: `now`, or when the contact hours next open in their local time."""
        from .hours import next_opening, zone_name

        channel = self.channels.get(action or "")
        if channel is None or channel not in self.rules.hours.channels:
            return now
        return next_opening(self.rules.hours, zone_name(self.contact, self.rules.timezone), now)

    def refused(self, action: str | None) -> Channel | None:
        """The channel of `action` when the contact opted out of it, else None (no channel, or not refused)."""
        channel = self.channels.get(action or "")
        if channel is None:
            return None
        contact = self.contact
        return channel if contact is not None and channel.value in (contact.get("opted_out") or {}) else None

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


_WORK_FIELDS = ("wake_at", "waiting_for", "task_since", "held_by", "lease_expires_at", "suggestion")
"""What `StepBuilder.drop_work` clears."""


class StepBuilder:
    """Accumulates the new instance fields and events of one step."""

    def __init__(self, instance: WorkflowInstance, now: datetime, actor: str, ctx: Context = NO_CONTEXT) -> None:
        # The frozen nodes are shared, never copied (they never change); only the mutable fields are copied (an
        # empty one needs no deep copy: most instances hold no state or metadata).
        self.instance = instance.model_copy(
            update={
                "state": copy.deepcopy(instance.state) if instance.state else {},
                "metadata": copy.deepcopy(instance.metadata) if instance.metadata else {},
                "tags": list(instance.tags),
                "timeline": [],
                "updated_at": now,
                "revision": instance.revision + 1,
            }
        )
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
            inst.node_entered_at = self.now
            self.drop_work()
            inst.retries = None
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
            refused = self.ctx.refused(node.action)
            if refused is not None:
                return self.opted_out(node_id, node, refused)
            if node.action == EMIT_EVENT:
                inst.wake_at = self.now  # built in, always automatic, reaches nobody
            elif node.action in self.ctx.automatic_actions:
                self.hold(node_id, self.ctx.opens(node.action, self.now))  # the worker runs the executor
            else:
                inst.task_since = self.ctx.opens(node.action, self.now)  # a person does it, once the hours open
            return None
        if isinstance(node, SplitNode):
            outcome = self.ctx.split(inst.id, node_id, node.weights)
            data = {"outcome": outcome, "rule": "split", "weights": dict(node.weights)}
            self.emit(EventType.DECISION_EVALUATED, f"Split chose {outcome}", data, node_id, actor=SYSTEM_ACTOR)
            return self.leave(node_id, node, outcome)
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
        self.exit(node_id, node, outcome)
        return node.transitions[outcome]

    def hold(self, node_id: str, until: datetime, reason: str = "contact_hours") -> None:
        """An automatic step is due at `until`: at once, or later for `reason` (`contact_hours`, `frequency_cap`),
        which the instance then waits for, with a `wait_started` event."""
        inst = self.instance
        inst.wake_at = until
        if until <= self.now:
            return
        inst.status = InstanceStatus.WAITING
        inst.waiting_for = reason
        data = {"condition": reason, "wake_at": until.isoformat()}
        words = "the contact hours" if reason == "contact_hours" else "the frequency cap"
        self.emit(EventType.WAIT_STARTED, f"Waiting for {words}", data, node_id, actor=SYSTEM_ACTOR)

    def opted_out(self, node_id: str, node: ActionNode, channel: Channel) -> str | None:
        """The contact refused the node's channel: take the outcome `opted_out` (the next node), or cancel."""
        reason = f"the contact opted out of {channel.value}"
        if OPTED_OUT in node.transitions:
            self.exit(node_id, node, OPTED_OUT, {"channel": channel.value}, actor=SYSTEM_ACTOR)
            return node.transitions[OPTED_OUT]
        error = f"{reason}, and node {node_id!r} has no outcome {OPTED_OUT!r}"
        self.emit(EventType.ACTION_FAILED, f"Not done: {error}", {"error": error, "channel": channel.value}, node_id)
        self.cancel(reason, node_id, actor=SYSTEM_ACTOR)
        return None

    def exit(
        self, node_id: str, node: Node, outcome: str, extra: dict[str, Any] | None = None, actor: str | None = None
    ) -> None:
        """The `node_exited` event, with the seconds spent at the node (what the campaign numbers' medians count)."""
        data: dict[str, Any] = {"outcome": outcome, **(extra or {})}
        since = self.instance.node_entered_at
        if since is not None and self.instance.current_node == node_id:
            data["seconds"] = round(max((self.now - since).total_seconds(), 0.0), 3)
        self.emit(EventType.NODE_EXITED, f"Left {node.name or node_id} with {outcome}", data, node_id, actor)

    def leave_and_enter(self, node_id: str, node: Node, outcome: str) -> None:
        """Go on with `outcome`; or, for an outcome the action node tries again later (its `retry`, tries left),
        stay at the node and wait."""
        if isinstance(node, ActionNode) and node.retry is not None and outcome in node.retry.outcomes:
            done = self.instance.retries or 0
            if done < node.retry.max:
                self.try_again_later(node_id, node.retry.after, done + 1, outcome)
                return
        following = self.leave(node_id, node, outcome)
        if following is not None:
            self.enter(following)

    def try_again_later(self, node_id: str, after: str, round_: int, outcome: str) -> None:
        """Stay at the action node; it is a task (or runs) again after `after` (round `round_` of its retries)."""
        inst = self.instance
        try:
            inst.wake_at = self.now + parse_duration(after)
        except ValueError as exc:
            self.fail(f"the retry cannot wait: {exc}", node_id)
            return
        inst.status = InstanceStatus.WAITING
        inst.waiting_for = "retry"
        inst.retries = round_
        inst.task_since = None
        inst.held_by = None
        inst.lease_expires_at = None
        inst.suggestion = None
        data = {"condition": "retry", "retry": round_, "outcome": outcome, "wake_at": inst.wake_at.isoformat()}
        self.emit(EventType.WAIT_STARTED, f"Trying again later ({outcome}), round {round_}", data, node_id)

    def come_back(self, node_id: str) -> None:
        """A retry's wait is over: the action node is a task (or an automatic step) again, as on arrival."""
        inst = self.instance
        node = inst.nodes[node_id]
        inst.waiting_for = None
        inst.wake_at = None
        data = {"condition": "retry", "retry": inst.retries or 0}
        self.emit(EventType.WAIT_COMPLETED, f"Back for round {inst.retries or 0}", data, node_id, actor=SYSTEM_ACTOR)
        following = self._arrive(node_id, node)
        if following is not None:
            self.enter(following)

    def cancel(
        self, reason: str | None, node_id: str | None, extra: dict[str, Any] | None = None, actor: str | None = None
    ) -> None:
        """The instance ends `cancelled`: its timer, task and pending automatic work are dropped."""
        inst = self.instance
        inst.status = InstanceStatus.CANCELLED
        inst.paused_status = None
        inst.completed_at = self.now
        self.drop_work()
        data = (extra or {}) | ({"reason": reason} if reason else {})
        self.emit(EventType.INSTANCE_CANCELLED, "Cancelled" + (f": {reason}" if reason else ""), data, node_id, actor)

    def drop_work(self) -> None:
        """No timer, no task, no hold, no suggestion: what leaving a node (or the flow) takes with it."""
        inst = self.instance
        for name in _WORK_FIELDS:
            if getattr(inst, name) is not None:  # a model's assignment costs far more than a look
                setattr(inst, name, None)

    def fail(self, reason: str, node_id: str | None) -> None:
        inst = self.instance
        inst.status = InstanceStatus.FAILED
        inst.completed_at = self.now
        inst.wake_at = None
        inst.task_since = None
        inst.held_by = None
        inst.lease_expires_at = None
        self.emit(EventType.INSTANCE_FAILED, f"Failed: {reason}", {"error": reason}, node_id, actor=SYSTEM_ACTOR)


def split_outcome(instance_id: str, node_id: str, weights: Mapping[str, int]) -> str:
    """The outcome of a split for this instance: a point in [0, total weight) from a hash of the instance's and the
    node's ids, and the outcome whose share (outcomes in name order) holds it. A split without weights has the
    empty outcome, which no node has (validation says so first)."""
    total = sum(weights.values())
    if total <= 0:
        return ""
    digest = hashlib.sha256(f"{instance_id}\x00{node_id}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") % total
    for outcome in sorted(weights):
        point -= weights[outcome]
        if point < 0:
            return outcome
    raise AssertionError("unreachable: the point lies below the total")


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
