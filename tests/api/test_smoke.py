"""The reference template runs a human path end to end over HTTP."""

from __future__ import annotations

from conftest import Tenant


def test_reference_template_human_path(tenant: Tenant) -> None:
    tenant.template()
    instance = tenant.instance(start=True)
    assert instance["status"] == "active"
    assert instance["current_node"] == "initial_call"
    moved = tenant.admin.post(
        f"/api/instances/{instance['id']}/transition", json={"outcome": "answered_not_interested"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "completed"
    assert moved.json()["end_status"] == "declined"
