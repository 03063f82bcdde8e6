"""/instances and /instances/{id} over HTTP on SQLite (ONE_STORE: a page only calls the services, whose storage the
store and sign-in suites test on every store): the filtered, paged list; an instance with its drawing, state, tags
and timeline; the live timeline's stream; the lifecycle buttons, notes and moves with what they refuse; who may see
and do what; another tenant's instance; what a user typed shown as text."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import httpx
import pytest

from conftest import ONE_STORE, Tenant
from pages import form_fields, form_token, signed_in, text_of

HOSTILE = "<script>alert(1)</script>"
Json = dict[str, Any]

SHARE = {  # a heuristic that divides by zero when `households` is 0: the instance fails at `share`
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
        "done": {"type": "end", "end_status": "reached"},
    },
}


def ok(answer: httpx.Response, status: int = 200) -> httpx.Response:
    assert answer.status_code == status, f"{answer.status_code} {answer.text[:3000]}"
    return answer


def follow(client: httpx.Client, answer: httpx.Response) -> httpx.Response:
    assert answer.status_code == 303, f"{answer.status_code} {answer.text[:3000]}"
    return ok(client.get(answer.headers["location"]))


def press(client: httpx.Client, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
    """Send the page's form for `action` (start, pause, notes, move...) as a browser does: its hidden fields too."""
    target, hidden = form_fields(page, r"/instances/[0-9a-f]+/" + action + r"(?:#[a-z-]+)?")
    return client.post(target, data={**hidden, **fields})


def started(tenant: Tenant, name: str = "Ada Lovelace", **extra: Any) -> Json:
    contact = tenant.contact(name=name)
    return tenant.instance(contact["id"], start=True, **extra)


def api(tenant: Tenant, instance_id: str) -> Json:
    found: Json = ok(tenant.admin.get(f"/api/instances/{instance_id}")).json()
    return found


# ---------------------------------------------------------------------------------------------------- the list


@ONE_STORE
def test_the_list_shows_each_instance_and_links_to_it(tenant: Tenant) -> None:
    first = started(tenant, "Ada Lovelace", tags=["spring"])
    second = tenant.instance(tenant.contact(name="Grace Hopper")["id"])
    client, _ = signed_in(tenant, "viewer")
    page = ok(client.get("/instances"))
    text = text_of(page)
    assert "Ada Lovelace" in text
    assert "Grace Hopper" in text
    assert "County outreach" in text  # the template's name
    assert "Active" in text
    assert "Not started" in text
    assert "Initial phone call" in text  # the step the started one is at
    assert f'href="/instances/{first["id"]}"' in page.text
    assert f'href="/instances/{second["id"]}"' in page.text
    assert text.index("Grace Hopper") < text.index("Ada Lovelace")  # newest first
    for label in ("Template", "Step", "Status", "Tags"):
        assert re.search(rf'<label for="[^"]+">{label}</label>', page.text), label


@ONE_STORE
def test_the_filters_narrow_the_list_and_stay_in_the_form(tenant: Tenant) -> None:
    tagged = started(tenant, "Tagged Person", tags=["spring", "phone-bank"])
    started(tenant, "Plain Person")
    pending = tenant.instance(tenant.contact(name="Waiting Person")["id"])
    tenant.template(SHARE)
    other = tenant.instance(tenant.contact(name="Other Template")["id"], template_id=SHARE["id"])
    client, _ = signed_in(tenant, "staff")

    def names(**params: str) -> set[str]:
        page = ok(client.get("/instances", params=params))
        return {n for n in ("Tagged Person", "Plain Person", "Waiting Person", "Other Template") if n in text_of(page)}

    assert names() == {"Tagged Person", "Plain Person", "Waiting Person", "Other Template"}
    assert names(status="pending") == {"Waiting Person", "Other Template"}
    assert names(status="active", tag="spring") == {"Tagged Person"}
    assert names(tag="spring, phone-bank") == {"Tagged Person"}
    assert names(tag="spring autumn") == set()
    assert names(template_id=SHARE["id"]) == {"Other Template"}
    assert names(current_node="initial_call") == {"Tagged Person", "Plain Person"}
    assert names(contact_id=pending["contact_id"]) == {"Waiting Person"}
    chosen = {"status": "active", "tag": "spring", "template_id": tagged["template_id"]}
    page = ok(client.get("/instances", params=chosen))
    assert '<option value="active" selected>' in page.text
    assert 'name="tag" value="spring"' in page.text
    assert f'<option value="{tagged["template_id"]}" selected>' in page.text
    assert "initial_call" in page.text  # the template's steps are offered for the step filter
    assert other["id"] not in page.text


