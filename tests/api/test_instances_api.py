"""`/api/instances` over HTTP (api.md § Instances, workflows.md § Instance lifecycle), except `/bulk`.

Every test runs in a fresh tenant; the reference template (county-outreach-v1) is the graph unless said otherwise.
The last section walks every human path of the reference template to each of its end nodes.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from conftest import REFERENCE_ID, Tenant, reference_template

HEX_ID = re.compile(r"^[0-9a-f]{12}$")
Json = dict[str, Any]


# ---------------------------------------------------------------- helpers


def ok(answer: httpx.Response, status: int = 200) -> Json:
    assert answer.status_code == status, f"{answer.status_code} {answer.text}"
    body: Json = answer.json()
    return body


def staff(tenant: Tenant) -> tuple[httpx.Client, str]:
    """A staff client and its token id (the `actor` its events must carry)."""
    made = tenant.token("staff")
    return tenant.client(made["token"]), made["id"]


def tenant_admin_id(tenant: Tenant) -> str:
    """The id of the tenant's first admin token (the `admin` client)."""
    tokens = ok(tenant.admin.get("/api/tokens"))["items"]
    admins = [t["id"] for t in tokens if t["role"] == "admin"]
    assert len(admins) == 1
    return str(admins[0])


def timeline(tenant: Tenant, instance_id: str) -> list[Json]:
    events: list[Json] = ok(tenant.admin.get(f"/api/instances/{instance_id}"))["timeline"]
    return events


def types(events: list[Json]) -> list[str]:
    return [e["type"] for e in events]


def move(tenant: Tenant, instance_id: str, outcome: str, **extra: Any) -> Json:
    return ok(tenant.admin.post(f"/api/instances/{instance_id}/transition", json={"outcome": outcome, **extra}))


def started(tenant: Tenant, *outcomes: str, **create: Any) -> Json:
    """A started instance of the reference template, moved along `outcomes`."""
    instance = tenant.instance(start=True, **create)
    for outcome in outcomes:
        instance = move(tenant, instance["id"], outcome)
    return instance


def new_events(tenant: Tenant, instance_id: str, before: int) -> list[Json]:
    return timeline(tenant, instance_id)[before:]


def invalid_template() -> Json:
    return {
        "id": "broken",
        "name": "Broken draft",
        "start_node": "nowhere",
        "nodes": {"ask": {"type": "action", "action": "phone_call", "transitions": {"done": "missing_node"}}},
    }


# ---------------------------------------------------------------- create


def test_create_is_pending_with_frozen_nodes_and_version(tenant: Tenant) -> None:
    template = tenant.template()
    contact = tenant.contact()
    created = ok(
        tenant.admin.post("/api/instances", json={"contact_id": contact["id"], "template_id": REFERENCE_ID}), 201
    )
    assert HEX_ID.fullmatch(created["id"])
    assert created["status"] == "pending"
    assert created["contact_id"] == contact["id"]
    assert created["template_id"] == REFERENCE_ID
    assert created["template_version"] == "1.0.0"
    assert created["nodes"] == template["nodes"]
    assert created["started_at"] is None
    assert created["completed_at"] is None
    assert created["state"] == {}
    assert created["tags"] == []
    assert created["metadata"] == {}
    assert created["created_at"].endswith("+00:00")
    assert created["updated_at"].endswith("+00:00")
    linked = ok(tenant.admin.get(f"/api/contacts/{contact['id']}"))
    assert linked["workflow_instance_ids"] == [created["id"]]


def test_template_edits_never_change_an_existing_instance(tenant: Tenant) -> None:
    template = tenant.template()
    instance = tenant.instance()
    nodes = template["nodes"]
    nodes["initial_call"]["name"] = "Renamed call"
    patched = ok(tenant.admin.patch(f"/api/workflows/{REFERENCE_ID}", json={"nodes": nodes}))
    assert patched["version"] == "1.1.0"
    again = ok(tenant.admin.get(f"/api/instances/{instance['id']}"))
    assert again["template_version"] == "1.0.0"
    assert again["nodes"]["initial_call"]["name"] == "Initial phone call"
    assert again["nodes"] == instance["nodes"]
    later = tenant.instance()
    assert later["template_version"] == "1.1.0"
    assert later["nodes"]["initial_call"]["name"] == "Renamed call"


def test_create_with_start_true_is_active_at_the_start_node(tenant: Tenant) -> None:
    tenant.template()
    created = tenant.instance(start=True)
    assert created["status"] == "active"
    assert created["current_node"] == "initial_call"
    assert created["started_at"] is not None
    assert created["started_at"].endswith("+00:00")
    assert created["completed_at"] is None


