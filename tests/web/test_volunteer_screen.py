"""/next, the volunteer's screen, over HTTP on SQLite (ONE_STORE: a page only calls the services, whose storage the
store and sign-in suites test on every store): claim, the contact and script, outcomes with a note, the next task at
once, skip, none left, and who may see what."""

from __future__ import annotations

import re
from typing import Any

import httpx

from conftest import ONE_STORE, Tenant
from pages import form_fields, form_token, signed_in, text_of

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def claim(client: httpx.Client, **filters: str) -> httpx.Response:
    page = client.get("/next", params=filters)
    assert page.status_code == 200, page.text
    answer = client.post("/next/claim", data={"csrf": form_token(page), **filters})
    assert answer.status_code == 303, answer.text
    return client.get(answer.headers["location"])


def press(client: httpx.Client, page: httpx.Response, outcome: str, notes: str = "") -> httpx.Response:
    """Press an outcome's button, as a browser sends the form: its hidden fields, the notes, the button's value."""
    action, hidden = form_fields(page, r"/next/[0-9a-f]+/outcome")
    answer = client.post(action, data={**hidden, "outcome": outcome, "notes": notes})
    assert answer.status_code == 303, answer.text
    return client.get(answer.headers["location"])


def started(tenant: Tenant, **contact: Any) -> dict[str, Any]:
    return tenant.instance(tenant.contact(**contact)["id"], start=True)


@ONE_STORE
def test_a_volunteer_claims_records_and_gets_the_next_task_at_once(tenant: Tenant) -> None:
    first = started(tenant, name="Ada Lovelace", phone="(555) 201-3344", tags=["voter"], metadata={"city": "Dover"})
    second = started(tenant, name="Grace Hopper")
    client, user = signed_in(tenant, "volunteer")
    assert client.get("/").headers["location"] == "/next"  # volunteers land on their screen
    landing = client.get("/next")
    assert ">Next task</button>" in landing.text
    page = claim(client)
    text = text_of(page)
    assert "Ada Lovelace" in text
    assert 'href="tel:+15552013344"' in page.text
    assert "Dover" in text
    assert "voter" in text
    assert "Initial phone call" in text
    assert "intro_script_v1" in text  # the node's settings, the script's id here
    for outcome in ("answered_interested", "answered_not_interested", "no_answer", "voicemail"):
        assert f'value="{outcome}"' in page.text
    assert '<label for="notes">Notes</label>' in page.text
    after = press(client, page, "no_answer", notes="rang twice")
    assert "Saved." in text_of(after)
    assert "Grace Hopper" in text_of(after)  # the next task, claimed at once
    timeline = tenant.admin.get(f"/api/instances/{first['id']}/timeline").json()["items"]
    action = next(e for e in timeline if e["type"] == "user_action")
    assert action["actor"] == user["id"]
    assert "rang twice" in str(action["data"])
    moved = tenant.admin.get(f"/api/instances/{first['id']}").json()
    assert moved["current_node"] == "schedule_door"
    held = tenant.admin.get("/api/tasks", params={"template_id": second["template_id"]}).json()["items"]
    assert {t["instance_id"]: t["held_by"] for t in held}[second["id"]] == user["id"]


@ONE_STORE
def test_a_reload_shows_the_held_task_instead_of_claiming_another(tenant: Tenant) -> None:
    started(tenant, name="First")
    started(tenant, name="Second")
    client, _ = signed_in(tenant, "volunteer")
    assert "First" in text_of(claim(client))
    again = client.get("/next")
    assert "First" in text_of(again)
    holders = [t["held_by"] for t in tenant.admin.get("/api/tasks").json()["items"]]
    assert holders.count(None) == 1  # only one was claimed


@ONE_STORE
def test_skip_gives_the_task_back_and_shows_another(tenant: Tenant) -> None:
    first = started(tenant, name="First")
    started(tenant, name="Second")
    client, _ = signed_in(tenant, "volunteer")
    page = claim(client)
    assert "First" in text_of(page)
    action, hidden = form_fields(page, r"/next/[0-9a-f]+/skip")
    skipped = client.post(action, data=hidden)
    assert skipped.status_code == 303
    shown = client.get(skipped.headers["location"])
    assert "Second" in text_of(shown)
    assert "back in the queue" in text_of(shown)
    tasks = {t["instance_id"]: t["held_by"] for t in tenant.admin.get("/api/tasks").json()["items"]}
    assert tasks[first["id"]] is None