@ONE_STORE
def test_bad_filters_are_shown_above_the_form(tenant: Tenant) -> None:
    started(tenant)
    client, _ = signed_in(tenant, "viewer")
    for params, says in (
        ({"status": "sleeping"}, "is not a status"),
        ({"tag": "Not A Slug!"}, "is not a tag"),
        ({"current_node": "x" * 65}, "at most 64 characters"),
        ({"template_id": "bad\x01id"}, "at most 64 characters, on one line"),
        ({"tag": ",".join(f"t{n}" for n in range(21))}, "at most 20"),
    ):
        page = client.get("/instances", params=params)
        assert page.status_code == 422, page.text
        assert says in text_of(page), params
        assert 'class="error" role="alert"' in page.text
        assert "Show instances" in page.text  # the form is still there
    bad_cursor = ok(client.get("/instances", params={"cursor": "not-a-cursor"}))
    assert "no longer valid" in text_of(bad_cursor)
    assert "Ada Lovelace" in text_of(bad_cursor)


@ONE_STORE
def test_the_list_is_paged_fifty_at_a_time_with_the_filters_kept(tenant: Tenant) -> None:
    contact = tenant.contact(name="Many Runs")
    made = [tenant.instance(contact["id"], tags=["batch"]) for _ in range(52)]
    started(tenant, "Not In The Batch")
    client, _ = signed_in(tenant, "admin")
    first = ok(client.get("/instances", params={"tag": "batch", "status": "pending"}))
    assert first.text.count('<tr>\n      <th scope="row"') == 50
    found = re.search(r'href="(/instances\?[^"]*cursor=[^"]+)" rel="next">Next page', first.text)
    assert found, first.text[-3000:]
    link = found.group(1).replace("&amp;", "&")
    assert "tag=batch" in link
    assert "status=pending" in link
    second = ok(client.get(link))
    assert second.text.count('<tr>\n      <th scope="row"') == 2
    assert "Next page" not in second.text
    assert "First page" in second.text
    shown = set(re.findall(r'href="/instances/([0-9a-f]{12})"', first.text + second.text))
    assert shown == {i["id"] for i in made}


# ---------------------------------------------------------------------------------------------------- one instance


@ONE_STORE
def test_an_instance_page_shows_where_it_stands(tenant: Tenant) -> None:
    instance = started(tenant, "Ada Lovelace", tags=["spring"], initial_state={"households": 3, "notes": "dog"})
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"}))
    client, _ = signed_in(tenant, "viewer")
    page = ok(client.get(f"/instances/{instance['id']}"))
    text = text_of(page)
    assert '<h1 id="instance-title">Ada Lovelace</h1>' in page.text
    assert '<span id="instance-status" class="status status-active">Active</span>' in page.text
    assert "Door knock" in text  # the step it is at now
    assert f'href="/contacts/{instance["contact_id"]}"' in page.text
    assert f'href="/workflows/{instance["template_id"]}"' in page.text
    assert "County outreach" in text
    assert "spring" in text
    state = re.search(r"<pre>(.*?)</pre>", page.text, re.S)
    assert state
    assert json.loads(state.group(1).replace("&#34;", '"')) == {"households": 3, "notes": "dog"}
    assert f'<img id="instance-diagram" src="/instances/{instance["id"]}/diagram.svg"' in page.text
    assert '<script src="/static/timeline.js" defer></script>' in page.text
    assert "Entered Initial phone call" in text
    assert "Recorded no_answer" in text
    assert "Entered Door knock" in text
    assert "by an API token" in text or "by API token" in text  # who did it, by name
    timeline = re.search(r'<ol id="timeline" class="timeline" data-stream="([^"]+)" data-after="(\d+)">', page.text)
    assert timeline, page.text
    assert timeline.group(1) == f"/instances/{instance['id']}/events"
    events = ok(tenant.admin.get(f"/api/instances/{instance['id']}/timeline")).json()["items"]
    assert int(timeline.group(2)) == events[-1]["sequence"]  # the live timeline resumes after the last one shown
    assert page.text.count("<li data-seq=") == len(events)
    assert 'method="post" action="/instances' not in page.text  # a viewer sees no buttons