@pytest.mark.parametrize(
    ("field", "kind"),
    [("contact_id", "contact"), ("template_id", "template")],
)
def test_create_with_an_unknown_contact_or_template_is_404(tenant: Tenant, field: str, kind: str) -> None:
    tenant.template()
    body = {"contact_id": tenant.contact()["id"], "template_id": REFERENCE_ID, field: "nosuchrecord1"}
    answer = tenant.admin.post("/api/instances", json=body)
    assert answer.status_code == 404, answer.text
    assert kind in answer.json()["detail"]
    assert "nosuchrecord1" in answer.json()["detail"]
    assert ok(tenant.admin.get("/api/instances"))["items"] == []


def test_create_from_a_template_with_validation_errors_is_422_with_the_errors(tenant: Tenant) -> None:
    tenant.template(invalid_template())
    contact = tenant.contact()
    answer = tenant.admin.post("/api/instances", json={"contact_id": contact["id"], "template_id": "broken"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert isinstance(body["detail"], str)
    assert body["detail"]
    assert isinstance(body["errors"], list)
    assert body["errors"]
    assert ok(tenant.admin.get("/api/instances"))["items"] == []
    assert ok(tenant.admin.get(f"/api/contacts/{contact['id']}"))["workflow_instance_ids"] == []


def test_initial_state_tags_and_metadata_are_kept(tenant: Tenant) -> None:
    tenant.template()
    state = {"door_notes": "prefers text", "nested": {"n": 1, "list": [1, 2]}}
    created = tenant.instance(initial_state=state, tags=["vip", "north", "vip"], metadata={"source": "import"})
    assert created["state"] == state
    assert created["tags"] == ["vip", "north"]
    assert created["metadata"] == {"source": "import"}
    again = ok(tenant.admin.get(f"/api/instances/{created['id']}"))
    assert again["state"] == state
    assert again["tags"] == ["vip", "north"]
    assert again["metadata"] == {"source": "import"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bogus", 1),
        ("id", "myinstance01"),
        ("status", "completed"),
        ("tenant", "default"),
        ("current_node", "end_success"),
        ("template_version", "9.9.9"),
    ],
)
def test_create_refuses_unknown_and_server_owned_fields(tenant: Tenant, field: str, value: Any) -> None:
    tenant.template()
    body = {"contact_id": tenant.contact()["id"], "template_id": REFERENCE_ID, field: value}
    answer = tenant.admin.post("/api/instances", json=body)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["detail"]
    assert field in [e["field"] for e in answer.json()["errors"]]
    assert ok(tenant.admin.get("/api/instances"))["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template_id": REFERENCE_ID}, "contact_id"),
        ({"contact_id": "abc"}, "template_id"),
        ({"contact_id": "abc", "template_id": REFERENCE_ID, "tags": ["Not A Slug"]}, "tags"),
        ({"contact_id": "abc", "template_id": REFERENCE_ID, "initial_state": [1]}, "initial_state"),
        ({"contact_id": "abc", "template_id": REFERENCE_ID, "start": "sometimes"}, "start"),
    ],
)
def test_create_with_a_bad_body_is_422_naming_the_field(tenant: Tenant, body: Json, field: str) -> None:
    answer = tenant.admin.post("/api/instances", json=body)
    assert answer.status_code == 422, answer.text
    assert any(e["field"].startswith(field) for e in answer.json()["errors"]), answer.text


# ---------------------------------------------------------------- get


def test_get_has_the_timeline_oldest_first(tenant: Tenant) -> None:
    tenant.template()
    client, token_id = staff(tenant)
    created = ok(
        client.post(
            "/api/instances",
            json={"contact_id": tenant.contact()["id"], "template_id": REFERENCE_ID, "start": True},
        ),
        201,
    )
    got = ok(client.get(f"/api/instances/{created['id']}"))
    assert got["id"] == created["id"]
    assert got["status"] == "active"
    events = got["timeline"]
    assert types(events) == ["instance_created", "instance_started", "node_entered"]
    assert events[2]["node_id"] == "initial_call"
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)
    for event in events:
        assert HEX_ID.fullmatch(event["id"])
        assert event["timestamp"].endswith("+00:00")
        assert event["instance_id"] == created["id"]
        assert event["contact_id"] == created["contact_id"]
        assert isinstance(event["data"], dict)
        assert isinstance(event["message"], str)
    assert events[0]["actor"] == token_id
    assert events[1]["actor"] == token_id
    assert len({e["id"] for e in events}) == 3


def test_get_an_unknown_instance_is_404(tenant: Tenant) -> None:
    answer = tenant.admin.get("/api/instances/0123456789ab")
    assert answer.status_code == 404
    assert "0123456789ab" in answer.json()["detail"]


