"""Consent over HTTP, on every store (workflows.md § Consent and contact rules; api.md § Campaign work): opt-outs
recorded and undone, what they do to the contact's instances (the `opted_out` outcome, cancellation, every template
at once), the work queue never handing out a refused task, and the errors of the routes."""

from __future__ import annotations

from typing import Any

import httpx

from conftest import Tenant


def outreach(template_id: str, *, first: str = "phone_call", with_outcome: bool = True) -> dict[str, Any]:
    """`reach` (an action of kind `first`, a person's task on a server without executors) then `letter` (mail);
    `reach` has the outcome `opted_out` (to `letter`) when `with_outcome`."""
    reach = {"done": "end", **({"opted_out": "letter"} if with_outcome else {})}
    return {
        "id": template_id,
        "name": template_id,
        "start_node": "reach",
        "nodes": {
            "reach": {"type": "action", "action": first, "transitions": reach},
            "letter": {"type": "action", "action": "mail", "transitions": {"done": "end"}},
            "end": {"type": "end"},
        },
    }


def ok(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    found: dict[str, Any] = answer.json()
    return found


def started(tenant: Tenant, contact_id: str, template_id: str) -> dict[str, Any]:
    body = {"contact_id": contact_id, "template_id": template_id, "start": True}
    return ok(tenant.admin.post("/api/instances", json=body), 201)


def instance(tenant: Tenant, instance_id: str) -> dict[str, Any]:
    return ok(tenant.admin.get(f"/api/instances/{instance_id}"))


def timeline(client: httpx.Client, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(client.get(path, params={"limit": 200}))["items"]
    return items


def test_opting_out_of_every_channel_cancels_every_unfinished_instance_in_every_template(tenant: Tenant) -> None:
    tenant.template(outreach("calls"))
    tenant.template(outreach("letters", first="mail"))
    contact = tenant.contact(phone="+15550101234")
    other = tenant.contact(name="Someone Else")
    calls = started(tenant, contact["id"], "calls")
    letters = started(tenant, contact["id"], "letters")
    paused = started(tenant, contact["id"], "calls")  # a second run, paused: unfinished too
    ok(tenant.admin.post(f"/api/instances/{paused['id']}/pause", json={}))
    untouched = started(tenant, other["id"], "calls")

    answer = ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"reason": "asked on the phone"}))

    assert set(answer["opted_out"]) == {"sms", "email", "phone", "door", "mail"}
    for made in (calls, letters, paused):
        found = instance(tenant, made["id"])
        assert found["status"] == "cancelled", found
        assert found["task_since"] is None
        cancelled = [e for e in found["timeline"] if e["type"] == "instance_cancelled"]
        assert cancelled[-1]["data"]["reason"] == "the contact opted out of every channel"
    assert instance(tenant, untouched["id"])["status"] == "active"
    events = timeline(tenant.admin, f"/api/contacts/{contact['id']}/timeline")
    [opted] = [e for e in events if e["type"] == "contact_opted_out"]
    assert opted["instance_id"] is None
    assert opted["data"]["reason"] == "asked on the phone"
    assert sorted(opted["data"]["channels"]) == ["door", "email", "mail", "phone", "sms"]
    assert ok(tenant.admin.get(f"/api/contacts/{contact['id']}"))["opted_out"] == answer["opted_out"]