@ONE_STORE
def test_the_drawing_highlights_the_instance_and_is_session_authenticated(tenant: Tenant) -> None:
    instance = started(tenant)
    client, _ = signed_in(tenant, "viewer")
    drawn = ok(client.get(f"/instances/{instance['id']}/diagram.svg"))
    assert drawn.headers["content-type"].startswith("image/svg+xml")
    assert drawn.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in drawn.headers["content-security-policy"]
    assert drawn.text.lstrip().startswith("<svg")
    assert 'data-node="initial_call"' in drawn.text
    assert 'stroke-width="4"' in drawn.text  # the current step's thick outline
    assert 'opacity="0.4"' in drawn.text  # the steps not yet walked are dimmed
    stranger = httpx.get(f"{tenant.server.base_url}/instances/{instance['id']}/diagram.svg")
    assert stranger.status_code == 303  # no session: sent to sign in
    assert stranger.headers["location"].startswith("/login")
    token = httpx.get(
        f"{tenant.server.base_url}/instances/{instance['id']}/diagram.svg",
        headers={"Authorization": f"Bearer {tenant.admin_token}"},
    )
    assert token.status_code == 303  # a token never opens a page


@ONE_STORE
def test_the_timeline_is_paged_oldest_first(tenant: Tenant) -> None:
    instance = started(tenant)
    for n in range(50):
        ok(tenant.admin.post(f"/api/instances/{instance['id']}/notes", json={"text": f"note number {n}"}))
    client, _ = signed_in(tenant, "staff")
    page = ok(client.get(f"/instances/{instance['id']}"))
    assert page.text.count("<li data-seq=") == 50
    assert "data-stream=" not in page.text  # not the last page: nothing to follow here
    assert "Newer events are on the next page" in text_of(page)
    found = re.search(r'href="(/instances/[0-9a-f]+\?cursor=[^"]+)" rel="next"', page.text)
    assert found
    later = ok(client.get(found.group(1).replace("&amp;", "&")))
    assert "note number 49" in text_of(later)
    assert "note number 0" not in text_of(later)
    assert "data-stream=" in later.text
    bad = ok(client.get(f"/instances/{instance['id']}", params={"cursor": "nonsense"}))
    assert "no longer valid" in text_of(bad)


def read_messages(response: httpx.Response, count: int) -> list[Json]:
    """The first `count` timeline messages of a Server-Sent Events answer."""
    messages: list[Json] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields.get("event") == "timeline":
                body: Json = json.loads(fields["data"])
                body["id"] = fields.get("id")
                messages.append(body)
                if len(messages) >= count:
                    return messages
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value
    return messages


@ONE_STORE
def test_the_live_timeline_sends_new_events_and_where_the_instance_stands(tenant: Tenant) -> None:
    instance = started(tenant)
    other = started(tenant, "Someone Else")
    client, _ = signed_in(tenant, "viewer")
    page = ok(client.get(f"/instances/{instance['id']}"))
    after = re.search(r'data-after="(\d+)"', page.text)
    assert after
    got: list[Json] = []

    def listen() -> None:
        with client.stream(
            "GET", f"/instances/{instance['id']}/events", params={"after": after.group(1)}, timeout=20
        ) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/event-stream")
            got.extend(read_messages(answer, 3))

    listening = threading.Thread(target=listen)
    listening.start()
    ok(tenant.admin.post(f"/api/instances/{other['id']}/notes", json={"text": "not this one"}))
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer", "note": "x"}))
    listening.join(30)
    assert not listening.is_alive()
    messages = [m["event"]["message"] for m in got]
    assert "Entered Door knock" in messages
    assert all("not this one" not in m for m in messages)
    last = got[-1]
    assert last["instance"] == {
        "status": "active",
        "status_word": "Active",
        "current_node": "schedule_door",
        "where": "Door knock",
    }
    assert int(last["id"]) > int(after.group(1))
    action = next(m["event"] for m in got if m["event"]["type"] == "user_action")
    assert action["actor"].startswith(("API token", "an API token"))  # a name, not the token's id


