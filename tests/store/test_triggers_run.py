"""Triggers, goals and emit_event on each store, through the services and the worker on a fake clock.

A trigger enrols a contact when it is created, tagged or sent a custom event (its `where` true), never twice while
an instance of the template is unfinished (unless `reenter`); a goal completes the contact's unfinished instances;
`emit_event` lets one workflow resume, start and finish others. A `where` that fails is kept on the template.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from test_engine_run import Engine, engine, run

from cbworkflow.models.contacts import ContactCreate, ContactPatch
from cbworkflow.models.events import EventPost
from cbworkflow.models.imports import FileFormat
from cbworkflow.models.instances import InstanceCreate
from cbworkflow.services.instances import pending_instance, template_snapshot
from cbworkflow.store.base import InstanceFilter, PageRequest
from cbworkflow.wiring import SYSTEM

__all__ = ["engine"]  # the fixture, shared with the engine's other tests


def flow(template_id: str, **extra: Any) -> dict[str, Any]:
    """A template that waits a day, then ends `success`: a timer for the worker and an unfinished instance."""
    return {
        "id": template_id,
        "name": template_id,
        "start_node": "wait",
        "nodes": {
            "wait": {
                "type": "wait",
                "wait_condition": {"type": "duration", "duration": "P1D"},
                "transitions": {"elapsed": "done"},
            },
            "done": {"type": "end", "end_status": "success"},
        },
        **extra,
    }


async def instances_of(engine: Engine, template_id: str, contact_id: str | None = None) -> list[Any]:
    where = InstanceFilter(template_id=template_id, contact_id=contact_id)
    return (await engine.services.instances.list(SYSTEM.tenant, where, PageRequest(limit=500))).items


async def post_event(engine: Engine, name: str, contact_id: str | None = None, **data: Any) -> Any:
    return await engine.services.events.post(SYSTEM, EventPost(name=name, contact_id=contact_id, data=data))


# ---------------------------------------------------------------------------------------------- triggers
def test_contact_created_trigger_enrols_when_its_where_holds(engine: Engine) -> None:
    async def go() -> None:
        where = 'contact.county == "Kent"'
        await engine.template(flow("welcome", triggers=[{"on": "contact_created", "where": where}]))
        kent = await engine.contact(county="Kent")
        other = await engine.contact(county="Essex")
        [made] = await instances_of(engine, "welcome")
        assert (made.contact_id, made.status.value, made.current_node) == (kent, "waiting", "wait")
        assert await instances_of(engine, "welcome", other) == []
        created = next(e for e in (await engine.get(made.id)).timeline if e.type.value == "instance_created")
        assert created.data["trigger"] == {"number": 1, "on": "contact_created"}

    run(engine, go())


def test_tag_added_trigger_fires_once_per_unfinished_instance_and_again_after_it_ends(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(flow("leads", triggers=[{"on": "tag_added", "tag": "lead"}]))
        contact = await engine.contact(tags=["lead"])  # a tag given at creation fires too
        contacts = engine.services.contacts
        await contacts.change_tag(SYSTEM, contact, "lead", add=False)
        await contacts.change_tag(SYSTEM, contact, "lead", add=True)  # unfinished instance: no second
        await contacts.patch(SYSTEM, contact, ContactPatch(tags=["other"]))
        await contacts.patch(SYSTEM, contact, ContactPatch(tags=["other", "lead"]))
        [first] = await instances_of(engine, "leads")
        await engine.services.instances.cancel(SYSTEM, first.id)
        await contacts.change_tag(SYSTEM, contact, "lead", add=False)
        await contacts.change_tag(SYSTEM, contact, "lead", add=True)  # it ended: the contact may enter again
        found = await instances_of(engine, "leads")
        assert sorted(i.status.value for i in found) == ["cancelled", "waiting"]

    run(engine, go())


def test_reenter_enrols_beside_an_unfinished_instance(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(flow("again", triggers=[{"on": "event", "event": "visit", "reenter": True}]))
        contact = await engine.contact()
        for _ in range(3):
            answer = await post_event(engine, "visit", contact)
            assert len(answer.started) == 1
        assert len(await instances_of(engine, "again")) == 3

    run(engine, go())


def test_event_trigger_reads_the_event_and_skips_contacts_already_in(engine: Engine) -> None:
    async def go() -> None:
        where = "event.data.amount >= 10 and event.name == 'donation'"
        await engine.template(flow("thanks", triggers=[{"on": "event", "event": "donation", "where": where}]))
        contact = await engine.contact()
        assert (await post_event(engine, "donation", contact, amount=5)).started == []
        first = await post_event(engine, "donation", contact, amount=50)
        assert len(first.started) == 1
        assert first.trigger_errors == []
        assert (await post_event(engine, "donation", contact, amount=50)).started == []
        manual = await engine.contact()
        body = InstanceCreate(contact_id=manual, template_id="thanks", start=True)
        await engine.services.instances.create(SYSTEM, body)
        assert (await post_event(engine, "donation", manual, amount=50)).started == []  # enrolled by hand already
        assert (await post_event(engine, "donation", None, amount=50)).started == []  # no contact: no trigger
        timeline = await engine.services.contacts.timeline(SYSTEM.tenant, contact, PageRequest(limit=50))
        assert [e.type.value for e in timeline.items].count("event_received") == 3

    run(engine, go())


def test_a_failing_where_is_reported_and_kept_on_the_template(engine: Engine) -> None:
    async def go() -> None:
        triggers = [{"on": "event", "event": "ping", "where": "1 / contact.metadata.zero > 0"}]
        await engine.template(flow("broken", triggers=triggers))
        before = await engine.services.templates.get(SYSTEM.tenant, "broken")
        contact = await engine.contact(metadata={"zero": 0})
        answer = await post_event(engine, "ping", contact)
        assert answer.started == []
        [error] = answer.trigger_errors
        assert (error.kind, error.which, error.on, error.contact_id) == ("trigger", "1", "event", contact)
        assert "divides by zero" in error.message
        after = await engine.services.templates.get(SYSTEM.tenant, "broken")
        assert [e.message for e in after.trigger_errors] == [error.message]
        assert (after.version, after.updated_at) == (before.version, before.updated_at)
        await post_event(engine, "ping", contact)  # the same error again at once: kept once
        assert len((await engine.services.templates.get(SYSTEM.tenant, "broken")).trigger_errors) == 1
        assert await instances_of(engine, "broken") == []

    run(engine, go())


def test_a_template_with_errors_enrols_no_one_and_says_so(engine: Engine) -> None:
    async def go() -> None:
        body = flow("draft", triggers=[{"on": "contact_created"}])
        body["nodes"]["wait"]["transitions"] = {"elapsed": "nowhere"}
        await engine.template(body)
        await engine.contact()
        assert await instances_of(engine, "draft") == []
        [error] = (await engine.services.templates.get(SYSTEM.tenant, "draft")).trigger_errors
        assert "validation errors" in error.message

    run(engine, go())


def test_an_import_fires_contact_created_triggers_in_batches(engine: Engine, tmp_path: Path) -> None:
    async def go() -> None:
        await engine.template(flow("imported", triggers=[{"on": "contact_created", "where": "contact.county == 'A'"}]))
        await engine.template(flow("tagged", triggers=[{"on": "tag_added", "tag": "vip"}]))
        rows = ["name,county,tags", *(f"P{i},{'A' if i % 2 else 'B'},{'vip' if i % 5 == 0 else ''}" for i in range(25))]
        path = tmp_path / "people.csv"
        path.write_text("\n".join(rows) + "\n")
        imports = engine.services.imports
        imports.batch_size = 7
        result = await imports.import_file(SYSTEM, path, FileFormat.CSV, dry_run=False)
        assert result.created == 25  # type: ignore[union-attr]
        assert len(await instances_of(engine, "imported")) == 12
        assert len(await instances_of(engine, "tagged")) == 5
        path.write_text("name,county,tags\n" + "\n".join(f"P{i},A,vip" for i in range(1, 3)) + "\n")
        await imports.import_file(SYSTEM, path, FileFormat.CSV, dry_run=False)  # new contacts (no id to match)
        assert len(await instances_of(engine, "tagged")) == 7

    run(engine, go())


def test_contact_changes_are_on_the_contact_timeline(engine: Engine) -> None:
    async def go() -> None:
        contacts = engine.services.contacts
        made = await contacts.create(SYSTEM, ContactCreate(name="Ada", tags=["a"]))
        await contacts.patch(SYSTEM, made.id, ContactPatch(county="Kent", tags=["a", "b"]))
        await contacts.patch(SYSTEM, made.id, ContactPatch(county="Kent"))  # nothing changes: no event
        await contacts.change_tag(SYSTEM, made.id, "a", add=False)
        page = await contacts.timeline(SYSTEM.tenant, made.id, PageRequest(limit=50))
        kinds = [(e.type.value, e.data.get("fields") or e.data.get("tag")) for e in page.items]
        assert kinds == [
            ("tag_removed", "a"),
            ("contact_tag_added", "b"),
            ("contact_updated", ["county", "tags"]),
            ("contact_created", None),
        ]
        assert all(e.instance_id is None and e.contact_id == made.id for e in page.items)

    run(engine, go())


# ---------------------------------------------------------------------------------------------- goals
def test_goals_complete_every_unfinished_instance_and_drop_their_timers(engine: Engine) -> None:
    async def go() -> None:
        goals = [{"id": "donated", "on": "event", "event": "donation", "where": "event.data.amount > 0"},
                 {"id": "voted", "on": "tag_added", "tag": "voted"}]  # fmt: skip
        await engine.template(flow("drive", goals=goals))
        ada, bob = await engine.contact(), await engine.contact()
        first, second = await engine.enrol(ada, "drive"), await engine.enrol(ada, "drive")
        bobs = await engine.enrol(bob, "drive")
        await engine.services.instances.pause(SYSTEM, second)  # paused is unfinished too
        assert (await post_event(engine, "donation", ada, amount=0)).goals_reached == []
        answer = await post_event(engine, "donation", ada, amount=20)
        assert sorted(g.instance_id for g in answer.goals_reached) == sorted([first, second])
        for instance_id in (first, second):
            ended = await engine.get(instance_id)
            assert (ended.status.value, ended.end_status, ended.wake_at, ended.paused_status) == (
                "completed", "goal:donated", None, None)  # fmt: skip
            assert [e.type.value for e in ended.timeline][-2:] == ["goal_reached", "instance_completed"]
        await engine.services.contacts.change_tag(SYSTEM, bob, "voted", add=True)
        assert (await engine.get(bobs)).end_status == "goal:voted"
        engine.clock.advance(timedelta(days=2))
        assert await engine.settle() == 0  # their timers went with them
        stats = await engine.services.stats.of_template(SYSTEM.tenant, "drive")
        assert {k: n for k, n in stats.end_statuses.items() if n} == {"goal:donated": 2, "goal:voted": 1}
        assert stats.statuses.get("completed") == 3

    run(engine, go())


def test_a_goal_and_a_timer_at_once_have_one_winner(engine: Engine) -> None:
    """The worker claimed the due timer; the goal commits before the worker applies it: the worker's result is
    stale and dropped. The other way round, the timer ends the instance first and the goal finds nothing to do."""

    async def go() -> None:
        await engine.template(flow("race", goals=[{"id": "won", "on": "event", "event": "win"}]))
        goal_first, timer_first = await engine.contact(), await engine.contact()
        raced = {await engine.enrol(goal_first, "race"): "goal:won", await engine.enrol(timer_first, "race"): "success"}
        engine.clock.advance(timedelta(days=1))
        store, now = engine.services.store, engine.clock.now()
        claimed = await store.system_write(lambda stx: stx.claim_due(now, "w1", now + timedelta(minutes=5), 10))
        assert {work.instance_id for work in claimed} == set(raced)
        by_instance = {work.instance_id: work for work in claimed}
        [goal_side] = [i for i, end in raced.items() if end == "goal:won"]
        [timer_side] = [i for i, end in raced.items() if end == "success"]
        assert len((await post_event(engine, "win", goal_first)).goals_reached) == 1  # before the worker applies
        await engine.worker.process(by_instance[goal_side])  # stale: dropped
        await engine.worker.process(by_instance[timer_side])
        assert (await post_event(engine, "win", timer_first)).goals_reached == []  # already ended
        for instance_id, end in raced.items():
            ended = await engine.get(instance_id)
            kinds = [e.type.value for e in ended.timeline]
            assert (ended.status.value, ended.end_status) == ("completed", end)
            assert kinds.count("instance_completed") == 1
            assert ("goal_reached" in kinds) != ("wait_completed" in kinds)

    run(engine, go())


def test_goals_and_timers_racing_for_many_instances_never_both_win(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(flow("many", goals=[{"id": "stop", "on": "event", "event": "stop"}]))
        contacts = [await engine.contact() for _ in range(8)]
        made = [await engine.enrol(contact, "many") for contact in contacts]
        engine.clock.advance(timedelta(days=1))
        await asyncio.gather(engine.settle(), *(post_event(engine, "stop", contact) for contact in contacts))
        await engine.settle()
        for instance_id in made:
            ended = await engine.get(instance_id)
            kinds = [e.type.value for e in ended.timeline]
            assert ended.status.value == "completed"
            assert ended.end_status in ("success", "goal:stop")
            assert kinds.count("instance_completed") == 1
            assert ("goal_reached" in kinds) == (ended.end_status == "goal:stop") != ("wait_completed" in kinds)

    run(engine, go())


# ---------------------------------------------------------------------------------------------- emit_event
def test_emit_event_resumes_a_wait_starts_by_trigger_and_reaches_a_goal(engine: Engine) -> None:
    async def go() -> None:
        emitter = {
            "id": "donate",
            "name": "Donate",
            "start_node": "tell",
            "nodes": {
                "tell": {
                    "type": "action",
                    "action": "emit_event",
                    "action_config": {"event": "donation", "data": {"by": "{contact.name}"}},
                    "transitions": {"sent": "done"},
                },
                "done": {"type": "end"},
            },
        }
        waiter = {
            "id": "waiter",
            "name": "Waiter",
            "start_node": "wait",
            "nodes": {
                "wait": {"type": "wait", "wait_condition": {"type": "event", "event": "donation"},
                         "transitions": {"received": "thanked"}},
                "thanked": {"type": "end", "end_status": "thanked"},
            },
        }  # fmt: skip
        await engine.template(emitter)
        await engine.template(waiter)
        await engine.template(
            flow("started", triggers=[{"on": "event", "event": "donation", "where": "event.data.by == 'Ada'"}])
        )
        await engine.template(flow("asking", goals=[{"id": "gave", "on": "event", "event": "donation"}]))
        ada = await engine.contact(name="Ada")
        waiting, asking = await engine.enrol(ada, "waiter"), await engine.enrol(ada, "asking")
        sender = await engine.enrol(ada, "donate")
        assert (await engine.get(sender)).status.value == "active"  # due for the worker, whatever CBW_EXECUTORS says
        assert await engine.settle() >= 1
        sent = await engine.get(sender)
        assert (sent.status.value, sent.end_status) == ("completed", "success")
        completed = next(e for e in sent.timeline if e.type.value == "action_completed")
        assert (completed.data["outcome"], completed.data["event"]) == ("sent", "donation")
        assert (await engine.get(waiting)).end_status == "thanked"
        received = next(e for e in (await engine.get(waiting)).timeline if e.type.value == "event_received")
        assert received.data == {"event": "donation", "data": {"by": "Ada"}}
        assert (await engine.get(asking)).end_status == "goal:gave"
        [started] = await instances_of(engine, "started", ada)
        assert started.status.value == "waiting"

    run(engine, go())


def test_emit_event_to_the_tenant_resumes_every_waiting_instance(engine: Engine) -> None:
    async def go() -> None:
        await engine.template({
            "id": "wait-all", "name": "Wait", "start_node": "wait",
            "nodes": {"wait": {"type": "wait", "wait_condition": {"type": "event", "event": "go"},
                               "transitions": {"received": "end"}}, "end": {"type": "end"}},
        })  # fmt: skip
        await engine.template({
            "id": "shout", "name": "Shout", "start_node": "tell",
            "nodes": {"tell": {"type": "action", "action": "emit_event",
                               "action_config": {"event": "go", "to": "tenant"},
                               "transitions": {"sent": "end"}}, "end": {"type": "end"}},
        })  # fmt: skip
        waiting = [await engine.enrol(await engine.contact(), "wait-all") for _ in range(3)]
        await engine.enrol(await engine.contact(), "shout")
        await engine.settle()
        assert [(await engine.get(i)).status.value for i in waiting] == ["completed"] * 3

    run(engine, go())


# ---------------------------------------------------------------------------------------------- the store's rule
def test_an_enrolment_key_holds_one_unfinished_instance(engine: Engine) -> None:
    """Two transactions inserting the same key at once (threads, each its own transaction; on PostgreSQL the second
    waits for the first) make one instance; once it ends, the key is free again."""

    async def go() -> None:
        await engine.template(flow("keyed"))
        contact = await engine.contact()
        store = engine.services.store
        template = await engine.services.templates.get(SYSTEM.tenant, "keyed")
        now = engine.clock.now()

        def insert(tx: Any) -> set[str]:
            made = pending_instance(tx.tenant, contact, template, now)
            made.enrol_key = f"keyed:{contact}"
            snapshot = template_snapshot(tx.tenant, template)
            tx.put_snapshot(snapshot)
            return set(tx.insert_enrolments([made], snapshot.id))

        results: list[set[str]] = []
        threads = [threading.Thread(target=lambda: results.append(store.run_tenant(SYSTEM.tenant, insert, True)))
                   for _ in range(4)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(len(r) for r in results) == [0, 0, 0, 1]
        [kept] = await instances_of(engine, "keyed")
        await engine.services.instances.cancel(SYSTEM, kept.id)
        assert len(await asyncio.to_thread(store.run_tenant, SYSTEM.tenant, insert, True)) == 1
        assert len(await asyncio.to_thread(store.run_tenant, SYSTEM.tenant, insert, True)) == 0

    run(engine, go())
