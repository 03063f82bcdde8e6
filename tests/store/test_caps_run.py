"""Frequency caps, on every store, on a fake clock (workflows.md § Consent and contact rules): sends to one person
on a channel are counted across all of the tenant's templates, and a send over the cap waits until the window lets
it go (and, if that falls outside the contact hours, until they open)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from test_engine_run import Engine, done, engine, run

from cbworkflow.models.consent import Channel
from cbworkflow.models.contact_rules import TenantSettingsPatch
from cbworkflow.wiring import SYSTEM
from flows import one_text

__all__ = ["engine"]  # the fixture, on each store


async def rules(engine: Engine, **settings: Any) -> None:
    body = TenantSettingsPatch.model_validate(
        {"frequency_caps": [{"channel": "sms", "max": 2, "per": "P7D"}]} | settings
    )
    await engine.services.tenant_settings.patch(SYSTEM, "default", body)


def set_clock(engine: Engine, when: datetime) -> None:
    engine.clock.set(when)


def sent(engine: Engine) -> list[str]:
    return [request.config["message"].split(":")[0] for kind, request in engine.script.asked if kind == "sms"]


def test_the_third_text_in_a_week_across_three_templates_waits_for_the_window(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id=f"SM{n}") for n in range(5)]
    start = datetime(2026, 6, 8, 14, 0, tzinfo=UTC)  # 10:00 in New York, inside the default hours

    async def go() -> None:
        await rules(engine)
        for template_id in ("first", "second", "third"):
            await engine.template(one_text(template_id, message=f"{template_id}: hi {{contact.name}}"))
        ada = await engine.contact(name="Ada", timezone="America/New_York")
        grace = await engine.contact(name="Grace", timezone="America/New_York")
        set_clock(engine, start)
        await engine.enrol(ada, "first")
        await engine.settle()
        set_clock(engine, start + timedelta(days=1))
        await engine.enrol(ada, "second")
        await engine.settle()
        set_clock(engine, start + timedelta(days=2))
        third = await engine.enrol(ada, "third")
        other = await engine.enrol(grace, "third")  # her first text: not held by Ada's
        await engine.settle()
        assert sent(engine) == ["first", "second", "third"]

        held = await engine.get(third)
        assert (held.status.value, held.waiting_for) == ("waiting", "frequency_cap")
        assert held.wake_at == start + timedelta(days=7)  # when the first text leaves the window
        assert (await engine.get(other)).end_status == "texted"

        set_clock(engine, start + timedelta(days=7) - timedelta(seconds=1))
        assert await engine.settle() == 0
        set_clock(engine, start + timedelta(days=7))
        assert await engine.settle() == 1
        assert sent(engine) == ["first", "second", "third", "third"]
        assert (await engine.get(third)).end_status == "texted"
        kinds = await engine.events(third)
        assert "wait_started" in kinds

    run(engine, go())


def test_a_cap_released_at_night_waits_for_the_morning(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id=f"SM{n}") for n in range(3)]
    evening = datetime(2026, 6, 8, 23, 30, tzinfo=UTC)  # 19:30 in New York

    async def go() -> None:
        await rules(engine, frequency_caps=[{"channel": "sms", "max": 1, "per": "PT2H"}])
        await engine.template(one_text("first", message="first: hi"))
        await engine.template(one_text("second", message="second: hi"))
        ada = await engine.contact(name="Ada", timezone="America/New_York")
        set_clock(engine, evening)
        await engine.enrol(ada, "first")
        await engine.settle()
        second = await engine.enrol(ada, "second")
        await engine.settle()
        held = await engine.get(second)
        # the cap lets it go at 21:30, after the hours close at 20:00: it goes at 09:00 the next morning
        assert (held.waiting_for, held.wake_at) == ("contact_hours", datetime(2026, 6, 9, 13, 0, tzinfo=UTC))
        set_clock(engine, datetime(2026, 6, 9, 13, 0, tzinfo=UTC))
        assert await engine.settle() == 1
        assert sent(engine) == ["first", "second"]

    run(engine, go())


def test_a_text_refused_by_an_opt_out_does_not_count(engine: Engine) -> None:
    engine.script.actions["sms"] = [done("sent", provider_id=f"SM{n}") for n in range(3)]

    async def go() -> None:
        await rules(engine, frequency_caps=[{"channel": "sms", "max": 1, "per": "P1D"}])
        await engine.template(one_text("first", message="first: hi"))
        await engine.template(one_text("second", message="second: hi"))
        set_clock(engine, datetime(2026, 6, 8, 14, 0, tzinfo=UTC))
        ada = await engine.contact(name="Ada", timezone="America/New_York")
        await engine.services.consent.opt_out(SYSTEM, ada, [Channel.SMS], None)
        refused = await engine.enrol(ada, "first")
        await engine.settle()
        assert (await engine.get(refused)).status.value == "cancelled"
        await engine.services.consent.opt_in(SYSTEM, ada, Channel.SMS)
        later = await engine.enrol(ada, "second")
        await engine.settle()
        assert sent(engine) == ["second"]
        assert (await engine.get(later)).end_status == "texted"

    run(engine, go())