@ONE_STORE
def test_with_none_left_the_page_says_so(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "volunteer")
    page = claim(client)
    assert "No tasks left" in text_of(page)
    filtered = claim(client, action="door_canvass")
    assert "No tasks left" in text_of(filtered)
    assert 'name="action" value="door_canvass"' in filtered.text  # the filter stays in the page


@ONE_STORE
def test_the_claim_filters_ride_along(tenant: Tenant) -> None:
    instance = started(tenant, name="Walker", county="Kent")
    client, _ = signed_in(tenant, "volunteer")
    page = claim(client, action="door_canvass")
    assert "No tasks left" in text_of(page)
    page = claim(client, action="phone_call", county="Kent")
    assert "Walker" in text_of(page)
    after = press(client, page, "no_answer")
    assert "No tasks left" in text_of(after)  # the door knock is not a phone call: the filter kept it out
    assert 'name="action" value="phone_call"' in after.text
    assert tenant.admin.get(f"/api/instances/{instance['id']}").json()["current_node"] == "schedule_door"


@ONE_STORE
def test_what_a_user_typed_is_shown_as_text(tenant: Tenant) -> None:
    started(tenant, name=HOSTILE, tags=["x"], metadata={"address": HOSTILE}, email="spy?bcc=me%40evil.example@ex.org")
    client, _ = signed_in(tenant, "volunteer")
    page = claim(client)
    assert "<script>alert(1)</script>" not in page.text
    assert "<img src=x" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert HOSTILE in text_of(page)
    assert 'href="mailto:spy?bcc' not in page.text  # an address cannot add hidden recipients to the mail link
    assert 'href="mailto:spy%3Fbcc%3Dme%2540evil.example%40ex.org"' in page.text


@ONE_STORE
def test_a_stale_page_does_not_record_twice(tenant: Tenant) -> None:
    started(tenant, name="Once")
    client, _ = signed_in(tenant, "volunteer")
    page = claim(client)
    press(client, page, "no_answer")
    action = re.search(r'action="(/next/[0-9a-f]+/outcome)"', page.text)
    assert action
    again = client.post(
        action.group(1),
        data={"csrf": form_token(page), "outcome": "no_answer", "expected_node": "initial_call"},
    )
    assert again.status_code in (403, 409)
    assert "Not saved" in text_of(again)


@ONE_STORE
def test_roles(tenant: Tenant) -> None:
    viewer, _ = signed_in(tenant, "viewer")
    refused = viewer.get("/next")
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    assert viewer.get("/").status_code == 200  # the dashboard reads
    staff, _ = signed_in(tenant, "staff")
    assert staff.get("/next").status_code == 200


@ONE_STORE
def test_a_volunteer_cannot_record_on_a_task_it_does_not_hold(tenant: Tenant) -> None:
    instance = started(tenant, name="Held elsewhere")
    holder, _ = signed_in(tenant, "volunteer")
    claim(holder)
    other, _ = signed_in(tenant, "volunteer")
    page = other.get("/next")
    answer = other.post(
        f"/next/{instance['id']}/outcome",
        data={"csrf": form_token(page), "outcome": "no_answer", "expected_node": "initial_call"},
    )
    assert answer.status_code == 403
    assert "Held elsewhere" not in answer.text
    assert tenant.admin.get(f"/api/instances/{instance['id']}").json()["current_node"] == "initial_call"


@ONE_STORE
def test_the_dashboard_shows_each_templates_funnel(tenant: Tenant) -> None:
    for name in ("A", "B"):
        started(tenant, name=name)
    client, _ = signed_in(tenant, "staff")
    page = client.get("/")
    text = text_of(page)
    assert "County outreach" in text
    assert "Initial phone call 2" in text
    assert "Reached (success) finished 0" in text