# ---------------------------------------------------------------- list


@pytest.fixture
def listed(tenant: Tenant) -> dict[str, Any]:
    """Four instances in known states, two contacts, two templates; created oldest (i1) to newest (i4)."""
    tenant.template()
    ok(tenant.admin.post(f"/api/workflows/{REFERENCE_ID}/clone", json={"id": "tpl-b"}), 201)
    c1 = tenant.contact(name="One")["id"]
    c2 = tenant.contact(name="Two")["id"]
    i1 = tenant.instance(contact_id=c1, start=False, tags=["x"])["id"]
    i2 = tenant.instance(contact_id=c1, start=True)["id"]
    i3 = tenant.instance(contact_id=c2, template_id="tpl-b", start=True, tags=["y"])["id"]
    move(tenant, i3, "answered_interested")
    i4 = tenant.instance(contact_id=c2, start=True, tags=["x", "y"])["id"]
    ok(tenant.admin.post(f"/api/instances/{i4}/cancel"))
    return {"tenant": tenant, "c1": c1, "c2": c2, "i1": i1, "i2": i2, "i3": i3, "i4": i4}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["i4", "i3", "i2", "i1"]),
        ({"contact_id": "{c1}"}, ["i2", "i1"]),
        ({"contact_id": "{c2}"}, ["i4", "i3"]),
        ({"contact_id": "0123456789ab"}, []),
        ({"template_id": "tpl-b"}, ["i3"]),
        ({"template_id": REFERENCE_ID}, ["i4", "i2", "i1"]),
        ({"status": "pending"}, ["i1"]),
        ({"status": "active"}, ["i2"]),
        ({"status": "waiting"}, ["i3"]),
        ({"status": "cancelled"}, ["i4"]),
        ({"status": "completed"}, []),
        ({"tag": "x"}, ["i4", "i1"]),
        ({"tag": "y"}, ["i4", "i3"]),
        ({"tag": ["x", "y"]}, ["i4"]),
        ({"current_node": "initial_call"}, ["i4", "i2"]),
        ({"current_node": "schedule_followup"}, ["i3"]),
        ({"contact_id": "{c2}", "status": "waiting"}, ["i3"]),
    ],
)
def test_list_filters_newest_first(listed: dict[str, Any], query: dict[str, Any], expected: list[str]) -> None:
    tenant: Tenant = listed["tenant"]
    params = {k: v.format(**listed) if isinstance(v, str) else v for k, v in query.items()}
    page = ok(tenant.admin.get("/api/instances", params=params))
    assert [i["id"] for i in page["items"]] == [listed[name] for name in expected]
    assert page["next_cursor"] is None
    for item in page["items"]:
        assert item["timeline"] == []


def test_list_pages_newest_first_without_duplicates(tenant: Tenant) -> None:
    tenant.template()
    contact = tenant.contact()["id"]
    made = [tenant.instance(contact_id=contact)["id"] for _ in range(5)]
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = ok(tenant.admin.get("/api/instances", params=params))
        sizes.append(len(page["items"]))
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [2, 2, 1]
    assert seen == list(reversed(made))


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 501}, {"limit": "many"}, {"cursor": "not-a-cursor"}, {"status": "sleeping"}],
)
def test_list_with_bad_parameters_is_422(tenant: Tenant, params: dict[str, Any]) -> None:
    answer = tenant.admin.get("/api/instances", params=params)
    assert answer.status_code == 422, answer.text
    assert isinstance(answer.json()["detail"], str)


# ---------------------------------------------------------------- delete


def test_delete_removes_the_instance_its_link_and_its_timeline(tenant: Tenant) -> None:
    tenant.template()
    contact = tenant.contact()["id"]
    kept = tenant.instance(contact_id=contact, start=True)["id"]
    gone = tenant.instance(contact_id=contact, start=True)["id"]
    ok(tenant.admin.post(f"/api/instances/{gone}/notes", json={"text": "a note"}))
    answer = tenant.admin.delete(f"/api/instances/{gone}")
    assert answer.status_code == 204
    assert answer.content == b""
    assert tenant.admin.get(f"/api/instances/{gone}").status_code == 404
    assert tenant.admin.get(f"/api/instances/{gone}/timeline").status_code == 404
    assert tenant.admin.delete(f"/api/instances/{gone}").status_code == 404
    assert ok(tenant.admin.get(f"/api/contacts/{contact}"))["workflow_instance_ids"] == [kept]
    contact_events = ok(tenant.admin.get(f"/api/contacts/{contact}/timeline", params={"limit": 500}))["items"]
    assert all(e["instance_id"] != gone for e in contact_events)
    assert any(e["instance_id"] == kept for e in contact_events)
    assert [i["id"] for i in ok(tenant.admin.get("/api/instances"))["items"]] == [kept]


