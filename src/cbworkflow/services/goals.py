"""Goals: exits that stop the flow (workflows.md § Goals).

When a goal's event happens for a contact, every unfinished instance of that template for that contact is
completed with `end_status` `goal:<id>`, in the transaction that records the event. The instances are read under
their row locks and saved with a new revision, so a step taken at the same moment (a person's outcome, the worker
applying a timer or an executor's answer) either commits first, and the goal then completes the moved instance,
or finds the revision changed and is dropped (the worker) or answered 409 (a person): never both half-applied.
The template's current goals count, not the frozen copy an instance runs on: an organiser adds a goal and it stops
the runs already under way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ..engine import steps
from ..engine.sandbox import ExpressionError
from ..models.instances import TERMINAL, WorkflowInstance
from ..models.templates import Goal, TemplateHooks
from ..store.base import Tx
from .happenings import ErrorLog, Happening, matches, where_holds


@dataclass(frozen=True)
class GoalReached:
    """An instance a goal completed."""

    instance_id: str
    template_id: str
    goal: str
    contact_id: str


def reach_goals(
    tx: Tx,
    hooks: Sequence[TemplateHooks],
    happenings: Sequence[Happening],
    errors: ErrorLog,
    *,
    now: datetime,
    actor: str,
) -> list[GoalReached]:
    """Complete the instances the happenings' goals reach, in `tx`; what a goal's `where` raised goes to `errors`."""
    reached: list[GoalReached] = []
    done: set[str] = set()
    for happening in happenings:
        if happening.new:
            continue  # created in this transaction: nothing to complete yet
        listening = [(h, goal) for h in hooks for goal in h.goals if matches(goal, happening)]
        if not listening:
            continue
        unfinished = tx.unfinished_instances_of_contact(happening.contact.id)  # locked: a racing step waits
        for template, goal in listening:
            mine = [i for i in unfinished if i.template_id == template.template_id and i.id not in done]
            if not mine:
                continue  # nothing to complete: the where is not even evaluated
            try:
                if not where_holds(goal.where, happening, now):
                    continue
            except ExpressionError as exc:
                errors.failed(template.template_id, "goal", goal.id, goal.on, exc, happening)
                continue
            for instance in mine:
                _complete(tx, instance, goal, happening, now, actor)
                done.add(instance.id)
                reached.append(GoalReached(instance.id, instance.template_id, goal.id, instance.contact_id))
    return reached


def _complete(tx: Tx, instance: WorkflowInstance, goal: Goal, happening: Happening, now: datetime, actor: str) -> None:
    if instance.status in TERMINAL:
        return
    data: dict[str, object] = {"on": goal.on}
    if goal.on == "tag_added":
        data["tag"] = goal.tag
    elif goal.on == "event":
        data["event"] = goal.event
    step = steps.reach_goal(instance, goal.id, now, actor, data)
    tx.update_instance(step.instance)
    tx.append_events(step.events)
