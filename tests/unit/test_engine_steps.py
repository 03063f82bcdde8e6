"""The engine's steps as pure functions: no store, no HTTP, a clock moved by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.engine import steps
from cbworkflow.errors import Conflict, InvalidInput
from cbworkflow.models.events import EventType
from cbworkflow.models.instances import InstanceStatus, WorkflowInstance
from cbworkflow.models.templates import TemplateCreate
from conftest import reference_template

clock = FakeClock()


def make(nodes: dict[str, Any] | None = None, start: str = "initial_call") -> WorkflowInstance:
    body = reference_template() if nodes is None else {"name": "t", "start_node": start, "nodes": nodes}
    parsed = TemplateCreate.model_validate(body)
    return WorkflowInstance(
        id="i1",
        tenant="a",
        contact_id="c1",
        template_id="tpl",
        template_version="1.0.0",
        start_node=parsed.start_node or start,
        status=InstanceStatus.PENDING,
        nodes=parsed.nodes,
        created_at=clock.now(),
        updated_at=clock.now(),
    )


def types(step: steps.Step) -> list[str]:
    return [e.type.value for e in step.events]


def test_start_enters_the_start_node() -> None:
    step = steps.start(make(), clock.now(), "tok")
    assert step.instance.status is InstanceStatus.ACTIVE
    assert step.instance.current_node == "initial_call"
    assert step.instance.revision == 1
    assert types(step) == ["instance_started", "node_entered"]


def test_a_week_of_human_steps_in_simulated_time() -> None:
    fake = FakeClock()
    inst = steps.start(make(), fake.now(), "tok").instance
    for outcome, node, status in [
        ("answered_interested", "schedule_followup", InstanceStatus.WAITING),
        ("elapsed", "followup_text", InstanceStatus.ACTIVE),
        ("sent", "end_success", InstanceStatus.COMPLETED),
    ]:
        fake.advance(timedelta(days=3))
        inst = steps.transition(inst, outcome, fake.now(), "tok").instance
        assert (inst.current_node, inst.status) == (node, status)
    assert inst.end_status == "success"
    assert inst.completed_at == fake.now()
    assert inst.completed_at - inst.created_at == timedelta(days=9)


def test_transition_records_the_right_event_per_node_type() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    at_call = steps.transition(inst, "no_answer", clock.now(), "tok", note="rang twice")
    assert types(at_call) == ["user_action", "node_exited", "node_entered"]
    assert at_call.events[0].data == {"outcome": "no_answer", "note": "rang twice"}
    at_door = steps.transition(at_call.instance, "contacted_interested", clock.now(), "tok")
    assert at_door.instance.status is InstanceStatus.WAITING
    decided = steps.transition(at_door.instance, "mail", clock.now(), "tok", on_behalf_of="Sam")
    assert types(decided)[0] == "decision_manual_input"
    assert decided.events[0].data["on_behalf_of"] == "Sam"
    assert decided.events[0].actor == "tok"


def test_state_updates_merge_and_are_recorded() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    inst.state = {"keep": 1, "drop": 2, "nested": {"a": 1}}
    step = steps.transition(
        inst, "no_answer", clock.now(), "tok", state_updates={"drop": None, "nested": {"b": 2}, "new": [1]}
    )
    assert step.instance.state == {"keep": 1, "nested": {"a": 1, "b": 2}, "new": [1]}
    assert types(step)[0] == "state_updated"


def test_unknown_outcome_lists_the_allowed_ones() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    with pytest.raises(InvalidInput, match="allowed: answered_interested, answered_not_interested"):
        steps.transition(inst, "nope", clock.now(), "tok")


def test_late_duplicate_is_a_conflict() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    moved = steps.transition(inst, "no_answer", clock.now(), "tok").instance
    with pytest.raises(Conflict, match="moved from 'initial_call'"):
        steps.transition(moved, "no_answer", clock.now(), "tok", previous_node="initial_call")


def test_expected_node_guards_stale_clients() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    with pytest.raises(Conflict):
        steps.transition(inst, "no_answer", clock.now(), "tok", expected_node="schedule_door")


@pytest.mark.parametrize("status", [InstanceStatus.PENDING, InstanceStatus.PAUSED, InstanceStatus.COMPLETED])
def test_transition_only_when_active_or_waiting(status: InstanceStatus) -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    inst.status = status
    with pytest.raises(Conflict):
        steps.transition(inst, "no_answer", clock.now(), "tok")


def test_pause_and_resume_restore_the_status() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    waiting = steps.transition(inst, "answered_interested", clock.now(), "tok").instance
    paused = steps.pause(waiting, clock.now(), "tok").instance
    assert paused.status is InstanceStatus.PAUSED
    with pytest.raises(Conflict):
        steps.pause(paused, clock.now(), "tok")
    resumed = steps.resume(paused, clock.now(), "tok").instance
    assert resumed.status is InstanceStatus.WAITING
    assert resumed.paused_status is None


def test_cancel_finishes_and_cannot_repeat() -> None:
    step = steps.cancel(make(), clock.now(), "tok", reason="moved away")
    assert step.instance.status is InstanceStatus.CANCELLED
    assert step.events[0].data == {"reason": "moved away"}
    with pytest.raises(Conflict):
        steps.cancel(step.instance, clock.now(), "tok")


def test_end_node_at_start_completes_at_once() -> None:
    step = steps.start(make({"done": {"type": "end", "end_status": "skipped"}}, start="done"), clock.now(), "tok")
    assert step.instance.status is InstanceStatus.COMPLETED
    assert types(step) == ["instance_started", "node_entered", "instance_completed"]


def test_a_transition_to_a_missing_node_fails_the_instance() -> None:
    nodes = {"a": {"type": "action", "action": "call", "transitions": {"go": "ghost"}}}
    inst = steps.start(make(nodes, start="a"), clock.now(), "tok").instance
    step = steps.transition(inst, "go", clock.now(), "tok")
    assert step.instance.status is InstanceStatus.FAILED
    assert step.events[-1].type is EventType.INSTANCE_FAILED


def test_inputs_are_never_mutated() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    before = inst.model_dump()
    steps.transition(inst, "no_answer", clock.now(), "tok", state_updates={"x": 1})
    steps.pause(inst, clock.now(), "tok")
    assert inst.model_dump() == before


def test_tags_are_idempotent() -> None:
    inst = make()
    added = steps.change_tag(inst, "hot", True, clock.now(), "tok")
    assert added is not None
    assert added.instance.tags == ["hot"]
    assert steps.change_tag(added.instance, "hot", True, clock.now(), "tok") is None
    assert steps.change_tag(inst, "hot", False, clock.now(), "tok") is None


def test_an_instance_carries_at_most_100_tags() -> None:
    inst = make()
    inst.tags = [f"t{i}" for i in range(100)]
    with pytest.raises(Conflict, match="100 tags"):
        steps.change_tag(inst, "one-more", True, clock.now(), "tok")
    assert steps.change_tag(inst, "t5", False, clock.now(), "tok") is not None


def test_rules_of_one_step_share_one_time_budget() -> None:
    """A loop of costly rules (each within its own limit) fails once the step's shared budget is spent, long
    before it visits 100 nodes."""
    costly = {"type": "heuristic", "expression": "len([x for x in [0]*5000 if x == 0]) > 0"}
    nodes = {
        "a": {"type": "decision", "rule": costly, "transitions": {"true": "b", "false": "end"}},
        "b": {"type": "decision", "rule": costly, "transitions": {"true": "a", "false": "end"}},
        "end": {"type": "end"},
    }
    step = steps.start(make(nodes, start="a"), clock.now(), "tok")
    assert step.instance.status is InstanceStatus.FAILED
    failed = next(e for e in step.events if e.type.value == "instance_failed")
    assert "took longer than" in failed.message
    assert types(step).count("node_entered") < 100


# ---------------------------------------------------------------------------------------------- retry and move
DIVIDES = {
    "share": {
        "type": "decision",
        "rule": {"type": "heuristic", "expression": "100 / state.households > 10"},
        "transitions": {"true": "call", "false": "done"},
    },
    "call": {"type": "action", "action": "phone_call", "transitions": {"done": "done"}},
    "wait": {"type": "wait", "wait_condition": {"type": "duration", "duration": "P1D"},
             "transitions": {"elapsed": "done"}},
    "text": {"type": "action", "action": "sms", "transitions": {"sent": "done"}},
    "done": {"type": "end", "end_status": "reached"},
}  # fmt: skip


def failed_at_share() -> WorkflowInstance:
    inst = make(DIVIDES, start="share")
    inst.state = {"households": 0}
    step = steps.start(inst, clock.now(), "tok")
    assert (step.instance.status, step.instance.current_node) == (InstanceStatus.FAILED, "share")
    assert step.instance.completed_at is not None
    return step.instance


def test_a_failed_instance_keeps_the_node_it_failed_at_and_retry_enters_it_again() -> None:
    failed = failed_at_share()
    later = clock.now() + timedelta(hours=14)  # 09:00 in New York: a call is a task at once (contact hours)
    step = steps.retry(failed, later, "tok", state_updates={"households": 4}, on_behalf_of="Sam")
    assert types(step) == [
        "state_updated",
        "instance_retried",
        "node_entered",
        "decision_evaluated",
        "node_exited",
        "node_entered",
    ]
    assert (step.instance.status, step.instance.current_node) == (InstanceStatus.ACTIVE, "call")
    assert step.instance.state == {"households": 4}
    assert step.instance.completed_at is None
    assert step.instance.task_since == later
    retried = step.events[1]
    assert (retried.node_id, retried.actor, retried.data) == ("share", "tok", {"node": "share", "on_behalf_of": "Sam"})
    assert step.instance.revision == failed.revision + 1


def test_a_retry_whose_cause_remains_fails_again() -> None:
    step = steps.retry(failed_at_share(), clock.now(), "tok")
    assert step.instance.status is InstanceStatus.FAILED
    assert types(step)[0] == "instance_retried"
    assert types(step)[-2:] == ["action_failed", "instance_failed"]


def test_a_retried_executor_node_is_due_for_the_worker_as_a_new_visit() -> None:
    """The worker's idempotency key names the node visit (its node_entered event): a retry is a new visit, so a
    text that failed is sent again rather than dropped as a duplicate by the provider."""
    ctx = steps.Context(automatic_actions=frozenset({"sms"}))
    at_text = steps.move(failed_at_share(), clock.now(), "tok", node_id="text", reason="text them", ctx=ctx)
    failed = steps.action_finished(at_text.instance, None, {"error": "HTTP 500 after 5 attempts"}, clock.now(), ctx)
    assert (failed.instance.status, failed.instance.current_node) == (InstanceStatus.FAILED, "text")
    later = clock.now() + timedelta(minutes=5)
    step = steps.retry(failed.instance, later, "tok", ctx=ctx)
    assert (step.instance.status, step.instance.wake_at) == (InstanceStatus.ACTIVE, later)
    [first_visit] = [e.id for e in at_text.events if e.type is EventType.NODE_ENTERED]
    [new_visit] = [e.id for e in step.events if e.type is EventType.NODE_ENTERED]
    assert new_visit != first_visit


@pytest.mark.parametrize("status", [s for s in InstanceStatus if s is not InstanceStatus.FAILED])
def test_only_a_failed_instance_can_be_retried(status: InstanceStatus) -> None:
    inst = failed_at_share()
    inst.status = status
    with pytest.raises(Conflict, match=f"cannot retry an instance that is {status.value}; it must be failed"):
        steps.retry(inst, clock.now(), "tok")


@pytest.mark.parametrize(
    ("node", "status", "due"),
    [
        ("done", InstanceStatus.COMPLETED, False),
        ("wait", InstanceStatus.WAITING, True),
        ("call", InstanceStatus.ACTIVE, False),
    ],
)
def test_move_enters_the_node_as_usual(node: str, status: InstanceStatus, due: bool) -> None:
    failed = failed_at_share()
    step = steps.move(
        failed, clock.now(), "admin-tok", node_id=node, reason="sent down the wrong branch", on_behalf_of="Lee"
    )
    assert (step.instance.current_node, step.instance.status) == (node, status)
    moved = step.events[0]
    assert moved.type is EventType.INSTANCE_MOVED
    assert moved.node_id == "share"
    assert moved.data == {
        "moved_from": "share",
        "moved_to": node,
        "reason": "sent down the wrong branch",
        "on_behalf_of": "Lee",
    }
    assert types(step)[1] == "node_entered"
    assert (step.instance.wake_at is not None) == due
    if status is InstanceStatus.COMPLETED:
        assert step.instance.end_status == "reached"
        assert step.instance.completed_at == clock.now()
    else:
        assert step.instance.completed_at is None


def test_an_automatic_node_moved_to_is_due_for_the_worker() -> None:
    ctx = steps.Context(automatic_actions=frozenset({"sms"}))
    step = steps.move(failed_at_share(), clock.now(), "tok", node_id="text", reason="text them instead", ctx=ctx)
    assert (step.instance.status, step.instance.wake_at) == (InstanceStatus.ACTIVE, clock.now())


def test_a_pending_instance_moved_starts_at_that_node() -> None:
    step = steps.move(make(DIVIDES, start="share"), clock.now(), "tok", node_id="call", reason="skip the rule")
    assert (step.instance.status, step.instance.current_node) == (InstanceStatus.ACTIVE, "call")
    assert step.instance.started_at == clock.now()
    assert step.events[0].data["moved_from"] is None


def test_a_paused_instance_moved_stays_paused_until_resumed() -> None:
    inst = steps.start(make(), clock.now(), "tok").instance
    paused = steps.pause(inst, clock.now(), "tok").instance
    step = steps.move(paused, clock.now(), "tok", node_id="schedule_followup", reason="they asked for a call back")
    assert (step.instance.status, step.instance.paused_status) == (InstanceStatus.PAUSED, InstanceStatus.WAITING)
    assert step.instance.current_node == "schedule_followup"
    assert step.instance.wake_at is not None  # the wait's timer is set; a paused instance is not due
    resumed = steps.resume(step.instance, clock.now(), "tok").instance
    assert (resumed.status, resumed.current_node) == (InstanceStatus.WAITING, "schedule_followup")


def test_a_paused_instance_moved_to_an_end_node_completes() -> None:
    inst = steps.pause(steps.start(make(), clock.now(), "tok").instance, clock.now(), "tok").instance
    step = steps.move(inst, clock.now(), "tok", node_id="end_declined", reason="they said no by email")
    assert (step.instance.status, step.instance.paused_status) == (InstanceStatus.COMPLETED, None)


def test_move_to_an_unknown_node_names_it_and_the_nodes_there_are() -> None:
    with pytest.raises(InvalidInput, match=r"node: 'ghost' is not a node .*its nodes: call, done, share, text, wait"):
        steps.move(failed_at_share(), clock.now(), "tok", node_id="ghost", reason="typo")


@pytest.mark.parametrize("status", [InstanceStatus.COMPLETED, InstanceStatus.CANCELLED])
def test_a_finished_instance_cannot_be_moved(status: InstanceStatus) -> None:
    inst = failed_at_share()
    inst.status = status
    with pytest.raises(Conflict, match=f"cannot move an instance that is {status.value}"):
        steps.move(inst, clock.now(), "tok", node_id="call", reason="too late")


def test_retry_and_move_never_mutate_their_input() -> None:
    failed = failed_at_share()
    before = failed.model_dump()
    steps.retry(failed, clock.now(), "tok", state_updates={"households": 2})
    steps.move(failed, clock.now(), "tok", node_id="done", reason="closing")
    assert failed.model_dump() == before