def test_delete_an_unknown_instance_is_404(tenant: Tenant) -> None:
    assert tenant.admin.delete("/api/instances/0123456789ab").status_code == 404


# ---------------------------------------------------------------- start / pause / resume / cancel


def test_start_runs_a_pending_instance_once(tenant: Tenant) -> None:
    tenant.template()
    pending = tenant.instance()
    assert pending["status"] == "pending"
    moved = ok(tenant.admin.post(f"/api/instances/{pending['id']}/start"))
    assert moved["status"] == "active"
    assert moved["current_node"] == "initial_call"
    assert moved["started_at"] is not None
    again = tenant.admin.post(f"/api/instances/{pending['id']}/start")
    assert again.status_code == 409, again.text
    assert isinstance(again.json()["detail"], str)
    assert types(timeline(tenant, pending["id"])) == ["instance_created", "instance_started", "node_entered"]


def test_start_a_finished_instance_is_409(tenant: Tenant) -> None:
    tenant.template()
    done = started(tenant, "answered_not_interested")
    assert tenant.admin.post(f"/api/instances/{done['id']}/start").status_code == 409


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [((), "active"), (("answered_interested",), "waiting"), (("no_answer", "contacted_interested"), "waiting")],
)
def test_pause_and_resume_return_to_where_it_was(tenant: Tenant, outcomes: tuple[str, ...], status: str) -> None:
    tenant.template()
    instance = started(tenant, *outcomes)
    assert instance["status"] == status
    node = instance["current_node"]
    paused = ok(tenant.admin.post(f"/api/instances/{instance['id']}/pause"))
    assert paused["status"] == "paused"
    assert paused["current_node"] == node
    assert tenant.admin.post(f"/api/instances/{instance['id']}/pause").status_code == 409
    resumed = ok(tenant.admin.post(f"/api/instances/{instance['id']}/resume"))
    assert resumed["status"] == status
    assert resumed["current_node"] == node
    assert tenant.admin.post(f"/api/instances/{instance['id']}/resume").status_code == 409
    assert types(timeline(tenant, instance["id"]))[-2:] == ["instance_paused", "instance_resumed"]


@pytest.mark.parametrize("outcomes", [None, ("answered_not_interested",)], ids=["pending", "completed"])
def test_pause_when_not_active_or_waiting_is_409(tenant: Tenant, outcomes: tuple[str, ...] | None) -> None:
    tenant.template()
    instance = tenant.instance() if outcomes is None else started(tenant, *outcomes)
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/pause")
    assert answer.status_code == 409, answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["status"] == instance["status"]


def test_resume_when_pending_is_409(tenant: Tenant) -> None:
    tenant.template()
    assert tenant.admin.post(f"/api/instances/{tenant.instance()['id']}/resume").status_code == 409


