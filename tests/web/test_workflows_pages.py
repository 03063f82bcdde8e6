"""/workflows and /workflows/{id} over HTTP on SQLite (ONE_STORE: a page only calls the services, whose storage the
store and sign-in suites test on every store): the list (paged, tag filter), a new template from JSON, a template
drawn with its counts, its validation beside its steps, the JSON editor (validate without saving, save refusing what
does not parse or fit, drafts kept), clone, bulk enrol (counts inline, or a job followed at /workflows/jobs/{id}),
versions; who may do what, another tenant's ids, and user text shown as text."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbworkflow.models.templates import TemplateFields
from cbworkflow.services.templates import TemplateService
from cbworkflow.web.template_json import editable_json, read_draft
from conftest import (
    ADMIN_TOKEN,
    CBWORKFLOW,
    ONE_STORE,
    Server,
    Tenant,
    free_port,
    reference_template,
    start_server,
    stop_server,
)
from pages import form_fields, form_token, signed_in, text_of

HOSTILE = "<script>alert(1)</script>"
REF = "county-outreach-v1"


def draft_body(template_id: str = "draft-one", **extra: Any) -> dict[str, Any]:
    """A template that fits the model but whose graph has errors: a dead end, a missing action."""
    return {
        "id": template_id,
        "name": "Half-written plan",
        "start_node": "call",
        "nodes": {
            "call": {"type": "action", "name": "First call", "transitions": {"answered": "done"}},
            "knock": {"type": "action", "name": "Knock", "action": "door_canvass"},
            "done": {"type": "end", "name": "Done"},
        },
        **extra,
    }


def small_body(template_id: str = "small-one", **extra: Any) -> dict[str, Any]:
    return {
        "id": template_id,
        "name": "Small plan",
        "start_node": "call",
        "nodes": {
            "call": {"type": "action", "name": "Call", "action": "phone_call", "transitions": {"answered": "done"}},
            "done": {"type": "end", "name": "Done", "end_status": "success"},
        },
        **extra,
    }


def submit(client: httpx.Client, page: httpx.Response, action: str, **fields: str) -> httpx.Response:
    """Send the page's form `action` as a browser does: its hidden fields (the CSRF token) and the fields typed."""
    target, hidden = form_fields(page, re.escape(action) + r"(?:#[a-z]+)?")
    return client.post(target, data={**hidden, **fields})


def section(page: httpx.Response, element_id: str) -> str:
    """The HTML of the page's element with this id, up to its closing `</li>` or `</section>`."""
    found = re.search(rf'<(li|section)[^>]* id="{re.escape(element_id)}"[^>]*>(.*?)</\1>', page.text, re.S)
    assert found, f"no element #{element_id} on the page"
    return found.group(2)


def step_of(page: httpx.Response, node_id: str) -> str:
    """The HTML of the step whose id line names `node_id`."""
    for found in re.finditer(
        r'<li class="wf-step[^"]*" id="(step-\d+)">(.*?)</li>\s*(?=<li class="wf-step|</ol>)', page.text, re.S
    ):
        if f"Id {node_id}" in found.group(2):
            return found.group(2)
    raise AssertionError(f"no step {node_id} on the page")


def textarea(page: httpx.Response, field_id: str) -> str:
    """What the textarea holds, as the browser reads it (the newline after the tag is not part of it)."""
    found = re.search(rf'<textarea id="{field_id}"[^>]*>\n?(.*?)</textarea>', page.text, re.S)
    assert found, f"no textarea #{field_id}"
    return html.unescape(found.group(1))


# ---------------------------------------------------------------- the list


@ONE_STORE
def test_the_list_shows_each_template_with_its_state(tenant: Tenant) -> None:
    tenant.template()
    tenant.template(draft_body(tags=["spring"]))
    viewer, _ = signed_in(tenant, "viewer")
    page = viewer.get("/workflows")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = text_of(page)
    assert "County outreach" in text
    assert f"Id {REF} · version 1.0.0 · 9 steps" in text
    assert "outreach" in text  # its tags
    assert "Half-written plan Not valid: 2 errors" in text
    assert "County outreach Valid" in text
    assert f'href="/workflows/{REF}"' in page.text
    assert 'href="/workflows/draft-one"' in page.text
    assert 'href="/static/workflows.css"' in page.text
    assert "New template" not in text  # only admins write templates
    assert "Next page" not in text
    admin, _ = signed_in(tenant, "admin")
    assert '<textarea id="new-json" name="json"' in admin.get("/workflows").text
    assert '<label for="new-json">' in admin.get("/workflows").text