@ONE_STORE
def test_the_live_timeline_resumes_after_last_event_id_and_refuses_what_it_cannot_follow(tenant: Tenant) -> None:
    instance = started(tenant)
    events = ok(tenant.admin.get(f"/api/instances/{instance['id']}/timeline")).json()["items"]
    client, _ = signed_in(tenant, "viewer")
    first = events[0]["sequence"]
    with client.stream(
        "GET", f"/instances/{instance['id']}/events", headers={"Last-Event-ID": str(first)}, params={"after": "0"}
    ) as answer:
        replayed = read_messages(answer, len(events) - 1)
    assert [int(m["id"]) for m in replayed] == [e["sequence"] for e in events[1:]]
    bad = client.get(f"/instances/{instance['id']}/events", params={"after": "yesterday"})
    assert bad.status_code == 422
    missing = client.get("/instances/0123456789ab/events")
    assert missing.status_code == 404
    volunteer, _ = signed_in(tenant, "volunteer")
    assert volunteer.get(f"/instances/{instance['id']}/events").status_code == 403


# ---------------------------------------------------------------------------------------------------- changes


@ONE_STORE
def test_staff_start_pause_resume_and_cancel_from_the_page(tenant: Tenant) -> None:
    instance = tenant.instance(tenant.contact(name="Lifecycle")["id"])
    client, user = signed_in(tenant, "staff")
    url = f"/instances/{instance['id']}"
    page = ok(client.get(url))
    assert re.search(rf'action="{url}/start#actions" data-when="pending">', page.text)  # shown
    # hidden until it is active
    assert re.search(rf'action="{url}/pause#actions" data-when="active waiting" hidden>', page.text)
    assert f'action="{url}/move"' not in page.text  # moving is for admins
    page = follow(client, press(client, page, "start"))
    assert "Started." in text_of(page)
    assert api(tenant, instance["id"])["status"] == "active"
    page = follow(client, press(client, page, "pause"))
    assert "Paused" in text_of(page)
    assert api(tenant, instance["id"])["status"] == "paused"
    page = follow(client, press(client, page, "resume"))
    assert api(tenant, instance["id"])["status"] == "active"
    page = follow(client, press(client, page, "cancel", reason="Moved out of the county"))
    assert "Cancelled." in text_of(page)
    found = api(tenant, instance["id"])
    assert found["status"] == "cancelled"
    cancelled = next(e for e in found["timeline"] if e["type"] == "instance_cancelled")
    assert cancelled["actor"] == user["id"]
    assert "Moved out of the county" in json.dumps(cancelled)
    assert "A staff" in text_of(page)  # the person's name in the timeline


@ONE_STORE
def test_a_change_the_instance_no_longer_allows_is_shown_on_the_page(tenant: Tenant) -> None:
    instance = started(tenant, "Stale Page")
    client, _ = signed_in(tenant, "staff")
    page = ok(client.get(f"/instances/{instance['id']}"))
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/cancel"))  # someone else, meanwhile
    refused = press(client, page, "pause")
    assert refused.status_code == 409
    assert "Not done" in text_of(refused)
    assert 'class="error" role="alert"' in refused.text
    assert '<span id="instance-status" class="status status-cancelled">' in refused.text  # as it stands now
    assert api(tenant, instance["id"])["status"] == "cancelled"


@ONE_STORE
def test_a_failed_instance_can_be_retried(tenant: Tenant) -> None:
    tenant.template(SHARE)
    instance = tenant.instance(
        tenant.contact(name="Divides")["id"], template_id=SHARE["id"], start=True, initial_state={"households": 0}
    )
    assert instance["status"] == "failed"
    client, _ = signed_in(tenant, "staff")
    page = ok(client.get(f"/instances/{instance['id']}"))
    assert "Failed" in text_of(page)
    assert re.search(r'action="/instances/[0-9a-f]+/retry#actions" data-when="failed">', page.text)
    after = follow(client, press(client, page, "retry"))
    assert "Retried" in text_of(after)
    kinds = [e["type"] for e in api(tenant, instance["id"])["timeline"]]
    assert "instance_retried" in kinds