def test_transition_while_paused_is_409_and_changes_nothing(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/pause"))
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"})
    assert answer.status_code == 409, answer.text
    after = ok(tenant.admin.get(f"/api/instances/{instance['id']}"))
    assert after["status"] == "paused"
    assert after["current_node"] == "initial_call"
    assert after["timeline"] == before


@pytest.mark.parametrize("where", ["pending", "active", "waiting", "paused"])
def test_cancel_any_unfinished_instance(tenant: Tenant, where: str) -> None:
    tenant.template()
    if where == "pending":
        instance = tenant.instance()
    elif where == "active":
        instance = started(tenant)
    else:
        instance = started(tenant, "answered_interested")
    if where == "paused":
        instance = ok(tenant.admin.post(f"/api/instances/{instance['id']}/pause"))
    assert instance["status"] == where
    cancelled = ok(tenant.admin.post(f"/api/instances/{instance['id']}/cancel"))
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert cancelled["completed_at"].endswith("+00:00")
    assert types(timeline(tenant, instance["id"]))[-1] == "instance_cancelled"
    again = tenant.admin.post(f"/api/instances/{instance['id']}/cancel")
    assert again.status_code == 409, again.text


def test_cancel_a_completed_instance_is_409(tenant: Tenant) -> None:
    tenant.template()
    done = started(tenant, "answered_not_interested")
    assert done["status"] == "completed"
    answer = tenant.admin.post(f"/api/instances/{done['id']}/cancel")
    assert answer.status_code == 409, answer.text
    after = ok(tenant.admin.get(f"/api/instances/{done['id']}"))
    assert after["status"] == "completed"
    assert after["end_status"] == "declined"


@pytest.mark.parametrize("action", ["start", "pause", "resume", "cancel"])
def test_lifecycle_routes_on_an_unknown_instance_are_404(tenant: Tenant, action: str) -> None:
    assert tenant.admin.post(f"/api/instances/0123456789ab/{action}").status_code == 404


# ---------------------------------------------------------------- transition


def test_transition_with_state_updates_and_note(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, initial_state={"keep": 1})
    before = len(timeline(tenant, instance["id"]))
    moved = move(
        tenant,
        instance["id"],
        "no_answer",
        state_updates={"attempts": 1},
        note="rang twice",
        expected_node="initial_call",
    )
    assert moved["current_node"] == "schedule_door"
    assert moved["status"] == "active"
    assert moved["state"] == {"keep": 1, "attempts": 1}
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["state_updated", "user_action", "node_exited", "node_entered"]
    assert events[0]["data"]["updates"] == {"attempts": 1}
    assert events[1]["node_id"] == "initial_call"
    assert events[1]["data"]["outcome"] == "no_answer"
    assert events[1]["data"]["note"] == "rang twice"
    assert events[2]["node_id"] == "initial_call"
    assert events[2]["data"]["outcome"] == "no_answer"
    assert events[3]["node_id"] == "schedule_door"


def test_transition_without_state_updates_has_no_state_event(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    before = len(timeline(tenant, instance["id"]))
    moved = move(tenant, instance["id"], "voicemail")
    assert moved["current_node"] == "schedule_door"
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["user_action", "node_exited", "node_entered"]
    assert "note" not in events[0]["data"]


def test_transition_at_a_decision_node_records_decision_manual_input(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, "no_answer", "contacted_interested")
    assert instance["current_node"] == "door_decision"
    assert instance["status"] == "waiting"
    before = len(timeline(tenant, instance["id"]))
    moved = move(tenant, instance["id"], "text", note="gave a mobile number")
    assert moved["current_node"] == "followup_text"
    assert moved["status"] == "active"
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["decision_manual_input", "node_exited", "node_entered"]
    assert events[0]["node_id"] == "door_decision"
    assert events[0]["data"]["outcome"] == "text"
    assert events[0]["data"]["note"] == "gave a mobile number"


def test_transition_at_a_wait_node_records_wait_completed(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, "answered_interested")
    assert instance["current_node"] == "schedule_followup"
    assert instance["status"] == "waiting"
    before = len(timeline(tenant, instance["id"]))
    moved = move(tenant, instance["id"], "elapsed")
    assert moved["current_node"] == "followup_text"
    assert moved["status"] == "active"
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["wait_completed", "node_exited", "node_entered"]
    assert events[0]["node_id"] == "schedule_followup"
    assert events[0]["data"]["outcome"] == "elapsed"


def test_transition_with_an_outcome_not_of_the_node_is_422_listing_the_allowed(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "sent"})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    for allowed in ("answered_interested", "answered_not_interested", "no_answer", "voicemail"):
        assert allowed in detail
    assert timeline(tenant, instance["id"]) == before


def test_transition_with_a_wrong_expected_node_is_409(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(
        f"/api/instances/{instance['id']}/transition",
        json={"outcome": "no_answer", "expected_node": "schedule_door"},
    )
    assert answer.status_code == 409, answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["current_node"] == "initial_call"
    assert timeline(tenant, instance["id"]) == before


def test_a_late_duplicate_of_the_outcome_that_just_moved_it_is_409(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, "answered_interested")
    assert instance["current_node"] == "schedule_followup"
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "answered_interested"})
    assert answer.status_code == 409, answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["current_node"] == "schedule_followup"
    assert timeline(tenant, instance["id"]) == before


@pytest.mark.parametrize(
    ("setup", "outcome"),
    [
        ("pending", "no_answer"),
        ("completed", "answered_not_interested"),
        ("cancelled", "no_answer"),
    ],
)
def test_transition_on_an_instance_that_cannot_move_is_409(tenant: Tenant, setup: str, outcome: str) -> None:
    tenant.template()
    if setup == "pending":
        instance = tenant.instance()
    elif setup == "completed":
        instance = started(tenant, "answered_not_interested")
    else:
        instance = ok(tenant.admin.post(f"/api/instances/{started(tenant)['id']}/cancel"))
    assert instance["status"] == setup
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": outcome})
    assert answer.status_code == 409, answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["status"] == setup


