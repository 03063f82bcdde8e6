"""Triggers, goals and emit_event over HTTP (workflows.md § Triggers, § Goals; api.md § Events): what
`POST /api/events` answers, a template's `trigger_errors`, validation of goals and emit_event, and the contact-level
events on a contact's timeline."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Tenant


def waiting(template_id: str, **extra: Any) -> dict[str, Any]:
    """A template whose instances wait a day at `wait`, then end."""
    return {
        "id": template_id,
        "name": template_id,
        "start_node": "wait",
        "nodes": {
            "wait": {
                "type": "wait",
                "wait_condition": {"type": "duration", "duration": "P1D"},
                "transitions": {"elapsed": "done"},
            },
            "done": {"type": "end"},
        },
        **extra,
    }


def instances(tenant: Tenant, template_id: str, contact_id: str | None = None) -> list[dict[str, Any]]:
    params = {"template_id": template_id, **({"contact_id": contact_id} if contact_id else {})}
    answer = tenant.admin.get("/api/instances", params=params)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def event(tenant: Tenant, name: str, contact_id: str | None = None, **data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "data": data, **({"contact_id": contact_id} if contact_id else {})}
    answer = tenant.admin.post("/api/events", json=body)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def test_a_new_contact_is_enrolled_by_a_contact_created_trigger(tenant: Tenant) -> None:
    tenant.template(waiting("welcome", triggers=[{"on": "contact_created", "where": "contact.county == 'Kent'"}]))
    kent = tenant.contact(county="Kent")
    tenant.contact(county="Essex")
    [made] = instances(tenant, "welcome")
    assert (made["contact_id"], made["status"], made["current_node"]) == (kent["id"], "waiting", "wait")


def test_tag_triggers_on_contact_tags_enrol_once(tenant: Tenant) -> None:
    tenant.template(waiting("leads", triggers=[{"on": "tag_added", "tag": "lead"}]))
    contact = tenant.contact()
    for _ in range(2):
        assert tenant.admin.post(f"/api/contacts/{contact['id']}/tags/lead").status_code == 200
        assert tenant.admin.delete(f"/api/contacts/{contact['id']}/tags/lead").status_code == 200
    assert len(instances(tenant, "leads")) == 1


def test_post_events_answers_what_it_touched(tenant: Tenant) -> None:
    tenant.template(
        waiting(
            "donors",
            triggers=[{"on": "event", "event": "donation", "where": "event.data.amount > 0"}],
            goals=[{"id": "gave-big", "on": "event", "event": "donation", "where": "event.data.amount >= 100"}],
        )
    )
    contact = tenant.contact()
    small = event(tenant, "donation", contact["id"], amount=5)
    assert small["resumed"] == []
    [started] = small["started"]
    assert small["goals_reached"] == []
    assert small["trigger_errors"] == []
    big = event(tenant, "donation", contact["id"], amount=500)
    assert big["started"] == []  # its instance ended in the same transaction; this one was not enrolled again
    assert big["goals_reached"] == [{"instance_id": started, "template_id": "donors", "goal": "gave-big"}]
    ended = tenant.admin.get(f"/api/instances/{started}").json()
    assert (ended["status"], ended["end_status"], ended["wake_at"]) == ("completed", "goal:gave-big", None)
    assert [e["type"] for e in ended["timeline"]][-2:] == ["goal_reached", "instance_completed"]


def test_a_failing_where_is_answered_and_shown_on_the_template(tenant: Tenant) -> None:
    made = tenant.template(waiting("broken", triggers=[{"on": "event", "event": "ping", "where": "contact.name + 1"}]))
    contact = tenant.contact()
    answer = event(tenant, "ping", contact["id"])
    assert answer["started"] == []
    [error] = answer["trigger_errors"]
    assert (error["kind"], error["which"], error["on"], error["contact_id"]) == ("trigger", "1", "event", contact["id"])
    assert error["message"].startswith("its where expression failed")
    shown = tenant.admin.get("/api/workflows/broken").json()
    assert [e["message"] for e in shown["trigger_errors"]] == [error["message"]]
    assert shown["version"] == made["version"]
    assert instances(tenant, "broken") == []


def test_an_unknown_contact_is_404_and_another_tenants_too(tenant: Tenant, make_tenant: Any) -> None:
    other = make_tenant().contact()
    for contact_id in ("nobody", other["id"]):
        answer = tenant.admin.post("/api/events", json={"name": "ping", "contact_id": contact_id})
        assert answer.status_code == 404, answer.text
        assert "no contact" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (
            {"goals": [{"id": "a", "on": "event", "event": "x"}, {"id": "a", "on": "tag_added", "tag": "t"}]},
            "goal_invalid",
        ),
        ({"goals": [{"id": "b", "on": "tag_added"}]}, "goal_invalid"),
        ({"goals": [{"id": "c", "on": "event", "event": "x", "where": "__import__('os')"}]}, "goal_invalid"),
    ],
)
def test_goal_problems_are_validation_errors(tenant: Tenant, extra: dict[str, Any], code: str) -> None:
    tenant.template(waiting("goals", **extra))
    report = tenant.admin.get("/api/workflows/goals/validate").json()
    assert report["valid"] is False
    assert code in [e["code"] for e in report["errors"]]


def test_a_goal_id_that_is_not_a_short_slug_is_refused(tenant: Tenant) -> None:
    answer = tenant.admin.post("/api/workflows", json=waiting("g", goals=[{"id": "x" * 60, "on": "contact_created"}]))
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"event": "Not A Slug"},
        {"event": "ok", "to": "everyone"},
        {"event": "ok", "extra": 1},
        {"event": "ok", "data": 3},
    ],
)
def test_emit_event_settings_are_checked_at_save(tenant: Tenant, config: dict[str, Any]) -> None:
    body = {
        "id": "emits",
        "name": "Emits",
        "start_node": "tell",
        "nodes": {
            "tell": {"type": "action", "action": "emit_event", "action_config": config, "transitions": {"sent": "end"}},
            "end": {"type": "end"},
        },
    }
    tenant.template(body)
    report = tenant.admin.get("/api/workflows/emits/validate").json()
    assert [e["code"] for e in report["errors"]] == ["emit_event_invalid"]
    assert report["errors"][0]["node"] == "tell"


def test_an_emit_event_node_without_sent_is_an_error(tenant: Tenant) -> None:
    body = {
        "id": "emits",
        "name": "Emits",
        "start_node": "tell",
        "nodes": {
            "tell": {
                "type": "action",
                "action": "emit_event",
                "action_config": {"event": "x"},
                "transitions": {"done": "end"},
            },
            "end": {"type": "end"},
        },
    }
    tenant.template(body)
    report = tenant.admin.get("/api/workflows/emits/validate").json()
    assert "emit_event_invalid" in [e["code"] for e in report["errors"]]


def test_the_contact_timeline_shows_contact_events(tenant: Tenant) -> None:
    contact = tenant.contact(tags=["a"])
    assert tenant.admin.patch(f"/api/contacts/{contact['id']}", json={"county": "Kent"}).status_code == 200
    tenant.admin.post(f"/api/contacts/{contact['id']}/tags/b")
    tenant.admin.put("/api/contacts/by-external-id/crm-9", json={"name": "Up Serted"})
    event(tenant, "rsvp", contact["id"], seats=2)
    items = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline").json()["items"]
    assert [e["type"] for e in items] == ["event_received", "contact_tag_added", "contact_updated", "contact_created"]
    assert items[2]["data"] == {"fields": ["county"], "source": "api"}
    assert items[3]["data"] == {"source": "api", "tags": ["a"]}
    assert all(e["instance_id"] is None and e["contact_id"] == contact["id"] for e in items)