@ONE_STORE
def test_the_list_is_paged_and_filtered_by_tag(tenant: Tenant) -> None:
    for n in range(51):
        tenant.template(small_body(f"plan-{n:02d}", tags=["many"]))
    tenant.template(small_body("untagged"))
    staff, _ = signed_in(tenant, "staff")
    first = staff.get("/workflows", params={"tag": "many"})
    assert first.status_code == 200
    assert first.text.count('class="wf-name"') == 50
    assert "untagged" not in first.text
    found = re.search(r'<a class="button" href="([^"]+)">Next page</a>', first.text)
    assert found
    link = found.group(1).replace("&amp;", "&")
    assert "tag=many" in link
    assert "cursor=" in link
    second = staff.get(link)
    assert second.text.count('class="wf-name"') == 1
    assert "Next page" not in text_of(second)
    assert "First page" in text_of(second)
    everything = staff.get("/workflows")
    assert everything.text.count('class="wf-name"') == 50
    assert "Next page" in text_of(everything)
    bad = staff.get("/workflows", params={"tag": "Not A Tag"})
    assert bad.status_code == 200
    assert "A tag is lowercase letters" in text_of(bad)
    assert 'value="Not A Tag"' in bad.text  # what was typed stays in the field
    broken = staff.get("/workflows", params={"cursor": "nonsense"})
    assert broken.status_code == 422
    assert broken.headers["content-type"].startswith("text/html")