@ONE_STORE
def test_notes_are_added_and_an_empty_one_is_refused_on_the_page(tenant: Tenant) -> None:
    instance = started(tenant)
    client, _ = signed_in(tenant, "staff")
    page = ok(client.get(f"/instances/{instance['id']}"))
    assert '<label for="note-text">Add a note</label>' in page.text
    after = follow(client, press(client, page, "notes", text="Prefers texts after 6 pm"))
    assert "Note added." in text_of(after)
    assert "Prefers texts after 6 pm" in text_of(after)
    empty = press(client, page, "notes", text="   ")
    assert empty.status_code == 422
    assert "Note: this is needed." in text_of(empty)
    long = press(client, page, "notes", text="x" * 10_001)
    assert long.status_code == 422
    assert "too long" in text_of(long)
    assert 'name="text" rows="3" maxlength="10000">xxxx' in long.text  # what was typed stays in the field


@ONE_STORE
def test_an_admin_moves_an_instance_with_a_reason(tenant: Tenant) -> None:
    instance = started(tenant)
    client, _ = signed_in(tenant, "admin")
    page = ok(client.get(f"/instances/{instance['id']}"))
    assert '<label for="move-node">Step</label>' in page.text
    assert '<option value="send_postcard">Mail a postcard (send_postcard)</option>' in page.text
    missing = press(client, page, "move", node="send_postcard", reason="")
    assert missing.status_code == 422
    assert "Reason: this is needed." in text_of(missing)
    unknown = press(client, page, "move", node="no_such_step", reason="testing")
    assert unknown.status_code == 422
    assert "no_such_step" in text_of(unknown)
    assert 'name="reason" maxlength="500" required value="testing"' in unknown.text
    after = follow(client, press(client, page, "move", node="send_postcard", reason="asked for a postcard"))
    assert "Moved." in text_of(after)
    found = api(tenant, instance["id"])
    assert found["current_node"] == "send_postcard"
    moved = next(e for e in found["timeline"] if e["type"] == "instance_moved")
    assert moved["data"]["reason"] == "asked for a postcard"


@ONE_STORE
def test_forms_without_the_token_are_refused(tenant: Tenant) -> None:
    instance = tenant.instance(tenant.contact(name="Guarded")["id"])
    client, _ = signed_in(tenant, "admin")
    url = f"/instances/{instance['id']}"
    for action, fields in (
        ("start", {}),
        ("cancel", {}),
        ("notes", {"text": "hi"}),
        ("move", {"node": "initial_call", "reason": "x"}),
    ):
        refused = client.post(f"{url}/{action}", data=fields)
        assert refused.status_code == 403, action
        assert refused.headers["content-type"].startswith("text/html")
        wrong = client.post(f"{url}/{action}", data={**fields, "csrf": "not-the-token"})
        assert wrong.status_code == 403, action
    page = ok(client.get(url))
    crossed = client.post(f"{url}/start", data={"csrf": form_token(page)}, headers={"Origin": "https://evil.example"})
    assert crossed.status_code == 403
    found = api(tenant, instance["id"])
    assert found["status"] == "pending"
    assert [e["type"] for e in found["timeline"]] == ["instance_created"]


# ---------------------------------------------------------------------------------------------------- who may


@ONE_STORE
def test_roles(tenant: Tenant) -> None:
    instance = started(tenant)
    url = f"/instances/{instance['id']}"
    volunteer, _ = signed_in(tenant, "volunteer")
    for path in ("/instances", url, f"{url}/diagram.svg", f"{url}/events"):
        refused = volunteer.get(path)
        assert refused.status_code == 403, path
    viewer, _ = signed_in(tenant, "viewer")
    page = ok(viewer.get(url))
    assert 'method="post" action="/instances' not in page.text  # no buttons
    token = form_token(page)  # the sign-out form's: a viewer's valid token
    for action, fields in (("pause", {}), ("cancel", {}), ("notes", {"text": "hi"}), ("move", {"node": "x"})):
        refused = viewer.post(f"{url}/{action}", data={"csrf": token, **fields})
        assert refused.status_code == 403, action
    staff, _ = signed_in(tenant, "staff")
    staff_page = ok(staff.get(url))
    refused = staff.post(
        f"{url}/move", data={"csrf": form_token(staff_page), "node": "send_postcard", "reason": "mine"}
    )
    assert refused.status_code == 403  # moving is for admins
    assert api(tenant, instance["id"])["current_node"] == "initial_call"
    assert api(tenant, instance["id"])["status"] == "active"


