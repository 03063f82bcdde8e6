"""Contact hours in the voter's local time, on every store, on a fake clock (workflows.md § Consent and contact
rules): a text due before the hours open waits for them, in the contact's own time zone, else their phone's, else
the tenant's, across daylight-saving changes; the worker checks again just before it sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from test_engine_run import Engine, done, engine, run

from cbworkflow.models.contact_rules import TenantSettingsPatch
from cbworkflow.wiring import SYSTEM
from flows import one_text

__all__ = ["engine"]  # the fixture, on each store

TEXT = one_text()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


async def texted_at(engine: Engine, contact: dict[str, Any], due: datetime, opens: datetime) -> None:
    """Enrol at `due`: nothing is sent a second before `opens`, the text goes at `opens`."""
    engine.clock.set(due)
    engine.script.actions["sms"] = [done("sent", provider_id="SM1")]
    contact_id = await engine.contact(**contact)
    instance = await engine.enrol(contact_id, "one-text")
    waiting = await engine.get(instance)
    assert (waiting.status.value, waiting.waiting_for, waiting.wake_at) == ("waiting", "contact_hours", opens)
    assert await engine.settle() == 0
    engine.clock.set(opens - timedelta(seconds=1))
    assert await engine.settle() == 0
    assert [kind for kind, _ in engine.script.asked] == []
    engine.clock.set(opens)
    assert await engine.settle() == 1
    assert [kind for kind, _ in engine.script.asked] == ["sms"]
    found = await engine.get(instance)
    assert (found.status.value, found.end_status) == ("completed", "texted")
    kinds = await engine.events(instance)
    assert kinds.index("wait_started") < kinds.index("action_started")


def test_a_text_due_at_six_in_los_angeles_goes_at_nine_there(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        due = at("2026-06-10T06:00:00-07:00")  # 06:00 PDT, 09:00 in New York: open there, not in LA
        await texted_at(engine, {"name": "Ada", "timezone": "America/Los_Angeles"}, due, at("2026-06-10T09:00-07:00"))

    run(engine, go())


def test_the_phone_number_names_the_zone_when_the_contact_has_none(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        due = at("2026-06-10T06:00:00-07:00")
        await texted_at(engine, {"name": "Ada", "phone": "+1 213 555 0100"}, due, at("2026-06-10T09:00-07:00"))

    run(engine, go())


def test_hours_follow_the_spring_daylight_saving_change(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        due = at("2026-03-08T06:00:00-08:00")  # Sunday 8 March 2026, 06:00 PST; clocks go forward at 02:00
        opens = at("2026-03-08T09:00:00-07:00")  # 09:00 PDT: 16:00 UTC, not 17:00
        assert opens == datetime(2026, 3, 8, 16, 0, tzinfo=UTC)
        await texted_at(engine, {"name": "Ada", "timezone": "America/Los_Angeles"}, due, opens)

    run(engine, go())


def test_hours_follow_the_autumn_daylight_saving_change(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        due = at("2026-11-01T06:00:00-08:00")  # Sunday 1 November 2026, 06:00 PST (clocks went back at 02:00)
        opens = at("2026-11-01T09:00:00-08:00")
        assert opens == datetime(2026, 11, 1, 17, 0, tzinfo=UTC)
        await texted_at(engine, {"name": "Ada", "timezone": "America/Los_Angeles"}, due, opens)

    run(engine, go())


def test_an_ambiguous_phone_and_no_time_zone_use_the_tenants(engine: Engine) -> None:
    async def go() -> None:
        await engine.template(TEXT)
        await engine.services.tenant_settings.patch(SYSTEM, "default", TenantSettingsPatch(timezone="America/Chicago"))
        due = at("2026-06-10T07:30:00-05:00")  # 07:30 in Chicago (08:30 in New York: closed in both)
        toll_free = {"name": "Ada", "phone": "+1 800 555 0100"}  # a number of no single zone
        await texted_at(engine, toll_free, due, at("2026-06-10T09:00:00-05:00"))

    run(engine, go())


def test_a_template_s_own_hours_and_days_come_first(engine: Engine) -> None:
    async def go() -> None:
        await engine.template({**TEXT, "contact_hours": {"days": ["mon"], "start": "10:00", "end": "12:00"}})
        due = at("2026-06-10T11:00:00-04:00")  # a Wednesday, inside the tenant's default hours
        opens = at("2026-06-15T10:00:00-04:00")  # the next Monday at 10:00 in New York
        await texted_at(engine, {"name": "Ada", "timezone": "America/New_York"}, due, opens)

    run(engine, go())


def test_the_worker_checks_the_hours_again_just_before_it_sends(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id="SM1")]

    async def go() -> None:
        await engine.template(TEXT)
        engine.clock.set(at("2026-06-10T19:59:00-04:00"))
        contact = await engine.contact(name="Ada", timezone="America/New_York")
        instance = await engine.enrol(contact, "one-text")
        assert (await engine.get(instance)).waiting_for is None  # due now
        engine.clock.set(at("2026-06-10T20:00:00-04:00"))
        assert await engine.settle() == 1
        assert [kind for kind, _ in engine.script.asked] == []
        found = await engine.get(instance)
        assert (found.waiting_for, found.wake_at) == ("contact_hours", at("2026-06-11T09:00:00-04:00"))

    run(engine, go())


def test_steps_on_channels_without_hours_run_at_any_time(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id="SM1")]

    async def go() -> None:
        await engine.template(TEXT)
        hours = {"start": "09:00", "end": "20:00", "channels": ["phone"]}
        await engine.services.tenant_settings.patch(
            SYSTEM, "default", TenantSettingsPatch.model_validate({"contact_hours": hours})
        )
        engine.clock.set(at("2026-06-10T03:00:00-04:00"))
        contact = await engine.contact(name="Ada")
        instance = await engine.enrol(contact, "one-text")
        assert await engine.settle() == 1
        assert (await engine.get(instance)).end_status == "texted"

    run(engine, go())