@ONE_STORE
def test_a_new_template_is_checked_then_saved(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows")
    assert "welcome-call" in textarea(page, "new-json")  # a skeleton to start from
    body = json.dumps(small_body("fresh"), indent=2)

    checked = submit(admin, page, "/workflows", json=body, do="validate")
    assert checked.status_code == 200
    assert "The JSON is valid: no errors and no warnings. It is not saved yet." in text_of(checked)
    assert tenant.admin.get("/api/workflows/fresh").status_code == 404
    assert json.loads(textarea(checked, "new-json")) == small_body("fresh")  # the JSON typed stays

    saved = submit(admin, checked, "/workflows", json=body, do="save")
    assert saved.status_code == 303
    assert saved.headers["location"] == "/workflows/fresh?said=created#main"
    shown = admin.get(saved.headers["location"])
    assert "Template saved." in text_of(shown)
    assert tenant.admin.get("/api/workflows/fresh").json()["name"] == "Small plan"

    again = submit(admin, page, "/workflows", json=body, do="save")
    assert again.status_code == 409
    assert "A workflow template with id 'fresh' already exists." in text_of(again)


@ONE_STORE
def test_a_new_template_that_does_not_parse_or_fit_is_refused(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows")
    broken = '{\n  "id": "oops",\n  "name": "Oops"\n  "nodes": {}\n}'
    answer = submit(admin, page, "/workflows", json=broken, do="save")
    assert answer.status_code == 422
    assert "The JSON does not parse: line 4, column 3: Expecting ',' delimiter." in text_of(answer)
    assert textarea(answer, "new-json") == broken
    wrong = draft_body("wrong")
    wrong["nodes"]["call"]["transitions"] = "done"
    wrong["nodes"]["knock"]["type"] = "teleport"
    wrong["colour"] = "red"
    answer = submit(admin, page, "/workflows", json=json.dumps(wrong), do="save")
    assert answer.status_code == 422
    text = text_of(answer)
    assert "This JSON cannot be saved. Fix these first:" in text
    assert "nodes.call.transitions: Input should be a valid dictionary" in text
    assert "nodes.knock.type: use one of action, decision, wait, webhook, split, end" in text
    assert "colour: unknown field (not accepted here)" in text
    for bad in ("[1, 2]", "", '{"id": "x", "name": "n", "nodes": {}, "metadata": {"n": NaN}}'):
        refused = submit(admin, page, "/workflows", json=bad, do="validate")
        assert refused.status_code == 422, bad
    assert "The JSON must be one object" in text_of(submit(admin, page, "/workflows", json="[1]", do="save"))
    assert tenant.admin.get("/api/workflows/wrong").status_code == 404
    assert tenant.admin.get("/api/workflows/oops").status_code == 404


@ONE_STORE
def test_a_draft_with_graph_errors_is_saved_with_its_errors_shown(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows")
    body = json.dumps(draft_body())
    checked = submit(admin, page, "/workflows", json=body, do="validate")
    assert checked.status_code == 200
    text = text_of(checked)
    assert "2 errors" in text
    assert "It can be saved as a draft" in text
    assert "dead_end" in text
    assert "action_missing" in text
    saved = submit(admin, page, "/workflows", json=body, do="save")
    assert saved.status_code == 303
    shown = admin.get(saved.headers["location"])
    assert "Draft: 2 errors stop it from running" in text_of(shown)
    assert "action_missing" in text_of(shown)
    assert tenant.admin.get("/api/workflows/draft-one").status_code == 200


@ONE_STORE
def test_creating_needs_an_admin_and_the_form_token(tenant: Tenant) -> None:
    body = json.dumps(small_body("sneaky"))
    admin, _ = signed_in(tenant, "admin")
    refused = admin.post("/workflows", data={"json": body, "do": "save"})
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("text/html")
    forged = admin.post("/workflows", data={"json": body, "do": "save", "csrf": "forged"})
    assert forged.status_code == 403
    for role in ("staff", "viewer"):
        client, _ = signed_in(tenant, role)
        page = client.get("/workflows")
        token = form_token(page)  # the sign-out form's: the session's token
        assert client.post("/workflows", data={"csrf": token, "json": body, "do": "save"}).status_code == 403
    assert tenant.admin.get("/api/workflows/sneaky").status_code == 404


# ---------------------------------------------------------------- one template


@ONE_STORE
def test_a_template_page_shows_the_graph_counts_steps_and_versions(tenant: Tenant) -> None:
    for name in ("Ann", "Bea"):
        tenant.instance(tenant.contact(name=name)["id"], start=True)
    viewer, _ = signed_in(tenant, "viewer")
    page = viewer.get(f"/workflows/{REF}")
    assert page.status_code == 200
    text = text_of(page)
    assert "County outreach" in text
    assert f"Id {REF} · version 1.0.0 · 9 steps" in text
    assert "Valid: contacts can be enrolled." in text
    assert f'<img src="/workflows/{REF}/diagram.svg" alt="' in page.text
    assert "Where the voters stand" in text
    assert "Initial phone call 2" in text  # the funnel, for screen readers
    call = text_of_html(step_of(page, "initial_call"))
    assert "start" in call
    assert "Phone call" in call  # what the step does
    assert "2 voters here now" in call
    assert "no_answer → leads to Door knock (schedule_door)" in call
    assert "answered_not_interested → leads to Declined (end_declined)" in call
    assert "1.0.0 current" in text_of_html(section(page, "versions"))
    assert "Edit as JSON" not in text  # a viewer reads the JSON, it cannot edit it
    assert "Show the JSON" in text
    assert "Bulk enrol" not in text
    assert "Clone" not in text

    drawing = viewer.get(f"/workflows/{REF}/diagram.svg")
    assert drawing.status_code == 200
    assert drawing.headers["content-type"].startswith("image/svg+xml")
    assert drawing.headers["x-content-type-options"] == "nosniff"
    assert drawing.text.startswith("<svg")
    assert ">2<" in drawing.text  # the count on the first step

    staff, _ = signed_in(tenant, "staff")
    staff_page = text_of(staff.get(f"/workflows/{REF}"))
    assert "Bulk enrol" in staff_page
    assert "Edit as JSON" not in staff_page
    admin, _ = signed_in(tenant, "admin")
    admin_page = admin.get(f"/workflows/{REF}")
    assert "Edit as JSON" in text_of(admin_page)
    assert "Clone" in text_of(admin_page)
    edited = json.loads(textarea(admin_page, "template-json"))
    assert edited["start_node"] == "initial_call"
    assert edited["nodes"]["end_success"] == {"type": "end", "name": "Reached", "end_status": "success"}
    assert "id" not in edited
    assert "tenant" not in edited


@ONE_STORE
def test_validation_results_sit_beside_the_steps_they_concern(tenant: Tenant) -> None:
    body = draft_body("beside")
    body["nodes"]["lost"] = {"type": "end", "name": "Nobody gets here"}
    tenant.template(body)
    staff, _ = signed_in(tenant, "staff")
    page = staff.get("/workflows/beside")
    assert "Draft: 2 errors stop it from running, and 2 warnings." in text_of(page)
    call = text_of_html(step_of(page, "call"))
    assert "Error action_missing Node 'First call' ('call') does not say which action to take" in call
    knock = text_of_html(step_of(page, "knock"))
    assert "Error dead_end" in knock
    assert "Warning unreachable" in knock
    lost = text_of_html(step_of(page, "lost"))
    assert "Warning unreachable" in lost
    assert "0 voters finished here" in lost
    done = text_of_html(step_of(page, "done"))
    assert "Error" not in done
    assert "Warning" not in done
    # A problem of the whole template has its own place.
    no_start = draft_body("no-start")
    no_start["start_node"] = None
    tenant.template(no_start)
    whole = staff.get("/workflows/no-start")
    assert "The whole template Error start_node_missing" in text_of(whole)


@ONE_STORE
def test_the_editor_validates_without_saving(tenant: Tenant) -> None:
    tenant.template(small_body("edit-me"))
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows/edit-me")
    data = json.loads(textarea(page, "template-json"))
    data["nodes"]["call"]["transitions"]["no_answer"] = "retry"
    data["nodes"]["retry"] = {"type": "wait", "name": "Wait a day"}
    checked = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(data), do="validate")
    assert checked.status_code == 200
    text = text_of(checked)
    assert "1 error and 1 warning." in text or "error" in text
    assert "wait_condition_missing" in text
    assert "at step retry" in text
    assert json.loads(textarea(checked, "template-json")) == data  # the edit stays in the editor
    stored = tenant.admin.get("/api/workflows/edit-me").json()
    assert "retry" not in stored["nodes"]
    assert stored["version"] == "1.0.0"


@ONE_STORE
def test_the_editor_saves_a_change_and_raises_the_version(tenant: Tenant) -> None:
    tenant.template(small_body("edit-me"))
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows/edit-me")
    data = json.loads(textarea(page, "template-json"))
    del data["version"]  # left to the server
    data["name"] = "Small plan, second try"
    data["nodes"]["call"]["transitions"]["no_answer"] = "done"
    saved = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(data), do="save")
    assert saved.status_code == 303
    assert saved.headers["location"] == "/workflows/edit-me?said=saved#main"
    stored = tenant.admin.get("/api/workflows/edit-me").json()
    assert stored["version"] == "1.1.0"
    assert stored["name"] == "Small plan, second try"
    assert stored["nodes"]["call"]["transitions"] == {"answered": "done", "no_answer": "done"}
    shown = admin.get(saved.headers["location"])
    assert "Changes saved." in text_of(shown)
    versions = text_of_html(section(shown, "versions"))
    assert versions.index("1.1.0 current") < versions.index("1.0.0")
    # The API's answer pasted as it is (id, tenant, times) saves too.
    pasted = tenant.admin.get("/api/workflows/edit-me").json()
    pasted["description"] = "pasted"
    again = submit(admin, shown, "/workflows/edit-me/edit", json=json.dumps(pasted), do="save")
    assert again.status_code == 303
    assert tenant.admin.get("/api/workflows/edit-me").json()["description"] == "pasted"


@ONE_STORE
def test_the_editor_refuses_what_does_not_parse_or_fit(tenant: Tenant) -> None:
    tenant.template(small_body("edit-me", version="2.0.0"))
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/workflows/edit-me")
    broken = textarea(page, "template-json").replace('"start_node": "call",', '"start_node": "call"')
    answer = submit(admin, page, "/workflows/edit-me/edit", json=broken, do="save")
    assert answer.status_code == 422
    assert "The JSON does not parse: line" in text_of(answer)
    assert textarea(answer, "template-json") == broken  # nothing typed is lost
    data = json.loads(textarea(page, "template-json"))
    data["nodes"]["call"]["type"] = "phone"
    data["tags"] = ["Not A Slug"]
    answer = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(data), do="save")
    assert answer.status_code == 422
    assert "nodes.call.type: use one of" in text_of(answer)
    assert "tags.0:" in text_of(answer)
    lower = json.loads(textarea(page, "template-json"))
    lower["version"] = "1.0.0"
    answer = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(lower), do="save")
    assert answer.status_code == 422
    assert "Version: 1.0.0 is lower than the current version 2.0.0." in text_of(answer)
    other = json.loads(textarea(page, "template-json"))
    other["id"] = "someone-else"
    answer = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(other), do="save")
    assert answer.status_code == 422
    assert "use Clone" in text_of(answer)
    assert tenant.admin.get("/api/workflows/edit-me").json()["version"] == "2.0.0"
    # A draft with graph errors may be saved, as the API allows.
    drafty = json.loads(textarea(page, "template-json"))
    drafty["nodes"]["call"]["transitions"] = {}
    saved = submit(admin, page, "/workflows/edit-me/edit", json=json.dumps(drafty), do="save")
    assert saved.status_code == 303
    shown = admin.get(saved.headers["location"])
    assert "Draft: 1 error stops it from running" in text_of(shown)
    assert "dead_end" in text_of_html(step_of(shown, "call"))