def test_actor_in_the_body_is_only_on_behalf_of(tenant: Tenant) -> None:
    tenant.template()
    client, token_id = staff(tenant)
    instance = started(tenant)
    before = len(timeline(tenant, instance["id"]))
    answer = client.post(
        f"/api/instances/{instance['id']}/transition",
        json={"outcome": "no_answer", "actor": "volunteer-jane", "state_updates": {"a": 1}},
    )
    ok(answer)
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["state_updated", "user_action", "node_exited", "node_entered"]
    assert events[0]["actor"] == token_id
    assert events[1]["actor"] == token_id
    assert events[1]["data"]["on_behalf_of"] == "volunteer-jane"
    assert events[0]["data"]["on_behalf_of"] == "volunteer-jane"
    for event in timeline(tenant, instance["id"]):
        assert event["actor"] != "volunteer-jane"
        assert event["actor"] in (token_id, tenant_admin_id(tenant), "system")


def test_transition_body_refuses_unknown_fields(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    answer = tenant.admin.post(
        f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer", "actor_id": "x"}
    )
    assert answer.status_code == 422, answer.text
    assert "actor_id" in answer.json()["detail"]


def test_transition_on_an_unknown_instance_is_404(tenant: Tenant) -> None:
    answer = tenant.admin.post("/api/instances/0123456789ab/transition", json={"outcome": "no_answer"})
    assert answer.status_code == 404


# ---------------------------------------------------------------- state


def test_state_is_a_json_merge_patch(tenant: Tenant) -> None:
    tenant.template()
    initial = {"a": {"x": 1, "y": 2, "deep": {"k": "v"}}, "list": [1, 2, 3], "gone": "v", "keep": True}
    instance = started(tenant, initial_state=initial)
    before = len(timeline(tenant, instance["id"]))
    updates = {"a": {"y": None, "z": 3, "deep": {"k2": "v2"}}, "list": [9], "gone": None, "new": {"n": None}}
    changed = ok(tenant.admin.post(f"/api/instances/{instance['id']}/state", json={"updates": updates}))
    expected = {"a": {"x": 1, "z": 3, "deep": {"k": "v", "k2": "v2"}}, "list": [9], "keep": True, "new": {}}
    assert changed["state"] == expected
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["state"] == expected
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["state_updated"]
    assert events[0]["data"]["updates"] == updates
    assert events[0]["node_id"] == "initial_call"
    assert changed["status"] == "active"
    assert changed["current_node"] == "initial_call"


def test_state_replaces_a_non_object_with_an_object(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, initial_state={"a": [1, 2], "b": "text"})
    changed = ok(
        tenant.admin.post(f"/api/instances/{instance['id']}/state", json={"updates": {"a": {"k": 1}, "b": [1]}})
    )
    assert changed["state"] == {"a": {"k": 1}, "b": [1]}


@pytest.mark.parametrize("finish", ["complete", "cancel"])
def test_state_of_a_finished_instance_is_409(tenant: Tenant, finish: str) -> None:
    tenant.template()
    instance = started(tenant, initial_state={"a": 1})
    if finish == "complete":
        move(tenant, instance["id"], "answered_not_interested")
    else:
        ok(tenant.admin.post(f"/api/instances/{instance['id']}/cancel"))
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/state", json={"updates": {"a": 2}})
    assert answer.status_code == 409, answer.text
    after = ok(tenant.admin.get(f"/api/instances/{instance['id']}"))
    assert after["state"] == {"a": 1}
    assert after["timeline"] == before


@pytest.mark.parametrize("body", [{}, {"updates": [1]}, {"updates": "x"}, {"updates": {}, "extra": 1}])
def test_state_with_a_bad_body_is_422(tenant: Tenant, body: Json) -> None:
    tenant.template()
    instance = started(tenant)
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/state", json=body)
    assert answer.status_code == 422, answer.text


# ---------------------------------------------------------------- notes


def test_a_note_is_a_user_note_event_with_the_text(tenant: Tenant) -> None:
    tenant.template()
    client, token_id = staff(tenant)
    instance = started(tenant)
    before = len(timeline(tenant, instance["id"]))
    text = "Spoke to her daughter; call back after 6pm ✓"
    noted = ok(client.post(f"/api/instances/{instance['id']}/notes", json={"text": text, "actor": "jane"}))
    assert noted["status"] == "active"
    assert noted["current_node"] == "initial_call"
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["user_note"]
    assert events[0]["data"]["text"] == text
    assert events[0]["data"]["on_behalf_of"] == "jane"
    assert events[0]["actor"] == token_id
    assert events[0]["node_id"] == "initial_call"


@pytest.mark.parametrize("body", [{"text": ""}, {}, {"text": None}, {"text": 5}, {"text": "x", "color": "red"}])
def test_a_note_with_no_text_is_422(tenant: Tenant, body: Json) -> None:
    tenant.template()
    instance = started(tenant)
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.post(f"/api/instances/{instance['id']}/notes", json=body)
    assert answer.status_code == 422, answer.text
    assert timeline(tenant, instance["id"]) == before


# ---------------------------------------------------------------- tags


def test_instance_tags_are_idempotent_with_events_only_on_change(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant, tags=["first"])
    base = f"/api/instances/{instance['id']}/tags"
    before = len(timeline(tenant, instance["id"]))
    assert ok(tenant.admin.post(f"{base}/hot-lead"))["tags"] == ["first", "hot-lead"]
    assert ok(tenant.admin.post(f"{base}/hot-lead"))["tags"] == ["first", "hot-lead"]
    assert ok(tenant.admin.post(f"{base}/first"))["tags"] == ["first", "hot-lead"]
    assert ok(tenant.admin.delete(f"{base}/first"))["tags"] == ["hot-lead"]
    assert ok(tenant.admin.delete(f"{base}/first"))["tags"] == ["hot-lead"]
    assert ok(tenant.admin.delete(f"{base}/never-there"))["tags"] == ["hot-lead"]
    events = new_events(tenant, instance["id"], before)
    assert types(events) == ["tag_added", "tag_removed"]
    assert events[0]["data"]["tag"] == "hot-lead"
    assert events[1]["data"]["tag"] == "first"
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["tags"] == ["hot-lead"]
    assert [i["id"] for i in ok(tenant.admin.get("/api/instances", params={"tag": "hot-lead"}))["items"]] == [
        instance["id"]
    ]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
@pytest.mark.parametrize("tag", ["Hot", "has space", "-lead", "x" * 65, "a.b", "ümlaut"])
def test_an_instance_tag_that_is_not_a_slug_is_422(tenant: Tenant, method: str, tag: str) -> None:
    tenant.template()
    instance = started(tenant)
    before = timeline(tenant, instance["id"])
    answer = tenant.admin.request(method, f"/api/instances/{instance['id']}/tags/{tag}")
    assert answer.status_code == 422, answer.text
    assert ok(tenant.admin.get(f"/api/instances/{instance['id']}"))["tags"] == []
    assert timeline(tenant, instance["id"]) == before


def test_tags_on_an_unknown_instance_are_404(tenant: Tenant) -> None:
    assert tenant.admin.post("/api/instances/0123456789ab/tags/x").status_code == 404
    assert tenant.admin.delete("/api/instances/0123456789ab/tags/x").status_code == 404


# ---------------------------------------------------------------- timeline paging


def test_timeline_pages_oldest_first_without_duplicates(tenant: Tenant) -> None:
    tenant.template()
    instance = started(tenant)
    for n in range(3):
        ok(tenant.admin.post(f"/api/instances/{instance['id']}/notes", json={"text": f"note {n}"}))
    move(tenant, instance["id"], "no_answer")
    whole = timeline(tenant, instance["id"])
    assert len(whole) == 9
    seen: list[Json] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = ok(tenant.admin.get(f"/api/instances/{instance['id']}/timeline", params=params))
        pages += 1
        assert len(page["items"]) <= 2
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(page["items"]) == 2
    assert pages == 5
    assert [e["id"] for e in seen] == [e["id"] for e in whole]
    assert len({e["id"] for e in seen}) == len(seen)
    assert seen == whole
    assert types(seen)[:3] == ["instance_created", "instance_started", "node_entered"]
    assert [e["data"].get("text") for e in seen if e["type"] == "user_note"] == ["note 0", "note 1", "note 2"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"cursor": "garbage!"}])
