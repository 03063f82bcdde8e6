"""Dry runs (`POST /api/workflows/{id}/simulate`, `cbworkflow simulate`): every path of a template on a simulated
clock, through the engine's own steps, with nothing stored, sent or asked.

An instance is made in memory and moved by the same pure steps the worker and the API use, so waits, contact
hours, opt-outs, retries and heuristic rules behave as they will for real. Where the real world would choose (a
person's outcome, a model's, a webhook's answer, an executor's result, whether an awaited event comes), each
outcome is taken in turn, a branch of the search, unless `choose` fixes the node's outcome. A split takes each of
its branches too (a real instance takes the one its id chooses): the step is run again for each other branch.
Paths are found depth first, in the template's outcome order, until `max_paths`; a path of more than `MAX_STEPS`
steps (a loop a person keeps choosing) is cut.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from ..models.events import EventType
from ..models.instances import TERMINAL, WorkflowInstance
from ..models.templates import EMIT_EVENT, ActionNode, DecisionNode, SplitNode, WaitNode, WebhookNode
from . import steps
from .entering import AI_ACTOR, Context, StepBuilder

MAX_STEPS = 200  # on one path
MAX_WORK = 20_000  # steps made in all, over every path and split combination
MAX_SPLIT_RUNS = 64  # combinations of split branches one step is run for
MAX_OPEN = 5_000  # branches waiting to be explored at once
MAX_SECONDS = 5.0  # of wall-clock time: a dry run's cost is bounded whatever the template
ACTOR = "simulation"

Make = Callable[[Context], steps.Step]


@dataclass(frozen=True)
class SimulatedStep:
    node: str
    outcome: str
    at: datetime


@dataclass
class SimulatedPath:
    steps: list[SimulatedStep]
    end_status: str | None  # the end node's status, or `failed` / `cancelled`; None for a path cut short
    duration_s: float


@dataclass
class Simulation:
    paths: list[SimulatedPath] = field(default_factory=list)
    truncated: bool = False


@dataclass
class _Branch:
    instance: WorkflowInstance
    steps: list[SimulatedStep]
    now: datetime


def simulate(
    instance: WorkflowInstance,
    ctx: Context,
    start_at: datetime,
    *,
    choose: Mapping[str, str] | None = None,
    max_paths: int = 200,
) -> Simulation:
    """Every path of the pending `instance` (never stored: it carries the template's nodes) from `start_at`."""
    chosen = dict(choose or {})
    found = Simulation()
    base = dataclasses.replace(ctx, split_plan={})
    budget = _Budget(time.monotonic() + MAX_SECONDS)
    stack = [
        _Branch(made.instance, _exits(made), _latest(made, start_at))
        for made in _every_split(lambda c: steps.start(instance, start_at, ACTOR, ctx=c), base, chosen, budget)
    ][::-1]
    while stack:
        if budget.spent() or len(stack) > MAX_OPEN:
            found.truncated = True
            break
        branch = stack.pop()
        inst = branch.instance
        if inst.status in TERMINAL or len(branch.steps) > MAX_STEPS:
            if len(found.paths) >= max_paths:
                found.truncated = True
                break
            cut = inst.status not in TERMINAL
            end = None if cut else (inst.end_status or inst.status.value)
            at = branch.steps[-1].at if branch.steps else start_at
            found.paths.append(SimulatedPath(branch.steps, end, (at - start_at).total_seconds()))
            found.truncated = found.truncated or cut
            continue
        following = [
            _Branch(made.instance, branch.steps + _exits(made), _latest(made, branch.now))
            for make in _next_steps(inst, branch.now, chosen)
            for made in _every_split(make, base, chosen, budget)
        ]
        stack.extend(reversed(following))  # the first outcome is explored first
    return found


@dataclass
class _Budget:
    """What a dry run may still spend: steps made (every split combination counts) and time."""

    deadline: float
    made: int = 0

    def spent(self) -> bool:
        return self.made >= MAX_WORK or time.monotonic() > self.deadline


def _every_split(make: Make, base: Context, chosen: Mapping[str, str], budget: _Budget) -> list[steps.Step]:
    """The step `make` takes, once per combination of branches of the splits it passes through (at most
    `MAX_SPLIT_RUNS`, and none once the budget is spent)."""
    made: list[steps.Step] = []
    plans = [dict(chosen)]
    while plans and len(made) < MAX_SPLIT_RUNS and not budget.spent():
        budget.made += 1
        plan = plans.pop(0)
        ctx = dataclasses.replace(base, split_plan=plan, splits_met=[])
        made.append(make(ctx))
        for node_id, branches in ctx.splits_met:
            plans.extend({**plan, node_id: other} for other in branches[1:])
    return made


def _exits(made: steps.Step) -> list[SimulatedStep]:
    return [
        SimulatedStep(e.node_id or "", str(e.data.get("outcome", "")), e.timestamp)
        for e in made.events
        if e.type is EventType.NODE_EXITED
    ]


def _latest(made: steps.Step, now: datetime) -> datetime:
    return max([now, *(e.timestamp for e in made.events)])


def _outcomes(node_id: str, transitions: Mapping[str, str], chosen: Mapping[str, str]) -> list[str]:
    fixed = chosen.get(node_id)
    return [fixed] if fixed is not None and fixed in transitions else list(transitions)


def _next_steps(inst: WorkflowInstance, now: datetime, chosen: Mapping[str, str]) -> list[Make]:
    """The steps the real world could take next from where `inst` is: one per outcome it could choose."""
    node_id = inst.current_node or ""
    node = inst.nodes[node_id]
    due = max(now, inst.wake_at) if inst.wake_at is not None else now
    if isinstance(node, ActionNode) and inst.waiting_for == "retry":
        return [lambda c: steps.come_back(inst, due, c)]
    if isinstance(node, WaitNode):
        condition = node.wait_condition or {}
        if condition.get("type") != "event":
            return [lambda c: steps.fire_timer(inst, due, c)]
        name = str(condition.get("event"))
        made: list[Make] = []
        if chosen.get(node_id) != "timeout":
            made.append(lambda c: steps.receive_event(inst, name, {}, now, ACTOR, c))
        if inst.wake_at is not None and chosen.get(node_id) != "received":
            made.append(lambda c: steps.fire_timer(inst, due, c))
        return made
    if isinstance(node, ActionNode) and node.action == EMIT_EVENT:
        return [lambda c: steps.action_finished(inst, "sent", {}, due, c)]
    outcomes = _outcomes(node_id, node.transitions, chosen)
    if isinstance(node, WebhookNode) or (isinstance(node, ActionNode) and inst.task_since is None):
        return [_finished(inst, outcome, due) for outcome in outcomes]  # a call's answer, an executor's result
    if isinstance(node, SplitNode):  # passed through by the step that entered it; never waited at
        return []
    if isinstance(node, DecisionNode) and inst.waiting_for == "ai_decision":
        return [_decided(inst, node_id, node, outcome, due) for outcome in outcomes]
    at = max(now, inst.task_since or now)  # a person's task: done as soon as it opens to them
    return [_recorded(inst, outcome, at) for outcome in outcomes]


def _finished(inst: WorkflowInstance, outcome: str, at: datetime) -> Make:
    return lambda c: steps.action_finished(inst, outcome, {}, at, c)


def _recorded(inst: WorkflowInstance, outcome: str, at: datetime) -> Make:
    return lambda c: steps.transition(inst, outcome, at, ACTOR, ctx=c)


def _decided(inst: WorkflowInstance, node_id: str, node: DecisionNode, outcome: str, at: datetime) -> Make:
    """The model chose `outcome` (a simulation asks no model)."""

    def make(ctx: Context) -> steps.Step:
        b = StepBuilder(inst, at, AI_ACTOR, ctx)
        b.emit(EventType.DECISION_EVALUATED, f"Simulated: the model chose {outcome}", {"outcome": outcome}, node_id)
        b.leave_and_enter(node_id, node, outcome)
        return b.step()

    return make
