"""The engine running workflows by itself: the worker, waits, AI decisions, webhooks and executors, on a fake clock.

Everything real except time and the outside world: services and the worker on a real store (each of the three),
the clock moved by hand, and handlers that script what the model, the webhooks and the executors answer.
The reference template runs end to end with every branch taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cbworkflow.clock import FakeClock
from cbworkflow.models.contacts import ContactCreate
from cbworkflow.models.events import EventPost
from cbworkflow.models.instances import InstanceCreate, TransitionRequest, WorkflowInstance
from cbworkflow.models.templates import TemplateCreate
from cbworkflow.runtime.ai import AIDecision
from cbworkflow.runtime.work import ActionRequest, ActionResult, DecisionRequest, WebhookCall
from cbworkflow.runtime.worker import Worker
from cbworkflow.settings import Settings
from cbworkflow.store.base import PageRequest
from cbworkflow.wiring import SYSTEM, bootstrap, build_services
from conftest import PostgresDatabase, store_url

TEMPLATE = "county-outreach-v1"


def done(outcome: str | None, **data: Any) -> ActionResult:
    """What an executor or a webhook answers: the outcome (None: it failed, `error` saying why)."""
    error = data.pop("error", None)
    return ActionResult(outcome, ok=outcome is not None, data=data, error=error)


def decided(outcome: str | None, reason: str = "", error: str | None = None) -> AIDecision:
    """What the model answers (None: it failed, `error` saying why)."""
    return AIDecision(outcome, reason, model="fake", error=error)


@dataclass
class Script:
    """What the outside world answers, and what it was asked."""

    ai: list[AIDecision] = field(default_factory=list)
    actions: dict[str, list[ActionResult]] = field(default_factory=dict)
    webhook: Callable[[WebhookCall], ActionResult] = lambda call: done("success")
    asked: list[tuple[str, Any]] = field(default_factory=list)

    async def close(self) -> None:
        """Nothing to let go of."""

    async def decide(self, request: DecisionRequest) -> AIDecision:
        self.asked.append(("ai", request))
        return self.ai.pop(0)

    async def call_webhook(self, call: WebhookCall) -> ActionResult:
        self.asked.append(("webhook", call))
        return self.webhook(call)

    async def run_action(self, request: ActionRequest) -> ActionResult:
        self.asked.append((request.action, request))
        return self.actions[request.action].pop(0)


class Engine:
    """Services and a worker on one store, with a clock moved by hand."""

    def __init__(self, services: Any, clock: FakeClock, script: Script) -> None:
        self.services = services
        self.clock = clock
        self.script = script
        self.worker = Worker(
            services.store, clock, script, automatic_actions=services.instances.automatic_actions, worker_id="w1"
        )

    async def settle(self) -> int:
        """Run the worker until nothing is due now; returns how many pieces of work it ran."""
        done = 0
        while claimed := await self.worker.run_once():
            done += claimed
            await self.worker.drain()
        return done

    async def contact(self, **fields: Any) -> str:
        made = await self.services.contacts.create(SYSTEM, ContactCreate(name=fields.pop("name", "Pat"), **fields))
        return str(made.id)

    async def enrol(self, contact_id: str, template: str = TEMPLATE, state: dict[str, Any] | None = None) -> str:
        body = InstanceCreate(contact_id=contact_id, template_id=template, start=True, initial_state=state or {})
        return str((await self.services.instances.create(SYSTEM, body)).id)

    async def record(self, instance_id: str, outcome: str, **extra: Any) -> WorkflowInstance:
        body = TransitionRequest(outcome=outcome, **extra)
        return await self.services.instances.transition(SYSTEM, instance_id, body)

    async def get(self, instance_id: str) -> WorkflowInstance:
        return await self.services.instances.get(SYSTEM, instance_id)

    async def events(self, instance_id: str) -> list[str]:
        page = await self.services.instances.timeline(SYSTEM, instance_id, PageRequest(limit=500))
        return [e.type.value for e in page.items]

    async def template(self, body: dict[str, Any]) -> str:
        made = await self.services.templates.create(SYSTEM, TemplateCreate.model_validate(body))
        return str(made.id)


@pytest.fixture(params=["sqlite", "postgresql", "json"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    database = PostgresDatabase(migrated=True) if request.param == "postgresql" else None
    loop = asyncio.new_event_loop()
    settings = Settings(
        data_dir=tmp_path,
        database_url=store_url(request.param, tmp_path, database),
        admin_token="engine-test-token-0123456789",
        executors="sms=sms",
    )
    clock = FakeClock()
    services = loop.run_until_complete(build_services(settings, clock=clock))
    loop.run_until_complete(bootstrap(services, load_example=True))
    made = Engine(services, clock, Script())
    made.loop = loop  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        loop.run_until_complete(services.store.close())
        loop.close()
        if database is not None:
            database.drop()


def run(engine: Engine, coroutine: Any) -> Any:
    return engine.loop.run_until_complete(coroutine)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- the reference template
def test_interested_on_the_phone_waits_three_days_then_texts(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id="SM1")]

    async def go() -> None:
        contact = await engine.contact(name="Ada", phone="555-201-3344")
        instance = await engine.enrol(contact)
        moved = await engine.record(instance, "answered_interested")
        assert (moved.current_node, moved.status.value, moved.waiting_for) == ("schedule_followup", "waiting", "timer")
        assert moved.wake_at == engine.clock.now() + timedelta(days=3)
        assert await engine.settle() == 0  # nothing due yet
        engine.clock.advance(timedelta(days=3) - timedelta(seconds=1))
        assert await engine.settle() == 0
        engine.clock.advance(timedelta(seconds=1))
        assert await engine.settle() == 2  # the timer, then the text (due at once)
        done = await engine.get(instance)
        assert (done.status.value, done.end_status) == ("completed", "success")
        sms = [request for kind, request in engine.script.asked if kind == "sms"]
        assert sms[0].config["message"].startswith("Hi Ada, thanks")  # placeholders filled
        assert sms[0].idempotency_key.startswith(instance)
        assert (sms[0].instance_id, sms[0].node_id, sms[0].outcomes) == (instance, "followup_text", ["failed", "sent"])
        kinds = await engine.events(instance)
        assert kinds.count("wait_started") == kinds.count("wait_completed") == 1
        assert "action_completed" in kinds

    run(engine, go())


def test_a_failed_text_goes_to_the_postcard_a_person_mails(engine: Engine) -> None:
    engine.script.actions["sms"] = [done(None, error="the SMS provider refused the number")]

    async def go() -> None:
        contact = await engine.contact()
        instance = await engine.enrol(contact)
        await engine.record(instance, "answered_interested")
        engine.clock.advance(timedelta(days=3))
        await engine.settle()
        # The executor returned no outcome: workflows.md says the instance fails unless the node has `failed`.
        failed = await engine.get(instance)
        assert failed.status.value == "failed"
        assert "action_failed" in await engine.events(instance)

    run(engine, go())


def test_door_notes_read_by_the_model_choose_the_text(engine: Engine) -> None:
    engine.script.ai = [decided("text", "prefers texting")]
    engine.script.actions["sms"] = [done("sent")]

    async def go() -> None:
        contact = await engine.contact(name="Grace")
        instance = await engine.enrol(contact)
        await engine.record(instance, "no_answer")
        at_door = await engine.record(
            instance, "contacted_interested", state_updates={"door_notes": "text me on my mobile"}
        )
        assert (at_door.current_node, at_door.waiting_for) == ("door_decision", "ai_decision")
        await engine.settle()
        done = await engine.get(instance)
        assert (done.status.value, done.end_status) == ("completed", "success")
        asked = engine.script.asked[0][1]
        assert "text me on my mobile" in asked.prompt
        assert "Grace" in asked.prompt
        assert asked.outcomes == ["mail", "text"]
        evaluated = [e for e in done.timeline if e.type.value == "decision_evaluated"]
        assert evaluated[0].actor == "ai"
        assert evaluated[0].data["outcome"] == "text"

    run(engine, go())


def test_a_model_that_fails_takes_the_fallback_then_a_person_mails(engine: Engine) -> None:
    engine.script.ai = [decided(None, error="timed out after 30 s")]

    async def go() -> None:
        contact = await engine.contact()
        instance = await engine.enrol(contact)
        await engine.record(instance, "voicemail")
        await engine.record(instance, "contacted_interested")
        await engine.settle()
        at_mail = await engine.get(instance)
        assert (at_mail.current_node, at_mail.status.value) == ("send_postcard", "active")
        assert at_mail.task_since is not None  # mail has no executor here: a person's task
        evaluated = next(e for e in at_mail.timeline if e.type.value == "decision_evaluated")
        assert evaluated.data["fallback"] is True
        assert evaluated.data["error"] == "timed out after 30 s"
        done = await engine.record(instance, "failed")
        assert (done.status.value, done.end_status) == ("completed", "failed")

    run(engine, go())


@pytest.mark.parametrize(
    ("path", "end"),
    [
        (["answered_not_interested"], "declined"),
        (["no_answer", "contacted_not_interested"], "declined"),
        (["no_answer", "not_home", "sent"], "success"),
    ],
)
def test_human_branches(engine: Engine, path: list[str], end: str) -> None:
    async def go() -> None:
        instance = await engine.enrol(await engine.contact())
        for outcome in path:
            await engine.record(instance, outcome)
        done = await engine.get(instance)
        assert (done.status.value, done.end_status) == ("completed", end)
        assert await engine.settle() == 0

    run(engine, go())


# ---------------------------------------------------------------------------------------------- waits and pause
def test_pause_holds_the_timer_and_resume_fires_what_fell_due(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent")]

    async def go() -> None:
        instance = await engine.enrol(await engine.contact())
        await engine.record(instance, "answered_interested")
        await engine.services.instances.pause(SYSTEM, instance)
        engine.clock.advance(timedelta(days=5))
        assert await engine.settle() == 0  # paused: the worker leaves it alone
        assert (await engine.get(instance)).status.value == "paused"
        await engine.services.instances.resume(SYSTEM, instance)
        assert await engine.settle() == 2
        assert (await engine.get(instance)).status.value == "completed"

    run(engine, go())


EVENT_TEMPLATE = {
    "id": "rsvp",
    "name": "RSVP",
    "start_node": "invite",
    "nodes": {
        "invite": {
            "type": "wait",
            "wait_condition": {"type": "event", "event": "rsvp_received", "timeout": "P7D"},
            "transitions": {"received": "yes", "timeout": "no"},
        },
        "yes": {"type": "end", "end_status": "came"},
        "no": {"type": "end", "end_status": "silent"},
    },
}


def test_event_waits_are_resumed_by_their_event_or_time_out(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(EVENT_TEMPLATE)
        first, second = await engine.contact(), await engine.contact()
        answered, silent = await engine.enrol(first, "rsvp"), await engine.enrol(second, "rsvp")
        waiting = await engine.get(answered)
        assert (waiting.waiting_for, waiting.wake_at) == ("event:rsvp_received", engine.clock.now() + timedelta(days=7))
        events = engine.services.events
        assert (await events.post(SYSTEM, EventPost(name="other", contact_id=first))).resumed == []
        answer = await events.post(SYSTEM, EventPost(name="rsvp_received", contact_id=first, data={"seats": 2}))
        assert answer.resumed == [answered]
        came = await engine.get(answered)
        assert (came.status.value, came.end_status) == ("completed", "came")
        received = next(e for e in came.timeline if e.type.value == "event_received")
        assert received.data == {"event": "rsvp_received", "data": {"seats": 2}}
        engine.clock.advance(timedelta(days=7))
        await engine.settle()
        assert (await engine.get(silent)).end_status == "silent"

    run(engine, go())


def test_until_waits_read_a_placeholder(engine: Engine) -> None:
    body = {
        "id": "until",
        "name": "Until",
        "start_node": "hold",
        "nodes": {
            "hold": {
                "type": "wait",
                "wait_condition": {"type": "until", "until": "{state.polls_open}"},
                "transitions": {"elapsed": "done"},
            },
            "done": {"type": "end"},
        },
    }

    async def go() -> None:
        await engine.template(body)
        opens = (engine.clock.now() + timedelta(hours=5)).isoformat()
        instance = await engine.enrol(await engine.contact(), "until", state={"polls_open": opens})
        assert (await engine.get(instance)).wake_at == engine.clock.now() + timedelta(hours=5)
        engine.clock.advance(timedelta(hours=5))
        await engine.settle()
        assert (await engine.get(instance)).status.value == "completed"
        broken = await engine.enrol(await engine.contact(), "until", state={"polls_open": "soon"})
        assert (await engine.get(broken)).status.value == "failed"

    run(engine, go())


# ---------------------------------------------------------------------------------------------- heuristics, webhooks
HEURISTIC_TEMPLATE = {
    "id": "score",
    "name": "Score",
    "start_node": "route",
    "nodes": {
        "route": {
            "type": "decision",
            "rule": {"type": "heuristic", "expression": "state.score >= 5"},
            "transitions": {"true": "hot", "false": "hook"},
        },
        "hot": {"type": "end", "end_status": "hot"},
        "hook": {
            "type": "webhook",
            "webhook_url": "https://crm.example.org/{contact.id}",
            "webhook_body": {"who": "{contact.name}", "score": "{state.score}"},
            "transitions": {"success": "cold", "failure": "lost", "escalate": "hot"},
        },
        "cold": {"type": "end", "end_status": "cold"},
        "lost": {"type": "end", "end_status": "lost"},
    },
}


def test_heuristic_rules_route_at_once_and_webhooks_run_in_the_worker(engine: Engine) -> None:
    engine.script.webhook = lambda call: done("escalate" if call.body["score"] == "2" else "success")

    async def go() -> None:
        await engine.template(HEURISTIC_TEMPLATE)
        hot = await engine.enrol(await engine.contact(), "score", state={"score": 7})
        assert (await engine.get(hot)).end_status == "hot"  # decided within the step that started it
        cold = await engine.enrol(await engine.contact(name="Bo"), "score", state={"score": 1})
        assert (await engine.get(cold)).waiting_for == "webhook"
        escalated = await engine.enrol(await engine.contact(), "score", state={"score": 2})
        await engine.settle()
        assert (await engine.get(cold)).end_status == "cold"
        assert (await engine.get(escalated)).end_status == "hot"  # the response's own outcome
        calls = [call for kind, call in engine.script.asked if kind == "webhook"]
        mine = next(c for c in calls if c.body["who"] == "Bo")
        assert mine.url.startswith("https://crm.example.org/")
        assert mine.body == {"who": "Bo", "score": "1"}
        assert (mine.method, mine.timeout_s, mine.max_attempts) == ("POST", 10, 5)
        assert mine.outcomes == ["escalate", "failure", "success"]

    run(engine, go())


def test_a_broken_expression_fails_the_instance_with_the_error(engine: Engine) -> None:
    body = {**HEURISTIC_TEMPLATE, "id": "broken"}
    body["nodes"] = {
        **HEURISTIC_TEMPLATE["nodes"],
        "route": {
            **HEURISTIC_TEMPLATE["nodes"]["route"],
            "rule": {"type": "heuristic", "expression": "state.score > 'x'"},
        },
    }

    async def go() -> None:
        await engine.template(body)
        instance = await engine.enrol(await engine.contact(), "broken", state={"score": 3})
        failed = await engine.get(instance)
        assert failed.status.value == "failed"
        error = next(e for e in failed.timeline if e.type.value == "action_failed")
        assert "expression" in error.data["error"]

    run(engine, go())


def test_stale_work_never_moves_an_instance_someone_moved(engine: Engine) -> None:
    """The worker claims the AI decision; a person decides first; the model's late answer is dropped."""
    engine.script.ai = [decided("text")]

    async def go() -> None:
        instance = await engine.enrol(await engine.contact())
        await engine.record(instance, "no_answer")
        await engine.record(instance, "contacted_interested")
        claimed = await engine.services.store.system_write(
            lambda stx: stx.claim_due(engine.clock.now(), "w1", engine.clock.now() + timedelta(minutes=5), 5)
        )
        assert [w.instance_id for w in claimed] == [instance]
        await engine.record(instance, "mail")  # a person decided meanwhile
        await engine.worker.process(claimed[0])
        after = await engine.get(instance)
        assert after.current_node == "send_postcard"
        assert "decision_evaluated" not in [e.type.value for e in after.timeline]

    run(engine, go())