def test_timeline_with_bad_paging_is_422(tenant: Tenant, params: dict[str, Any]) -> None:
    tenant.template()
    instance = started(tenant)
    assert tenant.admin.get(f"/api/instances/{instance['id']}/timeline", params=params).status_code == 422


# ---------------------------------------------------------------- the reference template, every human path

# Each path alternates node and outcome and ends at an end node: node, outcome, node, outcome, ..., end node.
PATHS: list[tuple[tuple[str, ...], str]] = [
    (("initial_call", "answered_not_interested", "end_declined"), "declined"),
    (
        ("initial_call", "answered_interested", "schedule_followup", "elapsed", "followup_text", "sent", "end_success"),
        "success",
    ),
    (
        ("initial_call", "answered_interested", "schedule_followup", "elapsed", "followup_text", "failed",
         "send_postcard", "sent", "end_success"),
        "success",
    ),
    (
        ("initial_call", "answered_interested", "schedule_followup", "elapsed", "followup_text", "failed",
         "send_postcard", "failed", "end_failed"),
        "failed",
    ),
] + [
    path
    for first in ("no_answer", "voicemail")
    for path in [
        (("initial_call", first, "schedule_door", "contacted_not_interested", "end_declined"), "declined"),
        (("initial_call", first, "schedule_door", "not_home", "send_postcard", "sent", "end_success"), "success"),
        (("initial_call", first, "schedule_door", "not_home", "send_postcard", "failed", "end_failed"), "failed"),
        (
            ("initial_call", first, "schedule_door", "contacted_interested", "door_decision", "mail",
             "send_postcard", "sent", "end_success"),
            "success",
        ),
        (
            ("initial_call", first, "schedule_door", "contacted_interested", "door_decision", "mail",
             "send_postcard", "failed", "end_failed"),
            "failed",
        ),
        (
            ("initial_call", first, "schedule_door", "contacted_interested", "door_decision", "text",
             "followup_text", "sent", "end_success"),
            "success",
        ),
        (
            ("initial_call", first, "schedule_door", "contacted_interested", "door_decision", "text",
             "followup_text", "failed", "send_postcard", "sent", "end_success"),
            "success",
        ),
        (
            ("initial_call", first, "schedule_door", "contacted_interested", "door_decision", "text",
             "followup_text", "failed", "send_postcard", "failed", "end_failed"),
            "failed",
        ),
    ]
]  # fmt: skip

