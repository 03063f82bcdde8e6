"""Dry runs over HTTP, on every store (api.md § Campaign work `simulate`): every path of the reference template
with its durations, `choose`, `max_paths`, contact hours in the given contact's time, and nothing written."""

from __future__ import annotations

import time
from typing import Any

from conftest import Tenant, reference_template
from flows import ab_split

START = "2026-10-05T14:00:00+00:00"  # 10:00 in New York: the hours are open


def simulate(tenant: Tenant, template_id: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    answer = tenant.admin.post(f"/api/workflows/{template_id}/simulate", json=body)
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_the_reference_template_s_paths_with_their_durations_and_nothing_written(tenant: Tenant) -> None:
    template = tenant.template()
    contact = tenant.contact()
    instances_before = tenant.admin.get("/api/instances").json()["items"]
    timeline_before = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline").json()["items"]

    found = simulate(tenant, template["id"], {"start_at": START, "contact": {"name": "Ada"}})

    assert found["truncated"] is False
    paths = found["paths"]
    assert len(paths) == 20  # 4 first outcomes, the door's 3, the model's 2, the text's and postcard's 2 each
    ends = {p["end_status"] for p in paths}
    assert ends == {"success", "failed", "declined"}
    interested = [p for p in paths if p["steps"][0]["outcome"] == "answered_interested"]
    assert [s["node"] for s in interested[0]["steps"]] == ["initial_call", "schedule_followup", "followup_text"]
    assert interested[0]["duration"] == "P3D"  # the three-day wait
    assert interested[0]["duration_seconds"] == 3 * 86400
    assert interested[0]["steps"][1]["at"].startswith("2026-10-08T14:00:00")
    declined = next(p for p in paths if p["steps"][0]["outcome"] == "answered_not_interested")
    assert (declined["end_status"], declined["duration"]) == ("declined", "PT0S")

    assert tenant.admin.get("/api/instances").json()["items"] == instances_before  # nothing written
    assert tenant.admin.get(f"/api/contacts/{contact['id']}/timeline").json()["items"] == timeline_before


def test_choose_fixes_an_outcome_and_max_paths_cuts_the_list(tenant: Tenant) -> None:
    template = tenant.template()
    fixed = simulate(
        tenant, template["id"], {"start_at": START, "choose": {"initial_call": "no_answer", "door_decision": "mail"}}
    )
    assert {p["steps"][0]["outcome"] for p in fixed["paths"]} == {"no_answer"}
    assert all(s["outcome"] == "mail" for p in fixed["paths"] for s in p["steps"] if s["node"] == "door_decision")
    few = simulate(tenant, template["id"], {"start_at": START, "max_paths": 3})
    assert (len(few["paths"]), few["truncated"]) == (3, True)


def test_the_first_call_waits_for_the_morning_where_the_voter_lives(tenant: Tenant) -> None:
    template = tenant.template()
    tenant.admin.patch(f"/api/tenants/{tenant.id}/settings", json={"contact_hours": None}).raise_for_status()
    found = simulate(
        tenant,
        template["id"],
        {"start_at": "2026-10-05T13:00:00+00:00", "contact": {"name": "Ada", "timezone": "America/Los_Angeles"}},
    )
    first = found["paths"][0]["steps"][0]
    assert first["node"] == "initial_call"
    assert first["at"].startswith("2026-10-05T16:00:00")  # 06:00 in Los Angeles; called at 09:00 there


def test_an_opted_out_contact_s_steps_are_refused_in_the_simulation_too(tenant: Tenant) -> None:
    body = {
        "id": "one-call",
        "name": "One call",
        "start_node": "call",
        "nodes": {
            "call": {"type": "action", "action": "phone_call", "transitions": {"done": "end", "opted_out": "skip"}},
            "end": {"type": "end"},
            "skip": {"type": "end", "end_status": "skipped"},
        },
    }
    tenant.template(body)
    found = simulate(tenant, "one-call", {"start_at": START, "contact": {"opted_out": ["phone"]}})
    assert [(p["end_status"], [s["outcome"] for s in p["steps"]]) for p in found["paths"]] == [
        ("skipped", ["opted_out"])
    ]


def test_a_split_s_every_branch_and_bad_requests(tenant: Tenant) -> None:
    body = ab_split()
    tenant.template(body)
    assert [p["end_status"] for p in simulate(tenant, "ab", {})["paths"]] == ["got_a", "got_b"]
    assert [p["end_status"] for p in simulate(tenant, "ab", {"choose": {"split": "b"}})["paths"]] == ["got_b"]

    broken = reference_template()
    broken["id"] = "broken"
    broken["start_node"] = "nowhere"
    tenant.template(broken)
    refused = simulate(tenant, "broken", {}, status=422)
    assert "validation errors" in refused["detail"]
    assert tenant.admin.post("/api/workflows/nope/simulate", json={}).status_code == 404
    zone = tenant.admin.post("/api/workflows/ab/simulate", json={"contact": {"timezone": "Mars/Base"}})
    assert zone.status_code == 422
    assert "IANA time zone" in zone.json()["detail"]
    for bad in ({"max_paths": 0}, {"max_paths": 5000}, {"start_at": "tomorrow"}, {"choose": {"a": ""}}, {"x": 1}):
        assert tenant.admin.post("/api/workflows/ab/simulate", json=bad).status_code == 422, bad


def test_odd_starts_and_contacts_get_a_clear_422_or_are_read_as_utc(tenant: Tenant) -> None:
    template = tenant.template()
    tenant.admin.patch(f"/api/tenants/{tenant.id}/settings", json={"contact_hours": None}).raise_for_status()
    naive = simulate(tenant, template["id"], {"start_at": "2026-10-05T14:00:00", "max_paths": 1})
    assert naive["paths"][0]["steps"][0]["at"].startswith("2026-10-05T14:00:00")  # no offset: UTC
    for body, says in (
        ({"start_at": "0001-01-01T00:00:00Z"}, "between 1970 and 9000"),
        ({"contact": {"opted_out": 5}}, "contact.opted_out"),
        ({"contact": {"opted_out": ["fax"]}}, "contact.opted_out"),
    ):
        answer = tenant.admin.post(f"/api/workflows/{template['id']}/simulate", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert says in answer.text


def test_a_template_made_to_explode_is_cut_short_quickly(tenant: Tenant) -> None:
    """Ten two-way splits in a loop behind a two-outcome action: 2^10 combinations a step, paths without end."""
    nodes: dict[str, Any] = {"a0": {"type": "action", "action": "phone_call", "transitions": {"x": "s0", "y": "s0"}}}
    for i in range(10):
        following = f"s{i + 1}" if i < 9 else "a0"
        nodes[f"s{i}"] = {"type": "split", "weights": {"l": 1, "r": 1}, "transitions": {"l": following, "r": following}}
    tenant.template({"id": "storm", "name": "Storm", "start_node": "a0", "nodes": nodes})
    began = time.monotonic()
    found = simulate(tenant, "storm", {"max_paths": 1})
    assert found["truncated"] is True
    assert time.monotonic() - began < 30  # bounded by the dry run's own budget (20,000 steps, 5 s)