@ONE_STORE
def test_editing_needs_an_admin_and_the_form_token(tenant: Tenant) -> None:
    tenant.template(small_body("guarded"))
    body = json.dumps({**small_body("guarded"), "name": "Changed"})
    admin, _ = signed_in(tenant, "admin")
    assert admin.post("/workflows/guarded/edit", data={"json": body, "do": "save"}).status_code == 403
    staff, _ = signed_in(tenant, "staff")
    token = form_token(staff.get("/workflows/guarded"))
    assert staff.post("/workflows/guarded/edit", data={"csrf": token, "json": body, "do": "save"}).status_code == 403
    assert tenant.admin.get("/api/workflows/guarded").json()["name"] == "Small plan"


@ONE_STORE
def test_a_forms_address_opened_as_a_page_goes_back_to_the_template(tenant: Tenant) -> None:
    tenant.template()
    viewer, _ = signed_in(tenant, "viewer")
    for form, anchor in (("edit", "json"), ("clone", "clone"), ("enrol", "enrol")):
        answer = viewer.get(f"/workflows/{REF}/{form}")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/workflows/{REF}#{anchor}"
    assert viewer.get(f"/workflows/{REF}/nothing").status_code == 404
    page = signed_in(tenant, "admin")[0].get(f"/workflows/{REF}")
    assert f'action="/workflows/{REF}/edit#json"' in page.text  # the answer opens at the form that was sent


