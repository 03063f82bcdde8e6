"""The Simulate section of /workflows/{id} over HTTP on SQLite (ONE_STORE: it only calls the simulation service,
tested on every store): the reference template's paths, the contact hours of the voter's time zone, bad input
shown beside the form, and nothing written."""

from __future__ import annotations

import re

from conftest import ONE_STORE, Tenant
from pages import signed_in, text_of

pytestmark = ONE_STORE


def test_a_viewer_simulates_the_reference_template(tenant: Tenant) -> None:
    template = tenant.template()
    tenant.admin.patch(f"/api/tenants/{tenant.id}/settings", json={"contact_hours": None}).raise_for_status()
    viewer, _ = signed_in(tenant, "viewer")
    page = viewer.get(f"/workflows/{template['id']}")
    assert 'id="simulate"' in page.text
    ran = viewer.get(
        f"/workflows/{template['id']}",
        params={"simulate": "1", "start_at": "2026-10-05T13:00", "timezone": "America/Los_Angeles"},
    )
    assert ran.status_code == 200, ran.text
    text = text_of(ran)
    assert "20 paths." in text
    rows = re.findall(r"Ends <strong>([^<]+)</strong> after <strong>([^<]+)</strong>", ran.text)
    assert len(rows) == 20
    assert rows[0] == ("success", "P3DT3H")  # called at 09:00 in Los Angeles, then the three-day wait
    assert tenant.admin.get("/api/instances", params={"template_id": template["id"]}).json()["items"] == []


def test_bad_simulation_input_is_shown_beside_the_form(tenant: Tenant) -> None:
    template = tenant.template()
    viewer, _ = signed_in(tenant, "viewer")
    bad_time = viewer.get(f"/workflows/{template['id']}", params={"simulate": "1", "start_at": "soon"})
    assert bad_time.status_code == 200
    assert "The start is not a date and time" in text_of(bad_time)
    bad_zone = viewer.get(f"/workflows/{template['id']}", params={"simulate": "1", "timezone": "Mars/Base"})
    assert bad_zone.status_code == 200
    assert "That time zone is not one we know" in text_of(bad_zone)