STATUS_AT = {"action": "active", "wait": "waiting", "decision": "waiting"}
RECORDED_AS = {"action": "user_action", "wait": "wait_completed", "decision": "decision_manual_input"}


def all_simple_paths() -> set[tuple[str, ...]]:
    """Every node/outcome path from the start node to an end node of the reference template."""
    template = reference_template()
    nodes = template["nodes"]
    found: set[tuple[str, ...]] = set()

    def walk(node_id: str, path: tuple[str, ...]) -> None:
        transitions = nodes[node_id].get("transitions", {})
        if nodes[node_id]["type"] == "end":
            found.add(path)
            return
        for outcome, target in transitions.items():
            if target not in path[0::2]:
                walk(target, (*path, outcome, target))

    walk(template["start_node"], (template["start_node"],))
    return found


def test_the_path_table_covers_every_path_of_the_reference_template() -> None:
    listed = [path for path, _ in PATHS]
    assert len(listed) == len(set(listed)) == 20
    assert set(listed) == all_simple_paths()
    nodes = reference_template()["nodes"]
    for path, end_status in PATHS:
        assert nodes[path[-1]]["end_status"] == end_status


@pytest.mark.parametrize(("path", "end_status"), PATHS, ids=["/".join(p[1::2]) for p, _ in PATHS])
def test_reference_template_human_path_end_to_end(tenant: Tenant, path: tuple[str, ...], end_status: str) -> None:
    tenant.template()
    nodes = reference_template()["nodes"]
    visited, outcomes = path[0::2], path[1::2]
    instance = tenant.instance(start=True, initial_state={"door_notes": "prefers texts"})
    for node_id, outcome, next_node in zip(visited[:-1], outcomes, visited[1:], strict=True):
        assert instance["current_node"] == node_id
        assert instance["status"] == STATUS_AT[nodes[node_id]["type"]]
        assert instance["completed_at"] is None
        instance = move(tenant, instance["id"], outcome, expected_node=node_id, note=f"{outcome} at {node_id}")
        assert instance["current_node"] == next_node
    assert instance["status"] == "completed"
    assert instance["end_status"] == end_status
    assert instance["completed_at"] is not None
    assert instance["completed_at"].endswith("+00:00")

    got = ok(tenant.admin.get(f"/api/instances/{instance['id']}"))
    assert got["status"] == "completed"
    assert got["end_status"] == end_status
    events = got["timeline"]
    assert [e["node_id"] for e in events if e["type"] == "node_entered"] == list(visited)
    assert [e["data"]["outcome"] for e in events if e["type"] == "node_exited"] == list(outcomes)
    assert [e["node_id"] for e in events if e["type"] == "node_exited"] == list(visited[:-1])
    recorded = [e for e in events if e["type"] in RECORDED_AS.values()]
    assert [e["type"] for e in recorded] == [RECORDED_AS[nodes[n]["type"]] for n in visited[:-1]]
    assert [e["data"]["outcome"] for e in recorded] == list(outcomes)
    assert types(events)[:2] == ["instance_created", "instance_started"]
    assert events[-1]["type"] == "instance_completed"
    assert events[-1]["data"]["end_status"] == end_status
    assert events[-1]["node_id"] == visited[-1]
    late = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": outcomes[-1]})
    assert late.status_code == 409, late.text
    listed = ok(tenant.admin.get("/api/instances", params={"status": "completed"}))["items"]
    assert [i["id"] for i in listed] == [instance["id"]]