@ONE_STORE
def test_clone_makes_a_copy_and_goes_to_it(tenant: Tenant) -> None:
    tenant.template()
    admin, _ = signed_in(tenant, "admin")
    page = admin.get(f"/workflows/{REF}")
    made = submit(admin, page, f"/workflows/{REF}/clone", id="second-round", name="Second round")
    assert made.status_code == 303
    assert made.headers["location"] == "/workflows/second-round?said=cloned#main"
    shown = admin.get(made.headers["location"])
    assert "Copy made." in text_of(shown)
    assert "Second round" in text_of(shown)
    assert tenant.admin.get("/api/workflows/second-round").json()["version"] == "1.0.0"
    generated = submit(admin, page, f"/workflows/{REF}/clone", id="", name="")
    assert generated.status_code == 303
    new_id = generated.headers["location"].split("/")[-1].split("?")[0]
    assert tenant.admin.get(f"/api/workflows/{new_id}").json()["name"] == "County outreach (copy)"

    taken = submit(admin, page, f"/workflows/{REF}/clone", id="second-round", name="Again")
    assert taken.status_code == 409
    assert "already exists" in text_of(taken)
    assert 'value="Again"' in taken.text
    bad = submit(admin, page, f"/workflows/{REF}/clone", id="Bad Id!", name="x")
    assert bad.status_code == 422
    assert "Id: use lowercase letters" in text_of(bad)
    assert 'value="Bad Id!"' in bad.text

    assert admin.post(f"/workflows/{REF}/clone", data={"id": "no-token"}).status_code == 403
    staff, _ = signed_in(tenant, "staff")
    token = form_token(staff.get(f"/workflows/{REF}"))
    assert staff.post(f"/workflows/{REF}/clone", data={"csrf": token, "id": "by-staff"}).status_code == 403
    for refused in ("no-token", "by-staff"):
        assert tenant.admin.get(f"/api/workflows/{refused}").status_code == 404