def test_a_task_on_a_refused_channel_takes_opted_out_or_the_instance_is_cancelled(tenant: Tenant) -> None:
    tenant.template(outreach("with-outcome"))
    tenant.template(outreach("without-outcome", with_outcome=False))
    tenant.template(outreach("texts", first="sms"))
    contact = tenant.contact()
    follows = started(tenant, contact["id"], "with-outcome")
    stops = started(tenant, contact["id"], "without-outcome")
    texts = started(tenant, contact["id"], "texts")

    answer = ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["phone"]}))
    assert list(answer["opted_out"]) == ["phone"]

    moved = instance(tenant, follows["id"])
    assert (moved["status"], moved["current_node"]) == ("active", "letter")  # a task again: the letter
    [exited] = [e for e in moved["timeline"] if e["type"] == "node_exited"]
    assert (exited["node_id"], exited["data"]["outcome"], exited["data"]["channel"]) == ("reach", "opted_out", "phone")
    assert exited["actor"] == "system"

    cancelled = instance(tenant, stops["id"])
    assert cancelled["status"] == "cancelled"
    [failed] = [e for e in cancelled["timeline"] if e["type"] == "action_failed"]
    assert "opted out of phone" in failed["data"]["error"]
    assert failed["data"]["channel"] == "phone"

    assert instance(tenant, texts["id"])["current_node"] == "reach"  # sms is still allowed
    assert instance(tenant, texts["id"])["status"] == "active"


def test_an_instance_reaching_a_refused_channel_later_never_becomes_a_task(tenant: Tenant) -> None:
    tenant.template(outreach("calls"))
    contact = tenant.contact()
    ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["phone", "mail"]}))
    made = started(tenant, contact["id"], "calls")
    # reach (phone, refused) → opted_out → letter (mail, refused, no opted_out outcome) → cancelled, in one step
    assert made["status"] == "cancelled"
    types = [e["type"] for e in instance(tenant, made["id"])["timeline"]]
    assert types.count("node_exited") == 1
    assert "action_failed" in types
    assert tenant.admin.post("/api/tasks/claim", json={"template_id": "calls"}).status_code == 204


def test_a_paused_task_refused_meanwhile_never_comes_back_to_the_queue(tenant: Tenant) -> None:
    """A paused instance is left alone by an opt-out; resumed, its task is refused at once, not handed out."""
    tenant.template(outreach("paused-calls", with_outcome=False))
    refused = tenant.contact(name="Refused")
    allowed = tenant.contact(name="Allowed")
    held_back = started(tenant, refused["id"], "paused-calls")
    ok(tenant.admin.post(f"/api/instances/{held_back['id']}/pause", json={}))
    ok(tenant.admin.post(f"/api/contacts/{refused['id']}/opt-out", json={"channels": ["phone"]}))
    assert instance(tenant, held_back["id"])["status"] == "paused"
    resumed = ok(tenant.admin.post(f"/api/instances/{held_back['id']}/resume", json={}))
    assert resumed["status"] == "cancelled"
    later = started(tenant, allowed["id"], "paused-calls")

    volunteer = tenant.as_role("volunteer")
    claimed = ok(volunteer.post("/api/tasks/claim", json={"template_id": "paused-calls"}))
    assert claimed["instance_id"] == later["id"]
    assert volunteer.post("/api/tasks/claim", json={"template_id": "paused-calls"}).status_code == 204
    tasks = ok(tenant.admin.get("/api/tasks", params={"template_id": "paused-calls"}))["items"]
    assert [t["instance_id"] for t in tasks] == [later["id"]]


def test_opting_out_again_keeps_the_first_time_and_writes_no_second_event(tenant: Tenant) -> None:
    contact = tenant.contact()
    first = ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["sms"]}))
    again = ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["sms", "sms"]}))
    assert again["opted_out"] == first["opted_out"]
    events = timeline(tenant.admin, f"/api/contacts/{contact['id']}/timeline")
    assert [e["type"] for e in events].count("contact_opted_out") == 1