def test_a_loop_of_instant_nodes_fails_after_100(engine: Engine) -> None:
    body = {
        "id": "loop",
        "name": "Loop",
        "start_node": "a",
        "nodes": {
            "a": {
                "type": "decision",
                "rule": {"type": "heuristic", "expression": "'again'"},
                "transitions": {"again": "b"},
            },
            "b": {
                "type": "decision",
                "rule": {"type": "heuristic", "expression": "'again'"},
                "transitions": {"again": "a"},
            },
        },
    }

    async def go() -> None:
        await engine.template(body)
        instance = await engine.enrol(await engine.contact(), "loop")
        failed = await engine.get(instance)
        assert failed.status.value == "failed"
        assert "100 nodes" in next(e for e in failed.timeline if e.type.value == "instance_failed").message

    run(engine, go())


def test_work_a_worker_cannot_do_waits_for_one_that_can(engine: Engine) -> None:
    """A worker without the SMS executor leaves the text to one that has it: after its lease, not in a tight loop."""
    engine.script.actions["sms"] = [done("sent")]
    without_sms = Worker(engine.services.store, engine.clock, engine.script, worker_id="w2")

    async def go() -> None:
        instance = await engine.enrol(await engine.contact())
        await engine.record(instance, "answered_interested")
        at_text = await engine.record(instance, "elapsed")  # a person skips the wait: the text is due now
        assert (at_text.current_node, at_text.wake_at) == ("followup_text", engine.clock.now())
        assert await without_sms.run_once() == 1  # the text: claimed, not done
        await without_sms.drain()
        assert await without_sms.run_once() == 0  # still leased: not claimed again at once
        assert await engine.settle() == 0
        assert (await engine.get(instance)).current_node == "followup_text"
        engine.clock.advance(without_sms.lease + timedelta(seconds=1))
        assert await engine.settle() == 1
        assert (await engine.get(instance)).status.value == "completed"

    run(engine, go())


