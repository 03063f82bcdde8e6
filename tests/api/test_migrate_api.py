"""`POST /api/workflows/{id}/migrate` over HTTP, on every store: admins only, a dry run by default, the moves
and what stays, and clear errors."""

from __future__ import annotations

from typing import Any

from conftest import Tenant


def calls(version_nodes: dict[str, Any]) -> dict[str, Any]:
    return {"id": "calls", "name": "Calls", "start_node": next(iter(version_nodes)), "nodes": version_nodes}


V1 = {
    "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end", "later": "wait"}},
    "wait": {
        "type": "wait",
        "wait_condition": {"type": "duration", "duration": "P3D"},
        "transitions": {"elapsed": "end"},
    },
    "end": {"type": "end"},
}
V2 = {
    "ring": {"type": "action", "action": "phone_call", "transitions": {"done": "end"}},
    "end": {"type": "end"},
}


def test_an_admin_migrates_running_instances_and_what_is_gone_stays(tenant: Tenant) -> None:
    tenant.template(calls(V1))
    made = [
        tenant.admin.post(
            "/api/instances", json={"contact_id": tenant.contact()["id"], "template_id": "calls", "start": True}
        ).json()
        for _ in range(3)
    ]
    moved = tenant.admin.post(f"/api/instances/{made[0]['id']}/transition", json={"outcome": "later"})
    assert moved.status_code == 200, moved.text
    patched = tenant.admin.patch("/api/workflows/calls", json={"nodes": V2, "start_node": "ring"})
    assert patched.status_code == 200, patched.text
    version = patched.json()["version"]
    body = {"from_version": "1.0.0", "node_map": {"call": "ring"}}

    assert tenant.as_role("staff").post("/api/workflows/calls/migrate", json=body).status_code == 403
    dry = tenant.admin.post("/api/workflows/calls/migrate", json=body)
    assert dry.status_code == 200, dry.text
    assert dry.json() == {
        "moved": {"call": {"ring": 2}},
        "unmapped": {"wait": 1},
        "dry_run": True,
        "to_version": version,
    }
    assert tenant.admin.get(f"/api/instances/{made[1]['id']}").json()["template_version"] == "1.0.0"

    done = tenant.admin.post("/api/workflows/calls/migrate", json={**body, "dry_run": False})
    assert done.status_code == 200, done.text
    assert (done.json()["moved"], done.json()["unmapped"]) == ({"call": {"ring": 2}}, {"wait": 1})
    instance = tenant.admin.get(f"/api/instances/{made[1]['id']}").json()
    assert (instance["template_version"], instance["current_node"]) == (version, "ring")
    assert "instance_migrated" in [e["type"] for e in instance["timeline"]]
    left = tenant.admin.get(f"/api/instances/{made[0]['id']}").json()
    assert (left["template_version"], left["current_node"], left["status"]) == ("1.0.0", "wait", "waiting")
    recorded = tenant.admin.post(f"/api/instances/{made[1]['id']}/transition", json={"outcome": "done"})
    assert recorded.json()["status"] == "completed"  # it runs on the new graph


def test_bad_migrations_get_a_clear_4xx(tenant: Tenant) -> None:
    tenant.template(calls(V1))
    assert tenant.admin.post("/api/workflows/nope/migrate", json={"from_version": "1.0.0"}).status_code == 404
    current = tenant.admin.post("/api/workflows/calls/migrate", json={"from_version": "1.0.0"})
    assert current.status_code == 422
    assert "current version" in current.json()["detail"]
    for bad in (
        {},
        {"from_version": "one"},
        {"from_version": "1.0.0", "node_map": {"a": ""}},
        {"from_version": "1.0.0", "x": 1},
    ):
        answer = tenant.admin.post("/api/workflows/calls/migrate", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
