"""Recovering instances over HTTP: `POST /api/instances/{id}/retry` and `/move` (api.md § Campaign work).

A failed instance keeps the node it failed at; retry enters it again (after its state updates), move puts an
instance at any node of its frozen graph. Both are one atomic step like every other change: two at once give one
200 and one 409. Every test runs in a fresh tenant on each of the three stores.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from conftest import Tenant

Json = dict[str, Any]

SHARE = {
    "id": "share-of-households",
    "name": "Households per volunteer",
    "start_node": "share",
    "nodes": {
        "share": {
            "type": "decision",
            "name": "Enough households?",
            "rule": {"type": "heuristic", "expression": "100 / state.households > 10"},
            "transitions": {"true": "call", "false": "done"},
        },
        "call": {"type": "action", "action": "phone_call", "transitions": {"done": "done"}},
        "later": {
            "type": "wait",
            "wait_condition": {"type": "duration", "duration": "P1D"},
            "transitions": {"elapsed": "done"},
        },
        "done": {"type": "end", "end_status": "reached"},
    },
}


def ok(answer: httpx.Response, status: int = 200) -> Json:
    assert answer.status_code == status, f"{answer.status_code} {answer.text}"
    body: Json = answer.json()
    return body


def failed(tenant: Tenant) -> Json:
    """A started instance whose heuristic divided by zero: failed at `share`."""
    if tenant.admin.get(f"/api/workflows/{SHARE['id']}").status_code == 404:
        tenant.template(SHARE)
    instance = tenant.instance(template_id=SHARE["id"], start=True, initial_state={"households": 0})
    assert (instance["status"], instance["current_node"]) == ("failed", "share")
    return instance


def timeline(tenant: Tenant, instance_id: str) -> list[Json]:
    events: list[Json] = ok(tenant.admin.get(f"/api/instances/{instance_id}"))["timeline"]
    return events


def types(events: list[Json]) -> list[str]:
    return [e["type"] for e in events]


def admin_token_id(tenant: Tenant) -> str:
    [admin] = [t["id"] for t in ok(tenant.admin.get("/api/tokens"))["items"] if t["role"] == "admin"]
    return str(admin)


# ---------------------------------------------------------------------------------------------- retry


def test_a_failed_heuristic_is_retried_with_state_updates_that_make_it_pass(tenant: Tenant) -> None:
    instance = failed(tenant)
    events = timeline(tenant, instance["id"])
    failure = next(e for e in events if e["type"] == "action_failed")
    assert "divides by zero" in failure["data"]["error"]
    before = len(events)

    url = f"/api/instances/{instance['id']}/retry"
    again = ok(tenant.admin.post(url))  # no body: the cause is still there, so it fails again
    assert (again["status"], again["current_node"]) == ("failed", "share")

    retried = ok(tenant.admin.post(url, json={"state_updates": {"households": 4}, "actor": "Sam"}))
    assert (retried["status"], retried["current_node"]) == ("active", "call")
    assert retried["state"] == {"households": 4}
    assert retried["completed_at"] is None
    assert retried["task_since"] is not None  # the call is a task for a person
    new = timeline(tenant, instance["id"])[before:]
    assert types(new) == [
        "instance_retried", "node_entered", "action_failed", "instance_failed",  # the first retry
        "state_updated", "instance_retried", "node_entered", "decision_evaluated", "node_exited", "node_entered",
    ]  # fmt: skip
    event = new[5]
    assert (event["node_id"], event["actor"]) == ("share", admin_token_id(tenant))
    assert event["data"] == {"node": "share", "on_behalf_of": "Sam"}
    assert new[4]["data"]["updates"] == {"households": 4}
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["revision"] == retried["revision"]


@pytest.mark.parametrize("status", ["pending", "active", "waiting", "paused", "completed", "cancelled"])
def test_retry_of_an_instance_that_did_not_fail_is_409(tenant: Tenant, status: str) -> None:
    instance = tenant.instance(start=status != "pending")
    path = f"/api/instances/{instance['id']}"
    setup = {
        "waiting": [("transition", {"outcome": "answered_interested"})],
        "paused": [("pause", None)],
        "completed": [("transition", {"outcome": "answered_not_interested"})],
        "cancelled": [("cancel", None)],
    }
    for action, body in setup.get(status, []):
        ok(tenant.admin.post(f"{path}/{action}", json=body))
    before = ok(tenant.admin.get(path))
    assert before["status"] == status
    answer = tenant.admin.post(f"{path}/retry", json={"state_updates": {"x": 1}})
    assert answer.status_code == 409, answer.text
    assert answer.json()["detail"] == f"cannot retry an instance that is {status}; it must be failed"
    assert ok(tenant.admin.get(path)) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [({"state_updates": [1]}, "state_updates"), ({"state_updates": "x"}, "state_updates"), ({"node": "a"}, "node")],
)
def test_retry_with_a_bad_body_is_422_naming_the_field(tenant: Tenant, body: Json, field: str) -> None:
    instance = failed(tenant)
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/retry", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["status"] == "failed"


def test_two_retries_at_once_give_one_200_and_one_409(tenant: Tenant) -> None:
    instance = failed(tenant)
    url = f"/api/instances/{instance['id']}/retry"
    clients = [tenant.client(tenant.admin_token) for _ in range(2)]
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def retry(client: httpx.Client) -> None:
        barrier.wait()
        answers.append(client.post(url, json={"state_updates": {"households": 4}}))

    threads = [threading.Thread(target=retry, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert types(timeline(tenant, instance["id"])).count("instance_retried") == 1


# ---------------------------------------------------------------------------------------------- move


def test_moving_a_failed_instance_to_an_end_node_completes_it(tenant: Tenant) -> None:
    instance = failed(tenant)
    before = len(timeline(tenant, instance["id"]))
    body = {"node": "done", "reason": "reached them at the office", "actor": "Lee"}
    moved = ok(tenant.admin.post(f"/api/instances/{instance['id']}/move", json=body))
    assert (moved["status"], moved["current_node"], moved["end_status"]) == ("completed", "done", "reached")
    assert moved["completed_at"] is not None
    new = timeline(tenant, instance["id"])[before:]
    assert types(new) == ["instance_moved", "node_entered", "instance_completed"]
    assert (new[0]["node_id"], new[0]["actor"]) == ("share", admin_token_id(tenant))
    assert new[0]["data"] == {
        "moved_from": "share",
        "moved_to": "done",
        "reason": "reached them at the office",
        "on_behalf_of": "Lee",
    }


def test_moving_to_a_wait_sets_its_timer(tenant: Tenant) -> None:
    instance = failed(tenant)
    moved = ok(tenant.admin.post(f"/api/instances/{instance['id']}/move", json={"node": "later", "reason": "x"}))
    assert (moved["status"], moved["waiting_for"]) == ("waiting", "timer")
    assert moved["wake_at"] is not None
    assert types(timeline(tenant, instance["id"]))[-1] == "wait_started"


def test_a_late_outcome_of_the_node_an_instance_was_moved_from_is_409(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    url = f"/api/instances/{instance['id']}"
    moved = ok(tenant.admin.post(f"{url}/move", json={"node": "send_postcard", "reason": "asked for mail"}))
    assert (moved["status"], moved["current_node"]) == ("active", "send_postcard")
    late = tenant.admin.post(f"{url}/transition", json={"outcome": "no_answer"})  # an outcome of initial_call
    assert late.status_code == 409, late.text
    assert "moved from 'initial_call' to 'send_postcard'" in late.json()["detail"]


def test_a_paused_instance_moved_stays_paused(tenant: Tenant) -> None:
    instance = tenant.instance(start=True)
    url = f"/api/instances/{instance['id']}"
    ok(tenant.admin.post(f"{url}/pause"))
    moved = ok(tenant.admin.post(f"{url}/move", json={"node": "schedule_followup", "reason": "call back later"}))
    assert (moved["status"], moved["current_node"], moved["paused_status"]) == (
        "paused",
        "schedule_followup",
        "waiting",
    )
    resumed = ok(tenant.admin.post(f"{url}/resume"))
    assert (resumed["status"], resumed["waiting_for"]) == ("waiting", "timer")


def test_move_to_an_unknown_node_is_422_naming_it(tenant: Tenant) -> None:
    instance = failed(tenant)
    url = f"/api/instances/{instance['id']}"
    before = ok(tenant.admin.get(url))
    answer = tenant.admin.post(f"{url}/move", json={"node": "ghost", "reason": "typo"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "'ghost' is not a node" in detail
    assert "call, done, later, share" in detail
    assert ok(tenant.admin.get(url)) == before


@pytest.mark.parametrize("finish", ["transition", "cancel"])
def test_a_completed_or_cancelled_instance_cannot_be_moved(tenant: Tenant, finish: str) -> None:
    instance = tenant.instance(start=True)
    url = f"/api/instances/{instance['id']}"
    ok(
        tenant.admin.post(
            f"{url}/{finish}", json={"outcome": "answered_not_interested"} if finish != "cancel" else None
        )
    )
    answer = tenant.admin.post(f"{url}/move", json={"node": "initial_call", "reason": "start over"})
    assert answer.status_code == 409, answer.text
    assert "only unfinished or failed instances move" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"node": "done"}, "reason"),
        ({"node": "done", "reason": ""}, "reason"),
        ({"node": "done", "reason": "   "}, "reason"),
        ({"node": "done", "reason": "x" * 501}, "reason"),
        ({"reason": "why"}, "node"),
        ({"node": "", "reason": "why"}, "node"),
        ({"node": "done", "reason": "why", "force": True}, "force"),
    ],
)
def test_move_with_a_bad_body_is_422_naming_the_field(tenant: Tenant, body: Json, field: str) -> None:
    instance = failed(tenant)
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/move", json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"].split(".")[-1] for e in answer.json()["errors"]], answer.text


def test_a_reason_of_500_characters_is_enough(tenant: Tenant) -> None:
    instance = failed(tenant)
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/move", json={"node": "call", "reason": "y" * 500})
    assert ok(answer)["current_node"] == "call"


@pytest.mark.parametrize("role", ["staff", "volunteer", "viewer"])
def test_only_admins_move_instances(tenant: Tenant, role: str) -> None:
    instance = failed(tenant)
    url = f"/api/instances/{instance['id']}"
    before = ok(tenant.admin.get(url))
    answer = tenant.as_role(role).post(f"{url}/move", json={"node": "done", "reason": "closing"})
    assert answer.status_code == 403, answer.text
    assert "may not move instances" in answer.json()["detail"]
    assert ok(tenant.admin.get(url)) == before


# ---------------------------------------------------------------------------------------------- tenancy


@pytest.mark.parametrize(("route", "body"), [("retry", None), ("move", {"node": "done", "reason": "mine now"})])
def test_another_tenants_instance_is_404(tenant: Tenant, make_tenant: Any, route: str, body: Json | None) -> None:
    theirs = make_tenant()
    instance = failed(theirs)
    url = f"/api/instances/{instance['id']}"
    before = ok(theirs.admin.get(url))
    answer = tenant.admin.post(f"{url}/{route}", json=body)
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"] == f"no instance with id {instance['id']!r}"
    assert ok(theirs.admin.get(url)) == before