def test_a_sleeping_worker_is_woken_by_work_made_in_its_process(engine: Engine) -> None:
    """With an hour's poll interval, work made by this process's services still runs at once."""
    engine.script.ai = [decided("mail")]
    sleeper = Worker(engine.services.store, engine.clock, engine.script, poll_interval=3600, worker_id="w3")
    engine.services.instances.notify = sleeper.wake

    async def go() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(sleeper.run(stop))
        try:
            instance = await engine.enrol(await engine.contact())
            await engine.record(instance, "no_answer")
            await asyncio.sleep(0.2)  # the worker found nothing due and naps for an hour
            await engine.record(instance, "contacted_interested")  # an AI decision, due now: wakes it
            for _ in range(100):
                if (await engine.get(instance)).current_node == "send_postcard":
                    break
                await asyncio.sleep(0.05)
            assert (await engine.get(instance)).current_node == "send_postcard"
        finally:
            stop.set()
            await running

    run(engine, go())


def test_an_action_whose_host_comes_from_the_state_is_refused_before_any_call(engine: Engine) -> None:
    """Whoever writes the state (a volunteer recording an outcome) must not choose where a webhook action goes."""
    engine.services.instances.automatic_actions = frozenset({"sms", "notify"})
    worker = Worker(engine.services.store, engine.clock, engine.script, automatic_actions=frozenset({"sms", "notify"}))
    body = {
        "id": "notify",
        "name": "Notify",
        "start_node": "tell",
        "nodes": {
            "tell": {
                "type": "action",
                "action": "notify",
                "action_config": {"url": "https://{state.where}/x"},
                "transitions": {"sent": "end", "failed": "end"},
            },
            "end": {"type": "end"},
        },
    }

    async def go() -> None:
        await engine.template(body)
        instance = await engine.enrol(await engine.contact(), "notify", state={"where": "evil.example"})
        assert await worker.run_once() == 1
        await worker.drain()
        failed = await engine.get(instance)
        assert failed.status.value == "failed"
        assert "placeholder" in next(e for e in failed.timeline if e.type.value == "action_failed").message
        assert [kind for kind, _ in engine.script.asked] == []  # nothing was called

    run(engine, go())


def test_the_idempotency_key_names_the_node_visit_not_the_latest_event(engine: Engine) -> None:
    """A note added while an action is due must not change the key a retried call carries downstream."""
    engine.script.actions["sms"] = [done("sent")]

    async def go() -> None:
        instance = await engine.enrol(await engine.contact())
        await engine.record(instance, "answered_interested")
        await engine.record(instance, "elapsed")  # the text is due now
        at_text = await engine.get(instance)
        entered = [e for e in at_text.timeline if e.type.value == "node_entered" and e.node_id == "followup_text"]
        await engine.services.instances.add_note(SYSTEM, instance, "called back, wants the text")
        await engine.settle()
        [(_, request)] = [asked for asked in engine.script.asked if asked[0] == "sms"]
        assert request.idempotency_key == f"{instance}-followup_text-{entered[-1].id}"

    run(engine, go())