@ONE_STORE
def test_bulk_enrol_shows_the_counts(tenant: Tenant) -> None:
    tenant.template()
    for name in ("Kim", "Lee"):
        tenant.contact(name=name, county="Kent", tags=["door"])
    tenant.contact(name="Max", county="Sussex")
    staff, _ = signed_in(tenant, "staff")
    page = staff.get(f"/workflows/{REF}")
    done = submit(staff, page, f"/workflows/{REF}/enrol", county="Kent", tag="", organization="", start="on")
    assert done.status_code == 303
    shown = staff.get(done.headers["location"])
    assert "Enrolled 2 contacts; skipped 0 already in this workflow." in text_of(shown)
    instances = tenant.admin.get("/api/instances", params={"template_id": REF}).json()["items"]
    assert len(instances) == 2
    assert {(i["status"], i["current_node"]) for i in instances} == {("active", "initial_call")}
    again = submit(staff, page, f"/workflows/{REF}/enrol", county="", tag="door", organization="")
    assert "Enrolled 0 contacts; skipped 2 already in this workflow." in text_of(staff.get(again.headers["location"]))
    everyone = submit(staff, page, f"/workflows/{REF}/enrol", county="", tag="", organization="")
    shown = staff.get(everyone.headers["location"])
    assert "Enrolled 1 contact; skipped 2" in text_of(shown)
    pending = tenant.admin.get("/api/instances", params={"template_id": REF, "status": "pending"}).json()["items"]
    assert len(pending) == 1  # without "start at once" they wait to be started

    bad = submit(staff, page, f"/workflows/{REF}/enrol", county="Kent", tag="Not A Tag", organization="")
    assert bad.status_code == 422
    assert "Tag: use lowercase letters" in text_of(bad)
    assert 'value="Not A Tag"' in bad.text
    assert 'value="Kent"' in bad.text


@ONE_STORE
def test_bulk_enrol_refuses_a_draft_and_needs_staff_and_the_token(tenant: Tenant) -> None:
    tenant.template(draft_body())
    tenant.contact(name="Nia")
    staff, _ = signed_in(tenant, "staff")
    page = staff.get("/workflows/draft-one")
    refused = submit(staff, page, "/workflows/draft-one/enrol", county="", tag="", organization="")
    assert refused.status_code == 422
    assert "has validation errors; fix them before enrolling contacts" in text_of(refused)
    assert staff.post("/workflows/draft-one/enrol", data={"county": ""}).status_code == 403
    viewer, _ = signed_in(tenant, "viewer")
    token = form_token(viewer.get("/workflows/draft-one"))
    assert viewer.post("/workflows/draft-one/enrol", data={"csrf": token}).status_code == 403
    assert tenant.admin.get("/api/instances").json()["items"] == []


@ONE_STORE
def test_volunteers_are_refused_and_other_tenants_ids_are_not_found(
    tenant: Tenant, make_tenant: Callable[[], Tenant]
) -> None:
    tenant.template()
    volunteer, _ = signed_in(tenant, "volunteer")
    for path in ("/workflows", f"/workflows/{REF}", f"/workflows/{REF}/diagram.svg"):
        refused = volunteer.get(path)
        assert refused.status_code == 403, path
        assert refused.headers["content-type"].startswith("text/html")
    token = form_token(volunteer.get("/next"))
    assert volunteer.post(f"/workflows/{REF}/enrol", data={"csrf": token}).status_code == 403

    other = make_tenant()
    other.template(small_body("theirs"))
    admin, _ = signed_in(tenant, "admin")
    page = admin.get(f"/workflows/{REF}")
    token = form_token(page)
    for path in (
        "/workflows/theirs",
        "/workflows/theirs/diagram.svg",
        "/workflows/nope",
        "/workflows/jobs/abcdef012345",
    ):
        missing = admin.get(path)
        assert missing.status_code == 404, path
        assert "Not found" in text_of(missing)
    assert admin.get("/workflows/%3Cscript%3E").status_code == 404
    for action, data in (
        ("edit", {"json": json.dumps(small_body("theirs")), "do": "save"}),
        ("clone", {"id": "stolen"}),
        ("enrol", {}),
    ):
        answer = admin.post(f"/workflows/theirs/{action}", data={"csrf": token, **data})
        assert answer.status_code == 404, action
    assert other.admin.get("/api/workflows/theirs").json()["name"] == "Small plan"
    assert tenant.admin.get("/api/workflows/stolen").status_code == 404