def test_an_admin_undoes_one_channel_or_all_and_cancelled_instances_stay_cancelled(tenant: Tenant) -> None:
    tenant.template(outreach("calls", with_outcome=False))
    contact = tenant.contact()
    made = started(tenant, contact["id"], "calls")
    ok(tenant.admin.post(f"/api/contacts/{contact['id']}/opt-out", json={"channels": ["phone", "sms", "email"]}))

    staff = tenant.as_role("staff")
    refused = staff.delete(f"/api/contacts/{contact['id']}/opt-out", params={"channel": "sms"})
    assert refused.status_code == 403, refused.text

    one = ok(tenant.admin.delete(f"/api/contacts/{contact['id']}/opt-out", params={"channel": "sms"}))
    assert sorted(one["opted_out"]) == ["email", "phone"]
    rest = ok(tenant.admin.delete(f"/api/contacts/{contact['id']}/opt-out"))
    assert rest["opted_out"] == {}
    events = timeline(tenant.admin, f"/api/contacts/{contact['id']}/timeline")
    opted_in = [e["data"]["channels"] for e in events if e["type"] == "contact_opted_in"]
    assert opted_in == [["email", "phone"], ["sms"]]  # newest first
    assert instance(tenant, made["id"])["status"] == "cancelled"


def test_a_volunteer_records_an_opt_out_only_for_the_contact_of_a_task_it_holds(tenant: Tenant) -> None:
    tenant.template(outreach("calls"))
    mine = tenant.contact(name="Mine")
    theirs = tenant.contact(name="Theirs")
    made = started(tenant, mine["id"], "calls")
    volunteer = tenant.as_role("volunteer")
    assert volunteer.post(f"/api/contacts/{mine['id']}/opt-out", json={}).status_code == 403
    ok(volunteer.post("/api/tasks/claim", json={"template_id": "calls"}))

    answer = ok(volunteer.post(f"/api/contacts/{mine['id']}/opt-out", json={"channels": ["phone"]}))
    assert list(answer["opted_out"]) == ["phone"]
    assert instance(tenant, made["id"])["current_node"] == "letter"  # the call is off; the letter is next
    assert volunteer.post(f"/api/contacts/{theirs['id']}/opt-out", json={}).status_code == 403
    assert tenant.as_role("viewer").post(f"/api/contacts/{mine['id']}/opt-out", json={}).status_code == 403


def test_bad_opt_out_requests_get_a_clear_4xx(tenant: Tenant, make_tenant: Any) -> None:
    contact = tenant.contact()
    path = f"/api/contacts/{contact['id']}/opt-out"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channels": []}, "channels"),
        ({"channels": ["fax"]}, "channels"),
        ({"channels": "sms"}, "channels"),
        ({"reason": "x" * 501}, "reason"),
        ({"reason": ""}, "reason"),
        ({"everything": True}, "everything"),
    ]
    for body, field in cases:
        answer = tenant.admin.post(path, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text
        assert answer.json()["detail"], answer.text
    bad_channel = tenant.admin.delete(path, params={"channel": "fax"})
    assert bad_channel.status_code == 422
    assert "channel" in bad_channel.text
    assert tenant.admin.post("/api/contacts/nobody/opt-out", json={}).status_code == 404
    assert tenant.admin.delete("/api/contacts/nobody/opt-out").status_code == 404
    stranger = make_tenant()
    assert stranger.admin.post(path, json={}).status_code == 404  # another tenant's contact: not found
    assert stranger.admin.delete(path).status_code == 404
    assert ok(tenant.admin.get(f"/api/contacts/{contact['id']}"))["opted_out"] == {}


def test_a_contact_time_zone_is_an_iana_name(tenant: Tenant) -> None:
    made = tenant.contact(timezone="America/Los_Angeles")
    assert made["timezone"] == "America/Los_Angeles"
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"timezone": "Pacific Time"})
    assert answer.status_code == 422
    assert "IANA time zone" in answer.json()["detail"], answer.text
    cleared = ok(tenant.admin.patch(f"/api/contacts/{made['id']}", json={"timezone": None}))
    assert cleared["timezone"] is None
    events = timeline(tenant.admin, f"/api/contacts/{made['id']}/timeline")
    assert any(e["type"] == "contact_updated" and "timezone" in e["data"]["fields"] for e in events)
