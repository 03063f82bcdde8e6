"""Consent where the send happens, on every store: the worker re-reads the contact's opt-outs in the transaction
that records `action_started`, after it claimed the step and before it calls the executor (workflows.md § Consent).

The interleavings are made exactly, not hoped for: the test claims the work itself, commits the opt-out, and only
then lets the worker process what it claimed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from test_engine_run import Engine, done, engine, run

from cbworkflow.models.consent import Channel
from cbworkflow.models.tasks import TaskQuery
from cbworkflow.runtime.work import ActionRequest, ActionResult
from cbworkflow.store.base import PageRequest
from cbworkflow.wiring import SYSTEM
from flows import one_text

__all__ = ["engine"]  # the fixture, on each store

TEXT = one_text(opted_out=True)


async def claim(engine: Engine) -> Any:
    now = engine.clock.now()
    store = engine.services.store
    [work] = await store.system_write(lambda stx: stx.claim_due(now, "w1", now + timedelta(minutes=5), 10))
    return work


def test_an_opt_out_committed_after_the_claim_and_before_the_send_wins(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        contact = await engine.contact(name="Ada", phone="+14155550100")
        instance = await engine.enrol(contact, "one-text")
        work = await claim(engine)
        await engine.services.consent.opt_out(SYSTEM, contact, [Channel.SMS], "replied STOP")
        assert (await engine.get(instance)).current_node == "text"  # an automatic step is the worker's to check

        await engine.worker.process(work)

        assert [kind for kind, _ in engine.script.asked] == []  # nothing was sent
        found = await engine.get(instance)
        assert (found.status.value, found.end_status) == ("completed", "stopped")
        kinds = await engine.events(instance)
        assert "action_started" not in kinds
        assert await engine.settle() == 0

    run(engine, go())


def test_a_text_past_the_check_was_sent_before_an_opt_out_that_then_cancels_the_instance(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        contact = await engine.contact(name="Ada", phone="+14155550100")
        instance = await engine.enrol(contact, "one-text")

        async def send_then_opt_out(request: ActionRequest) -> ActionResult:
            engine.script.asked.append((request.action, request))
            await engine.services.consent.opt_out(SYSTEM, contact, None, "asked on the phone")
            return done("sent", provider_id="SM1")

        engine.script.run_action = send_then_opt_out  # type: ignore[method-assign]
        assert await engine.settle() == 1

        assert [kind for kind, _ in engine.script.asked] == ["sms"]
        found = await engine.get(instance)
        assert found.status.value == "cancelled"  # every channel refused: cancelled; the late result is dropped
        kinds = await engine.events(instance)
        assert kinds.index("action_started") < kinds.index("instance_cancelled")
        assert "action_completed" not in kinds

    run(engine, go())


def test_a_text_to_a_contact_who_refused_only_email_is_sent(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id="SM1")]

    async def go() -> None:
        await engine.template(TEXT)
        contact = await engine.contact(name="Ada", phone="+14155550100")
        await engine.services.consent.opt_out(SYSTEM, contact, [Channel.EMAIL], None)
        instance = await engine.enrol(contact, "one-text")
        assert await engine.settle() == 1
        found = await engine.get(instance)
        assert (found.status.value, found.end_status) == ("completed", "texted")
        page = await engine.services.instances.timeline(SYSTEM, instance, PageRequest(limit=100))
        [started] = [e for e in page.items if e.type.value == "action_started"]
        assert started.data["channel"] == "sms"

    run(engine, go())


def test_a_claim_moves_on_a_task_whose_contact_refused_its_channel_by_any_path(engine: Engine) -> None:
    """The claim's own check, for an opt-out written without the service (another process's older code, a repair
    by hand): the refused task is moved on and the next one is handed out."""
    calls = {
        "id": "calls",
        "name": "Calls",
        "start_node": "call",
        "nodes": {
            "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end", "opted_out": "end"}},
            "end": {"type": "end"},
        },
    }

    async def go() -> None:
        await engine.template(calls)
        refused = await engine.contact(name="Refused")
        allowed = await engine.contact(name="Allowed")
        first = await engine.enrol(refused, "calls")
        engine.clock.advance(timedelta(seconds=1))
        second = await engine.enrol(allowed, "calls")

        def refuse(tx: Any) -> None:
            contact = tx.get_contact(refused)
            tx.update_contact(contact.model_copy(update={"opted_out": {Channel.PHONE: engine.clock.now()}}))

        await engine.services.store.write("default", refuse)
        task = await engine.services.tasks.claim(SYSTEM, TaskQuery(template_id="calls"))
        assert task is not None
        assert task.instance_id == second
        found = await engine.get(first)
        assert (found.status.value, found.end_status) == ("completed", "success")
        kinds = await engine.events(first)
        assert "node_exited" in kinds

    run(engine, go())
