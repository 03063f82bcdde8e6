"""`POST /api/instances/bulk` inside the request (up to 5,000 contacts) and the `/api/jobs` routes, on every store.
The job path (202, the worker, a kill -9) is `tests/system/test_jobs.py`."""

from __future__ import annotations

from typing import Any

from conftest import REFERENCE_ID, Tenant, reference_template

BULK = "/api/instances/bulk"


def instances_of(tenant: Tenant, contact_id: str) -> list[dict[str, Any]]:
    answer = tenant.admin.get("/api/instances", params={"contact_id": contact_id, "template_id": REFERENCE_ID})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def test_bulk_enrols_the_matching_contacts_once(tenant: Tenant) -> None:
    tenant.template()
    tagged = [tenant.contact(name=f"Tagged {i}", tags=["spring"])["id"] for i in range(3)]
    other = tenant.contact(name="Untagged")["id"]
    body = {"template_id": REFERENCE_ID, "contacts": {"tag": "spring"}, "start": True, "initial_state": {"wave": 1}}
    first = tenant.admin.post(BULK, json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {"enrolled": 3, "skipped": 0}
    for contact_id in tagged:
        (instance,) = instances_of(tenant, contact_id)
        assert (instance["status"], instance["current_node"], instance["state"]) == (
            "active",
            "initial_call",
            {"wave": 1},
        )
    assert instances_of(tenant, other) == []
    again = tenant.admin.post(BULK, json=body)
    assert again.json() == {"enrolled": 0, "skipped": 3}
    assert all(len(instances_of(tenant, contact_id)) == 1 for contact_id in tagged)


def test_bulk_by_ids_and_by_county_and_pending_without_start(tenant: Tenant) -> None:
    tenant.template()
    adams = [tenant.contact(name=f"A {i}", county="Adams")["id"] for i in range(2)]
    baker = tenant.contact(name="B", county="Baker")["id"]
    by_county = tenant.admin.post(BULK, json={"template_id": REFERENCE_ID, "contacts": {"county": "Adams"}})
    assert by_county.json() == {"enrolled": 2, "skipped": 0}
    assert {i["status"] for c in adams for i in instances_of(tenant, c)} == {"pending"}
    by_ids = tenant.admin.post(BULK, json={"template_id": REFERENCE_ID, "contacts": {"ids": [baker, adams[0]]}})
    assert by_ids.json() == {"enrolled": 1, "skipped": 1}


def test_bulk_refuses_what_it_cannot_do_and_changes_nothing(tenant: Tenant) -> None:
    contact = tenant.contact()["id"]
    unknown = tenant.admin.post(BULK, json={"template_id": "no-such-template"})
    assert unknown.status_code == 404
    assert unknown.json()["detail"] == "no workflow template with id 'no-such-template'"
    tenant.template()
    missing = tenant.admin.post(BULK, json={"template_id": REFERENCE_ID, "contacts": {"ids": [contact, "ghost"]}})
    assert missing.status_code == 422
    assert missing.json()["detail"] == "contacts.ids: no contact with id 'ghost'"
    both = tenant.admin.post(BULK, json={"template_id": REFERENCE_ID, "contacts": {"ids": [contact], "tag": "x"}})
    assert both.status_code == 422
    assert "either ids or filters" in both.json()["detail"]
    draft = tenant.admin.post("/api/workflows", json={"id": "draft", "name": "Draft", "nodes": {}, "start_node": "x"})
    assert draft.status_code == 201, draft.text
    invalid = tenant.admin.post(BULK, json={"template_id": "draft"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"].startswith("template 'draft' has validation errors")
    assert instances_of(tenant, contact) == []
    viewer = tenant.as_role("viewer").post(BULK, json={"template_id": REFERENCE_ID})
    assert viewer.status_code == 403


def test_another_tenants_template_is_unknown(tenant: Tenant, make_tenant: Any) -> None:
    other = make_tenant()
    theirs = reference_template() | {"id": "only-theirs"}
    other.template(theirs)
    tenant.contact()
    answer = tenant.admin.post(BULK, json={"template_id": "only-theirs"})
    assert answer.status_code == 404
    assert answer.json()["detail"] == "no workflow template with id 'only-theirs'"


def test_jobs_list_is_paged_and_an_unknown_job_is_404(tenant: Tenant) -> None:
    listed = tenant.admin.get("/api/jobs")
    assert listed.status_code == 200
    assert listed.json() == {"items": [], "next_cursor": None}
    for path in ("/api/jobs/0a0b0c0d0e0f", "/api/jobs/0a0b0c0d0e0f/cancel"):
        method = "POST" if path.endswith("cancel") else "GET"
        missing = tenant.admin.request(method, path)
        assert missing.status_code == 404
        assert missing.json()["detail"] == "no job with id '0a0b0c0d0e0f'"
    assert tenant.as_role("volunteer").get("/api/jobs").status_code == 403


def test_bulk_gives_the_new_instances_their_tags(tenant: Tenant) -> None:
    tenant.template()
    contacts = [tenant.contact(name=f"Wave {i}", county="Tagford")["id"] for i in range(4)]
    body = {"template_id": REFERENCE_ID, "contacts": {"county": "Tagford"}, "tags": ["wave-1", "spring"], "start": True}
    assert tenant.admin.post(BULK, json=body).json() == {"enrolled": 4, "skipped": 0}
    for contact_id in contacts:
        (instance,) = instances_of(tenant, contact_id)
        assert sorted(instance["tags"]) == ["spring", "wave-1"]
    listed = tenant.admin.get("/api/instances", params={"tag": "wave-1", "template_id": REFERENCE_ID}).json()["items"]
    assert sorted(i["contact_id"] for i in listed) == sorted(contacts)  # the tag rows a filter walks are there