@ONE_STORE
def test_what_a_user_typed_is_shown_as_text(tenant: Tenant) -> None:
    body = draft_body("hostile", name=HOSTILE, description=HOSTILE, metadata={"note": HOSTILE})
    body["nodes"]["call"]["name"] = HOSTILE
    body["nodes"][HOSTILE] = {"type": "end", "name": HOSTILE}
    tenant.template(body)
    admin, _ = signed_in(tenant, "admin")
    for page in (admin.get("/workflows"), admin.get("/workflows/hostile")):
        assert page.status_code == 200
        assert HOSTILE not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
        assert HOSTILE in text_of(page)
    page = admin.get("/workflows/hostile")
    assert json.loads(textarea(page, "template-json"))["name"] == HOSTILE
    assert "invalid_node_id" in text_of(page)
    drawing = admin.get("/workflows/hostile/diagram.svg")
    assert HOSTILE not in drawing.text
    assert "default-src 'none'" in drawing.headers["content-security-policy"]
    checked = submit(admin, page, "/workflows/hostile/edit", json=textarea(page, "template-json"), do="validate")
    assert HOSTILE not in checked.text
    assert HOSTILE in text_of(checked)
    broken = submit(admin, admin.get("/workflows"), "/workflows", json=HOSTILE, do="save")
    assert broken.status_code == 422
    assert HOSTILE not in broken.text
    cloned = submit(admin, page, "/workflows/hostile/clone", id="", name=HOSTILE + " 2")
    shown = admin.get(cloned.headers["location"])
    assert HOSTILE not in shown.text
    assert f"{HOSTILE} 2" in text_of(shown)


# ---------------------------------------------------------------- jobs (a server of their own: one contact per request)


@pytest.fixture
def job_server(tmp_path: Path) -> Iterator[Server]:
    """A server that makes a job of any bulk enrolment of more than 2 contacts, with no worker of its own."""
    port = free_port()
    proc = start_server(tmp_path, port, tmp_path / "server.log", env={"CBW_BULK_INLINE_LIMIT": "2"})
    try:
        yield Server(f"http://127.0.0.1:{port}", tmp_path, ADMIN_TOKEN)
    finally:
        stop_server(proc)


def new_tenant(server: Server, made: list[Tenant]) -> Tenant:
    """A tenant of `server`, made by its superadmin (its clients are closed by the test, from `made`)."""
    with server.client(server.admin_token) as root:
        answer = root.post("/api/tenants", json={"name": f"Campaign {len(made)}"})
        assert answer.status_code == 201, answer.text
    token = answer.json()["admin_token"]
    made.append(Tenant(answer.json()["id"], server, token, server.client(token)))
    return made[-1]


