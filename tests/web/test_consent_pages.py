"""Opt-outs on /contacts/{id} over HTTP on SQLite (ONE_STORE: the page only calls the consent service, tested on
every store): staff record one by ticking channels (or every channel), an admin undoes one, a volunteer or viewer
cannot, and a form with nothing ticked says so."""

from __future__ import annotations

from conftest import ONE_STORE, Tenant
from pages import form_fields, signed_in, text_of

pytestmark = ONE_STORE


def test_staff_record_an_opt_out_and_an_admin_undoes_it(tenant: Tenant) -> None:
    contact = tenant.contact(name="Pat Doe")
    staff, _ = signed_in(tenant, "staff")
    page = staff.get(f"/contacts/{contact['id']}")
    assert page.status_code == 200, page.text
    assert "This person has not opted out of anything." in text_of(page)
    action, hidden = form_fields(page, f"/contacts/{contact['id']}/opt-out")
    done = staff.post(
        action, data={**hidden, "channel_sms": "on", "channel_phone": "on", "reason": "asked at the door"}
    )
    assert done.status_code == 303, done.text
    shown = staff.get(f"/contacts/{contact['id']}")
    text = text_of(shown)
    assert "This person asked not to be contacted by:" in text
    assert "Texts (SMS) since" in text
    assert "Phone calls since" in text
    assert f'action="/contacts/{contact["id"]}/opt-in"' not in shown.text  # undoing is for admins
    stored = tenant.admin.get(f"/api/contacts/{contact['id']}").json()
    assert sorted(stored["opted_out"]) == ["phone", "sms"]

    admin, _ = signed_in(tenant, "admin")
    page = admin.get(f"/contacts/{contact['id']}")
    action, hidden = form_fields(page, f"/contacts/{contact['id']}/opt-in")
    assert admin.post(action, data=hidden).status_code == 303
    assert len(tenant.admin.get(f"/api/contacts/{contact['id']}").json()["opted_out"]) == 1


def test_every_channel_and_a_form_with_nothing_ticked(tenant: Tenant) -> None:
    contact = tenant.contact(name="Sam Roe")
    staff, _ = signed_in(tenant, "staff")
    page = staff.get(f"/contacts/{contact['id']}")
    action, hidden = form_fields(page, f"/contacts/{contact['id']}/opt-out")
    nothing = staff.post(action, data=hidden, follow_redirects=True)
    assert "Tick at least one channel, or Every channel." in text_of(nothing)
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json()["opted_out"] == {}
    assert staff.post(action, data={**hidden, "every_channel": "on"}).status_code == 303
    assert len(tenant.admin.get(f"/api/contacts/{contact['id']}").json()["opted_out"]) == 5
    after = staff.get(f"/contacts/{contact['id']}")
    assert f'action="/contacts/{contact["id"]}/opt-out"' not in after.text  # nothing left to refuse


def test_viewers_see_opt_outs_but_cannot_record_them(tenant: Tenant) -> None:
    contact = tenant.contact(name="Lee Poe")
    tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["mail"]}).raise_for_status()
    viewer, _ = signed_in(tenant, "viewer")
    page = viewer.get(f"/contacts/{contact['id']}")
    assert "Mail since" in text_of(page)
    assert f'action="/contacts/{contact["id"]}/opt-out"' not in page.text
    staff, _ = signed_in(tenant, "staff")
    _, hidden = form_fields(staff.get(f"/contacts/{contact['id']}"), f"/contacts/{contact['id']}/opt-out")
    refused = viewer.post(f"/contacts/{contact['id']}/opt-out", data={**hidden, "channel_sms": "on"})
    assert refused.status_code in (403, 400), refused.text
    assert list(tenant.admin.get(f"/api/contacts/{contact['id']}").json()["opted_out"]) == ["mail"]
