"""Tenant settings and contact hours over HTTP, on every store (workflows.md § Consent and contact rules): the
settings route (who may read and change them, the checks), a template's own hours, and the work queue not handing
out a call whose contact it is night for. The server's clock is the real one, so the test picks time zones where
it is surely day and surely night now."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from conftest import Tenant
from flows import one_call

ZONES = [f"Etc/GMT{offset:+d}" if offset else "Etc/UTC" for offset in range(-12, 13)]


def zone_where(hours: range) -> str:
    """An IANA zone whose local hour is in `hours` now (Etc/GMT+5 is five hours behind UTC)."""
    now = datetime.now(UTC)
    for name in ZONES:
        if now.astimezone(ZoneInfo(name)).hour in hours:
            return name
    raise AssertionError(f"no zone has a local hour in {hours} now")


def ok(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()
    return found


def settings(tenant: Tenant) -> str:
    return f"/api/tenants/{tenant.id}/settings"


def test_an_admin_reads_and_changes_the_tenant_settings(tenant: Tenant) -> None:
    body = {
        "timezone": "America/Chicago",
        "contact_hours": {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:30", "end": "17:00"},
        "frequency_caps": [{"channel": "sms", "max": 2, "per": "P7D"}],
    }
    changed = ok(tenant.admin.patch(settings(tenant), json=body))
    assert changed["timezone"] == "America/Chicago"
    assert changed["contact_hours"]["start"] == "09:30"
    assert changed["contact_hours"]["channels"] == ["sms", "phone"]
    assert changed["frequency_caps"] == [{"channel": "sms", "max": 2, "per": "P7D"}]
    assert ok(tenant.admin.get(settings(tenant))) == changed

    only_zone = ok(tenant.admin.patch(settings(tenant), json={"timezone": "Europe/Paris"}))
    assert only_zone["contact_hours"] == changed["contact_hours"]  # what is left out stays

    back = ok(tenant.admin.patch(settings(tenant), json={"timezone": None, "contact_hours": None}))
    assert (back["timezone"], back["contact_hours"]) == ("America/New_York", None)  # null: the default
    assert back["frequency_caps"] == changed["frequency_caps"]


def test_only_the_tenant_s_admins_and_superadmins_see_its_settings(tenant: Tenant, make_tenant: Any) -> None:
    other = make_tenant()
    assert tenant.admin.get(settings(other)).status_code == 404  # another tenant's: not found, not forbidden
    assert tenant.admin.patch(settings(other), json={"timezone": "Europe/Paris"}).status_code == 404
    assert ok(other.admin.get(settings(other)))["timezone"] == "America/New_York"
    for role in ("staff", "volunteer", "viewer"):
        assert tenant.as_role(role).get(settings(tenant)).status_code == 403
    root = tenant.server.client(tenant.server.admin_token)
    try:
        assert ok(root.patch(settings(other), json={"timezone": "Asia/Tokyo"}))["timezone"] == "Asia/Tokyo"
        assert root.get("/api/tenants/no-such-tenant/settings").status_code == 404
    finally:
        root.close()


def test_bad_settings_get_a_clear_422(tenant: Tenant) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"timezone": "Mars/Olympus"}, "IANA time zone"),
        ({"contact_hours": {"start": "9am"}}, "HH:MM"),
        ({"contact_hours": {"start": "20:00", "end": "09:00"}}, "later than start"),
        ({"contact_hours": {"days": []}}, "days"),
        ({"contact_hours": {"days": ["monday"]}}, "days"),
        ({"contact_hours": {"channels": ["fax"]}}, "channels"),
        ({"frequency_caps": [{"channel": "sms", "max": 0, "per": "P7D"}]}, "max"),
        ({"frequency_caps": [{"channel": "sms", "max": 2, "per": "a week"}]}, "ISO 8601 duration of at most a year"),
        ({"frequency_caps": [{"channel": "sms", "max": 2, "per": "P7D"}] * 2}, "keep one"),
        ({"quiet": True}, "quiet"),
    ]
    for body, says in cases:
        answer = tenant.admin.patch(settings(tenant), json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert says in answer.text, (body, answer.text)
    assert ok(tenant.admin.get(settings(tenant)))["timezone"] == "America/New_York"  # nothing changed


def test_a_template_carries_its_own_contact_hours(tenant: Tenant) -> None:
    weekdays = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "10:00", "end": "18:00"}
    made = tenant.template({**one_call("weekday-calls"), "contact_hours": weekdays})
    assert made["contact_hours"]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    cleared = ok(tenant.admin.patch("/api/workflows/weekday-calls", json={"contact_hours": None}))
    assert cleared["contact_hours"] is None
    bad = tenant.admin.patch("/api/workflows/weekday-calls", json={"contact_hours": {"end": "25:00"}})
    assert bad.status_code == 422


def test_the_queue_hands_out_a_call_only_where_it_is_day_for_the_voter(tenant: Tenant) -> None:
    ok(tenant.admin.patch(settings(tenant), json={"contact_hours": {"start": "09:00", "end": "20:00"}}))
    tenant.template(one_call())
    night = tenant.contact(name="Asleep", timezone=zone_where(range(1, 7)))
    day = tenant.contact(name="Awake", timezone=zone_where(range(11, 18)))
    asleep = ok(
        tenant.admin.post("/api/instances", json={"contact_id": night["id"], "template_id": "calls", "start": True}),
        201,
    )
    awake = ok(
        tenant.admin.post("/api/instances", json={"contact_id": day["id"], "template_id": "calls", "start": True}),
        201,
    )
    volunteer = tenant.as_role("volunteer")
    claimed = ok(volunteer.post("/api/tasks/claim", json={"template_id": "calls"}))
    assert claimed["instance_id"] == awake["id"]
    assert volunteer.post("/api/tasks/claim", json={"template_id": "calls"}).status_code == 204
    opens = datetime.fromisoformat(ok(tenant.admin.get(f"/api/instances/{asleep['id']}"))["task_since"])
    local = opens.astimezone(ZoneInfo(night["timezone"]))
    assert (local.hour, local.minute) == (9, 0)  # it opens to claims at 09:00 where they live
    assert opens > datetime.now(UTC)
