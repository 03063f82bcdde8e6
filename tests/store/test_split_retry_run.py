"""A/B splits and come-back-later retries, on every store, on a fake clock (workflows.md § More node types and
node options): a split's branch is the same for the same instance; an action's retry keeps the instance at the
node and makes the step a task (or a send) again after its wait, up to `max` times; the stats count each branch
and each round."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_engine_run import Engine, done, engine, run

from cbworkflow.engine.entering import split_outcome
from cbworkflow.store.base import PageRequest
from cbworkflow.wiring import SYSTEM
from flows import ab_split

__all__ = ["engine"]  # the fixture, on each store

SPLIT = ab_split()

CALLS = {
    "id": "calls",
    "name": "Calls",
    "start_node": "call",
    "nodes": {
        "call": {
            "type": "action",
            "action": "phone_call",
            "retry": {"outcomes": ["no_answer", "not_home"], "after": "P2D", "max": 2},
            "transitions": {"answered": "spoke", "no_answer": "gave_up", "not_home": "gave_up"},
        },
        "spoke": {"type": "end", "end_status": "spoke"},
        "gave_up": {"type": "end", "end_status": "unreached"},
    },
}


def test_a_split_sends_each_instance_down_the_branch_its_ids_choose(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(SPLIT)
        contact = await engine.contact(name="Pat")
        chosen: dict[str, str] = {}
        for _ in range(60):
            instance = await engine.enrol(contact, "ab")
            found = await engine.get(instance)
            assert found.status.value == "completed"
            chosen[instance] = found.end_status or ""
            assert found.end_status == f"got_{split_outcome(instance, 'split', {'a': 70, 'b': 30})}"
        stats = await engine.services.stats.of_template("default", "ab")
        outcomes = stats.nodes["split"].outcomes
        assert outcomes.get("a", 0) + outcomes.get("b", 0) == 60
        assert outcomes.get("a", 0) == sum(1 for end in chosen.values() if end == "got_a")
        assert stats.end_statuses["got_a"] == outcomes.get("a", 0)
        events = await engine.events(next(iter(chosen)))
        assert "decision_evaluated" in events

    run(engine, go())


def test_a_call_not_answered_comes_back_twice_then_gives_up(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(CALLS)
        contact = await engine.contact(name="Pat")
        instance = await engine.enrol(contact, "calls")
        for round_ in (1, 2):
            waiting = await engine.record(instance, "no_answer" if round_ == 1 else "not_home")
            assert (waiting.status.value, waiting.current_node, waiting.waiting_for) == ("waiting", "call", "retry")
            assert waiting.retries == round_
            assert waiting.task_since is None
            assert waiting.wake_at == engine.clock.now() + timedelta(days=2)
            engine.clock.advance(timedelta(days=2) - timedelta(seconds=1))
            assert await engine.settle() == 0
            engine.clock.advance(timedelta(seconds=1))
            assert await engine.settle() == 1
            back = await engine.get(instance)
            assert (back.status.value, back.current_node, back.task_since) == ("active", "call", engine.clock.now())
        last = await engine.record(instance, "no_answer")  # the third no answer: no tries left
        assert (last.status.value, last.end_status) == ("completed", "unreached")
        page = await engine.services.instances.timeline(SYSTEM, instance, PageRequest(limit=200))
        retries = [e.data["retry"] for e in page.items if e.type.value == "wait_started"]
        assert retries == [1, 2]
        stats = await engine.services.stats.of_template("default", "calls")
        assert stats.nodes["call"].retries == {"1": 1, "2": 1}
        assert stats.nodes["call"].outcomes == {"no_answer": 1}  # leaving only: the tries again are `retries`
        assert stats.nodes["call"].entered == 1  # it stayed at the node: entered once

    run(engine, go())


def test_an_answer_on_a_later_round_follows_its_transition(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(CALLS)
        contact = await engine.contact(name="Pat")
        instance = await engine.enrol(contact, "calls")
        await engine.record(instance, "no_answer")
        engine.clock.advance(timedelta(days=2))
        await engine.settle()
        spoke = await engine.record(instance, "answered")
        assert (spoke.status.value, spoke.end_status) == ("completed", "spoke")

    run(engine, go())


def test_an_executor_s_failed_text_is_sent_again_after_the_wait(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("failed", error="carrier down"), done("sent", provider_id="SM2")]
    texts: dict[str, Any] = {
        "id": "texts",
        "name": "Texts",
        "start_node": "text",
        "contact_hours": {"start": "00:00", "end": "24:00"},
        "nodes": {
            "text": {
                "type": "action",
                "action": "sms",
                "action_config": {"message": "Hi"},
                "retry": {"outcomes": ["failed"], "after": "PT6H", "max": 1},
                "transitions": {"sent": "done", "failed": "done"},
            },
            "done": {"type": "end"},
        },
    }

    async def go() -> None:
        await engine.template(texts)
        contact = await engine.contact(name="Pat", phone="+14155550100")
        instance = await engine.enrol(contact, "texts")
        assert await engine.settle() == 1
        assert (await engine.get(instance)).waiting_for == "retry"
        engine.clock.advance(timedelta(hours=6))
        assert await engine.settle() == 2  # back, then the text again
        assert [kind for kind, _ in engine.script.asked] == ["sms", "sms"]
        found = await engine.get(instance)
        assert found.status.value == "completed"

    run(engine, go())