def run_worker(data_dir: Path) -> subprocess.Popen[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CBW_")}
    environment |= {"CBW_DATA_DIR": str(data_dir), "CBW_WORKER_POLL_INTERVAL": "0.2"}
    with (data_dir / "worker.log").open("ab") as out:
        return subprocess.Popen(
            [str(CBWORKFLOW), "worker"], env=environment, cwd=data_dir, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.slow
def test_a_large_enrolment_becomes_a_job_followed_on_its_page(job_server: Server) -> None:
    made: list[Tenant] = []
    tenant = new_tenant(job_server, made)
    try:
        tenant.template()
        for n in range(3):
            tenant.contact(name=f"Voter {n}", county="Kent")
        staff, _ = signed_in(tenant, "staff")
        page = staff.get(f"/workflows/{REF}")
        queued = submit(staff, page, f"/workflows/{REF}/enrol", county="Kent", tag="", organization="", start="on")
        assert queued.status_code == 303
        assert re.fullmatch(r"/workflows/jobs/[0-9a-f]{12}#main", queued.headers["location"])
        job_path = queued.headers["location"].removesuffix("#main")
        shown = staff.get(job_path)
        text = text_of(shown)
        assert "Bulk enrolment" in text
        assert "Waiting to start" in text
        assert "Progress: 0 of 3 contacts" in text
        assert '<meta http-equiv="refresh" content="3">' in shown.text  # follows by itself, without a script
        assert f'href="/workflows/{REF}"' in shown.text
        viewer, _ = signed_in(tenant, "viewer")
        seen = viewer.get(job_path)
        assert seen.status_code == 200
        assert "Stop this job" not in text_of(seen)
        assert staff.post(f"{job_path}/cancel", data={}).status_code == 403  # no form token

        stopped = submit(staff, shown, f"{job_path}/cancel")
        assert stopped.status_code == 303
        assert "Cancelled" in text_of(staff.get(job_path))

        queued = submit(staff, page, f"/workflows/{REF}/enrol", county="Kent", tag="", organization="", start="on")
        job_path = queued.headers["location"].removesuffix("#main")
        waiting = staff.get(job_path)
        worker = run_worker(job_server.data_dir)
        try:
            deadline = time.monotonic() + 60
            job_id = job_path.rsplit("/", 1)[1]
            while (state := tenant.admin.get(f"/api/jobs/{job_id}").json())["status"] != "succeeded":
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
        finally:
            worker.terminate()
            worker.wait(timeout=15)
        finished = staff.get(job_path)
        text = text_of(finished)
        assert 'class="wf-job-status succeeded" role="status">Finished<' in finished.text
        assert "Progress: 3 of 3 contacts" in text
        assert "Enrolled 3" in text
        assert "Skipped 0" in text
        assert 'http-equiv="refresh"' not in finished.text
        late = submit(staff, waiting, f"{job_path}/cancel")
        assert late.status_code == 409
        assert "The job has already finished (succeeded)" in text_of(late)
        assert len(tenant.admin.get("/api/instances", params={"template_id": REF}).json()["items"]) == 3
        outsider, _ = signed_in(new_tenant(job_server, made), "admin")
        assert outsider.get(job_path).status_code == 404  # another tenant's job
    finally:
        for each in made:
            each.admin.close()
            for client in each._clients:
                client.close()


# ---------------------------------------------------------------- the pieces, without a server


def test_the_editor_json_round_trips_to_the_same_template() -> None:
    from datetime import UTC, datetime

    from cbworkflow.models.templates import WorkflowTemplate

    now = datetime.now(UTC)
    template = WorkflowTemplate.model_validate(
        {**reference_template(), "tenant": "t", "created_at": now, "updated_at": now}
    )
    text = editable_json(template)
    draft = read_draft(text, template_id=template.id)
    assert draft.problems == []
    assert draft.data is not None
    again = TemplateFields.model_validate(draft.data)
    assert again.nodes == template.nodes
    assert again.start_node == template.start_node
    assert again.tags == template.tags
    assert list(json.loads(text)["nodes"]["initial_call"]) == ["type", "name", "action", "action_config", "transitions"]


def test_the_draft_reader_names_each_problem() -> None:
    assert read_draft("{", template_id=None).problems[0].startswith("The JSON does not parse: line 1, column 2")
    assert read_draft('{"a": Infinity}', template_id=None).problems == [
        "The JSON does not parse: Infinity is not a JSON number."
    ]
    assert "nested deeper" in read_draft("[" * 40 + "]" * 40, template_id=None).problems[0]
    assert "NUL" in read_draft('{"name": "a\\u0000"}', template_id=None).problems[0]
    kept = read_draft('{"id": "x", "tenant": "t", "created_at": 1, "name": "n"}', template_id="x")
    assert kept.data == {"name": "n"}


def test_check_judges_a_template_that_is_not_saved() -> None:
    service = TemplateService.__new__(TemplateService)  # `check` needs no store
    report = service.check(TemplateFields.model_validate({k: v for k, v in draft_body().items() if k != "id"}))
    assert not report.valid
    assert {(e.code, e.node) for e in report.errors} == {("action_missing", "call"), ("dead_end", "knock")}
    good = service.check(TemplateFields.model_validate({k: v for k, v in small_body().items() if k != "id"}))
    assert good.valid


def text_of_html(fragment: str) -> str:
    return text_of(httpx.Response(200, text=fragment))