@ONE_STORE
def test_another_tenants_instance_is_not_found(tenant: Tenant, make_tenant: Any) -> None:
    theirs = started(make_tenant(), "Their Voter")
    client, _ = signed_in(tenant, "admin")
    url = f"/instances/{theirs['id']}"
    for path in (url, f"{url}/diagram.svg", f"{url}/events", "/instances/NOT-AN-ID", "/instances/x/diagram.svg"):
        missing = client.get(path)
        assert missing.status_code == 404, path
    page = ok(client.get("/instances"))
    token = form_token(page)
    for action, fields in (("pause", {}), ("notes", {"text": "hi"}), ("move", {"node": "x", "reason": "y"})):
        assert client.post(f"{url}/{action}", data={"csrf": token, **fields}).status_code == 404, action
    assert "Their Voter" not in text_of(ok(client.get("/instances")))
    assert "Their Voter" not in text_of(ok(client.get("/instances", params={"contact_id": theirs["contact_id"]})))


@ONE_STORE
@pytest.mark.parametrize("where", ["contact", "template", "note"])
def test_what_a_user_typed_is_shown_as_text(tenant: Tenant, where: str) -> None:
    template_id = None
    if where == "template":
        made = tenant.admin.post("/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": HOSTILE})
        if made.status_code == 404:
            tenant.template()
            made = tenant.admin.post("/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": HOSTILE})
        assert made.status_code == 201, made.text
        template_id = "hostile"
    contact = tenant.contact(name=HOSTILE if where == "contact" else "Plain")
    instance = tenant.instance(contact["id"], template_id=template_id, start=True, initial_state={"note": HOSTILE})
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/notes", json={"text": HOSTILE}))
    client, _ = signed_in(tenant, "admin")
    listed = ok(client.get("/instances"))
    shown = ok(client.get(f"/instances/{instance['id']}"))
    typed = client.get("/instances", params={"tag": HOSTILE, "template_id": HOSTILE})
    assert typed.status_code == 422
    for page in (listed, shown, typed):
        assert "<script>alert(1)</script>" not in page.text
    for page in (shown, typed) if where == "note" else (listed, shown, typed):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    detail = ok(client.get(f"/instances/{instance['id']}"))
    assert HOSTILE in text_of(detail)
    drawn = ok(client.get(f"/instances/{instance['id']}/diagram.svg"))
    assert "<script>" not in drawn.text


@ONE_STORE
def test_an_instance_whose_contact_and_template_were_deleted_still_shows(tenant: Tenant) -> None:
    tenant.template(SHARE)
    instance = tenant.instance(
        tenant.contact(name="Gone Soon")["id"], template_id=SHARE["id"], start=True, initial_state={"households": 1}
    )
    ok(tenant.admin.delete(f"/api/contacts/{instance['contact_id']}", params={"cascade": "true"}), 204)
    ok(tenant.admin.delete(f"/api/workflows/{SHARE['id']}"), 204)
    ok(tenant.admin.get(f"/api/instances/{instance['id']}"))  # a deleted contact's instances are kept, cancelled
    client, _ = signed_in(tenant, "viewer")
    listed = ok(client.get("/instances"))
    assert f"Contact {instance['contact_id']}" in text_of(listed)
    page = ok(client.get(f"/instances/{instance['id']}"))
    text = text_of(page)
    assert "(deleted)" in text
    assert "Cancelled" in text
    assert "there is no drawing" in text
    assert "<img" not in page.text


@ONE_STORE
def test_the_live_timeline_ends_when_the_person_is_removed(tenant: Tenant) -> None:
    """The stream checks the session before each event: a removed person (or a signed-out session) gets nothing
    more, even on a stream opened before."""
    instance = started(tenant)
    client, person = signed_in(tenant, "viewer")
    page = ok(client.get(f"/instances/{instance['id']}"))
    after = re.search(r'data-after="(\d+)"', page.text)
    assert after
    got: list[Json] = []
    opened = threading.Event()

    def listen() -> None:
        with client.stream(
            "GET", f"/instances/{instance['id']}/events", params={"after": after.group(1)}, timeout=20
        ) as answer:
            opened.set()
            got.extend(read_messages(answer, 1))

    listening = threading.Thread(target=listen)
    listening.start()
    assert opened.wait(20)
    assert tenant.admin.delete(f"/api/users/{person['id']}").status_code == 204
    ok(tenant.admin.post(f"/api/instances/{instance['id']}/notes", json={"text": "after the removal"}))
    listening.join(30)
    assert not listening.is_alive()  # the server ended the stream
    assert got == []
