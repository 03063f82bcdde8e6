"""The contact rules on /admin over HTTP on SQLite (ONE_STORE: the page only calls the settings service, tested on
every store): an admin saves the time zone, the hours and a cap; bad values are shown beside the form."""

from __future__ import annotations

from conftest import ONE_STORE, Tenant
from pages import form_fields, signed_in, text_of

pytestmark = ONE_STORE


def test_an_admin_saves_the_contact_rules(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/admin")
    assert 'id="settings"' in page.text
    action, hidden = form_fields(page, "/admin/settings")
    form = {
        **hidden,
        "timezone": "America/Chicago",
        **{f"day_{day}": "on" for day in ("mon", "tue", "wed", "thu", "fri")},
        "start": "10:00",
        "end": "19:30",
        "hours_sms": "on",
        "hours_phone": "on",
        "hours_door": "on",
        "cap_channel_0": "sms",
        "cap_max_0": "2",
        "cap_per_0": "P7D",
    }
    saved = admin.post(action, data=form)
    assert saved.status_code == 303, saved.text
    stored = tenant.admin.get(f"/api/tenants/{tenant.id}/settings").json()
    assert stored["timezone"] == "America/Chicago"
    assert stored["contact_hours"] == {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start": "10:00",
        "end": "19:30",
        "channels": ["sms", "phone", "door"],
    }
    assert stored["frequency_caps"] == [{"channel": "sms", "max": 2, "per": "P7D"}]
    shown = admin.get("/admin?said=settings")
    assert "The contact rules are saved" in text_of(shown)
    assert 'value="America/Chicago"' in shown.text


def test_bad_contact_rules_are_shown_beside_the_form_and_nothing_changes(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    action, hidden = form_fields(admin.get("/admin"), "/admin/settings")
    before = tenant.admin.get(f"/api/tenants/{tenant.id}/settings").json()
    for fields, says in (
        ({"timezone": "Mars/Base", "day_mon": "on", "start": "09:00", "end": "20:00", "hours_sms": "on"}, "Time zone:"),
        ({"day_mon": "on", "start": "20:00", "end": "09:00", "hours_sms": "on"}, "must be later than start"),
        ({"start": "09:00", "end": "20:00", "hours_sms": "on"}, "Days:"),
        (
            {
                "day_mon": "on",
                "start": "09:00",
                "end": "20:00",
                "hours_sms": "on",
                "cap_channel_0": "sms",
                "cap_max_0": "x",
            },
            "Frequency cap:",
        ),
    ):
        answer = admin.post(action, data={**hidden, **fields})
        assert answer.status_code == 422, answer.text
        assert says in text_of(answer), text_of(answer)[:500]
    assert tenant.admin.get(f"/api/tenants/{tenant.id}/settings").json() == before
    staff, _ = signed_in(tenant, "staff")
    assert staff.get("/admin").status_code == 403
