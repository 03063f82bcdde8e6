"""The work queue over HTTP (api.md § Work queue) and custom events (§ Events), on every store."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conftest import Tenant

EVENT_TEMPLATE = {
    "id": "rsvp",
    "name": "RSVP",
    "start_node": "invite",
    "nodes": {
        "invite": {
            "type": "wait",
            "wait_condition": {"type": "event", "event": "rsvp_received"},
            "transitions": {"received": "came"},
        },
        "came": {"type": "end", "end_status": "came"},
    },
}


def started(tenant: Tenant, **contact: Any) -> dict[str, Any]:
    return tenant.instance(tenant.contact(**contact)["id"], start=True)


def test_a_human_step_is_a_task_with_its_contact_and_outcomes(tenant: Tenant) -> None:
    instance = started(tenant, name="Ada", county="Kent")
    listed = tenant.admin.get("/api/tasks")
    assert listed.status_code == 200, listed.text
    [task] = listed.json()["items"]
    assert task["instance_id"] == instance["id"]
    assert task["node_id"] == "initial_call"
    assert task["node"]["action"] == "phone_call"
    assert task["outcomes"] == sorted(["answered_interested", "answered_not_interested", "no_answer", "voicemail"])
    assert task["contact"]["name"] == "Ada"
    assert (task["held_by"], task["suggestion"]) == (None, None)
    assert task["since"]
    assert tenant.admin.get("/api/tasks", params={"action": "door_canvass"}).json()["items"] == []
    assert len(tenant.admin.get("/api/tasks", params={"county": "Kent"}).json()["items"]) == 1


def test_a_volunteer_claims_works_and_finishes_a_task(tenant: Tenant) -> None:
    instance = started(tenant, name="Grace")
    volunteer = tenant.as_role("volunteer")
    assert volunteer.get("/api/tasks").json()["items"] == []  # a volunteer sees only what it holds
    claimed = volunteer.post("/api/tasks/claim", json={"action": "phone_call"})
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["instance_id"] == instance["id"]
    assert claimed.json()["held_by"] is not None
    assert claimed.json()["lease_expires_at"] is not None
    assert [t["instance_id"] for t in volunteer.get("/api/tasks").json()["items"]] == [instance["id"]]
    assert volunteer.get(f"/api/contacts/{instance['contact_id']}").status_code == 200
    assert volunteer.post("/api/tasks/claim").status_code == 204  # nothing else open
    moved = volunteer.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"})
    assert moved.status_code == 200, moved.text
    # The next step is a new task (the door knock), held by nobody.
    [door] = tenant.admin.get("/api/tasks").json()["items"]
    assert (door["node_id"], door["held_by"]) == ("schedule_door", None)
    assert (
        volunteer.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "not_home"}).status_code == 403
    )


def test_release_gives_the_task_back(tenant: Tenant) -> None:
    instance = started(tenant)
    volunteer, other = tenant.as_role("volunteer"), tenant.as_role("volunteer")
    assert volunteer.post("/api/tasks/claim").status_code == 200
    assert other.post(f"/api/tasks/{instance['id']}/release").status_code == 403
    released = volunteer.post(f"/api/tasks/{instance['id']}/release")
    assert released.status_code == 200, released.text
    assert released.json()["held_by"] is None
    assert volunteer.post(f"/api/tasks/{instance['id']}/release").status_code == 409
    assert other.post("/api/tasks/claim").json()["instance_id"] == instance["id"]
    assert tenant.admin.post("/api/tasks/nope/release").status_code == 404


def test_12_volunteers_claiming_6_tasks_at_once_get_6_distinct_tasks(tenant: Tenant) -> None:
    made = {started(tenant)["id"] for _ in range(6)}
    tokens = [tenant.token("volunteer")["token"] for _ in range(12)]
    barrier = threading.Barrier(12)

    def claim(token: str) -> tuple[int, str | None]:
        with httpx.Client(base_url=tenant.server.base_url, headers={"Authorization": f"Bearer {token}"}) as http:
            barrier.wait()
            answer = http.post("/api/tasks/claim")
            return answer.status_code, answer.json()["instance_id"] if answer.status_code == 200 else None

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(claim, tokens))
    won = [instance for status, instance in results if status == 200]
    assert sorted(won) == sorted(made)
    assert [status for status, _ in results].count(204) == 6


def test_tasks_are_scoped_to_the_tenant_and_roles(tenant: Tenant, make_tenant: Any) -> None:
    started(tenant)
    other = make_tenant()
    assert other.admin.get("/api/tasks").json()["items"] == []
    assert other.admin.post("/api/tasks/claim").status_code == 204
    assert tenant.as_role("viewer").post("/api/tasks/claim").status_code == 403
    assert tenant.as_role("viewer").get("/api/tasks").status_code == 200


def test_claim_refuses_a_bad_body(tenant: Tenant) -> None:
    for body in ({"nope": 1}, {"tag": "Not A Slug"}, {"action": ""}, []):
        answer = tenant.admin.post("/api/tasks/claim", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"]


# ---------------------------------------------------------------------------------------------- events
def test_an_event_resumes_the_instances_waiting_for_it(tenant: Tenant) -> None:
    tenant.template(EVENT_TEMPLATE)
    first = tenant.instance(tenant.contact()["id"], "rsvp", start=True)
    second = tenant.instance(tenant.contact()["id"], "rsvp", start=True)
    assert first["waiting_for"] == "event:rsvp_received"
    one = tenant.admin.post("/api/events", json={"name": "rsvp_received", "contact_id": first["contact_id"]})
    assert one.status_code == 200, one.text
    assert one.json() == {
        "name": "rsvp_received",
        "resumed": [first["id"]],
        "started": [],
        "goals_reached": [],
        "trigger_errors": [],
    }
    done = tenant.admin.get(f"/api/instances/{first['id']}").json()
    assert (done["status"], done["end_status"]) == ("completed", "came")
    assert tenant.admin.get(f"/api/instances/{second['id']}").json()["status"] == "waiting"
    everyone = tenant.admin.post("/api/events", json={"name": "rsvp_received", "data": {"via": "form"}})
    assert everyone.json()["resumed"] == [second["id"]]
    again = tenant.admin.post("/api/events", json={"name": "rsvp_received", "instance_id": second["id"]})
    assert again.json()["resumed"] == []


def test_events_refuse_bad_input_and_other_tenants(tenant: Tenant, make_tenant: Any) -> None:
    instance = started(tenant)
    other = make_tenant()
    assert other.admin.post("/api/events", json={"name": "x", "instance_id": instance["id"]}).status_code == 404
    assert other.admin.post("/api/events", json={"name": "x", "contact_id": instance["contact_id"]}).status_code == 404
    for body in ({}, {"name": "Bad Name"}, {"name": "x", "data": []}, {"name": "x", "extra": 1}):
        answer = tenant.admin.post("/api/events", json=body)
        assert answer.status_code == 422, (body, answer.text)
    assert tenant.as_role("viewer").post("/api/events", json={"name": "x"}).status_code == 403


def test_a_volunteer_holds_at_most_5_tasks(tenant: Tenant) -> None:
    for _ in range(7):
        started(tenant)
    volunteer = tenant.as_role("volunteer")
    for _ in range(5):
        assert volunteer.post("/api/tasks/claim").status_code == 200
    sixth = volunteer.post("/api/tasks/claim")
    assert sixth.status_code == 409
    assert "5 tasks" in sixth.json()["detail"]
    assert tenant.admin.post("/api/tasks/claim").status_code == 200  # staff and admins are not limited
