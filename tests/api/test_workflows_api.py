"""`/api/workflows` over HTTP (api.md § Workflow templates, except /stats and /diagram)."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest

from conftest import Tenant, reference_template

HEX12 = re.compile(r"[0-9a-f]{12}")
END: dict[str, Any] = {"type": "end"}


def small(template_id: str | None = "small", **extra: Any) -> dict[str, Any]:
    """A valid two-node template: an sms action then an end node."""
    body: dict[str, Any] = {
        "name": "Small",
        "start_node": "text",
        "nodes": {
            "text": {"type": "action", "action": "sms", "transitions": {"sent": "done"}},
            "done": {"type": "end", "end_status": "success"},
        },
        **extra,
    }
    if template_id is not None:
        body["id"] = template_id
    return body


def with_extra_node(nodes: dict[str, Any], node_id: str = "extra") -> dict[str, Any]:
    """`nodes` plus one more reachable-or-not end node (a change of the graph)."""
    changed = copy.deepcopy(nodes)
    changed[node_id] = {"type": "end", "end_status": "success"}
    return changed


def node_ids(template: dict[str, Any]) -> set[str]:
    return set(template["nodes"])


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def error_fields(answer: httpx.Response) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]


def enrol(tenant: Tenant, template_id: str, start: bool = True) -> dict[str, Any]:
    contact = tenant.contact()
    answer = tenant.admin.post(
        "/api/instances", json={"contact_id": contact["id"], "template_id": template_id, "start": start}
    )
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def patch(tenant: Tenant, template_id: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = tenant.admin.patch(f"/api/workflows/{template_id}", json=body)
    assert answer.status_code == 200, answer.text
    patched: dict[str, Any] = answer.json()
    return patched


def when(value: str) -> datetime:
    assert value.endswith("+00:00"), value
    return datetime.fromisoformat(value)


# ---------------------------------------------------------------------------------------------- create


def test_create_reference_template(tenant: Tenant) -> None:
    body = reference_template()
    answer = tenant.admin.post("/api/workflows", json=body)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert made["id"] == "county-outreach-v1"
    assert made["tenant"] == tenant.id
    for key in ("name", "description", "version", "start_node", "tags", "metadata"):
        assert made[key] == body[key], key
    assert node_ids(made) == node_ids(body)
    for node_id, node in body["nodes"].items():
        for key, value in node.items():
            assert made["nodes"][node_id][key] == value, (node_id, key)
    assert when(made["created_at"]) == when(made["updated_at"])
    assert tenant.admin.get("/api/workflows/county-outreach-v1").json() == made


def test_create_generates_an_id(tenant: Tenant) -> None:
    made = tenant.template(small(template_id=None))
    assert HEX12.fullmatch(made["id"])
    assert made["version"] == "1.0.0"
    assert tenant.admin.get(f"/api/workflows/{made['id']}").status_code == 200
    assert tenant.template(small(template_id=None))["id"] != made["id"]


def test_create_duplicate_id(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.template(small(name="First"))
    answer = tenant.admin.post("/api/workflows", json=small(name="Second"))
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert tenant.admin.get("/api/workflows/small").json()["name"] == "First"
    # Ids are per tenant.
    assert make_tenant().template(small())["id"] == "small"


def test_create_draft_with_validation_errors(tenant: Tenant) -> None:
    draft = {
        "id": "draft",
        "name": "Draft",
        "start_node": "missing",
        "nodes": {"a": {"type": "action", "transitions": {"go": "nowhere"}}, "b": {"type": "wait"}},
    }
    answer = tenant.admin.post("/api/workflows", json=draft)
    assert answer.status_code == 201, answer.text
    assert answer.json()["start_node"] == "missing"
    report = tenant.admin.get("/api/workflows/draft/validate").json()
    assert report["valid"] is False
    assert report["errors"]


@pytest.mark.parametrize("bad_id", ["Upper", "-dash", "has space", "a" * 65, "dots.here", "", "ünï"])
def test_create_non_slug_id(tenant: Tenant, bad_id: str) -> None:
    answer = tenant.admin.post("/api/workflows", json=small(template_id=bad_id))
    assert answer.status_code == 422, answer.text
    assert "id" in error_fields(answer)


def test_create_unknown_node_type(tenant: Tenant) -> None:
    body = small()
    body["nodes"]["text"]["type"] = "teleport"
    answer = tenant.admin.post("/api/workflows", json=body)
    assert answer.status_code == 422, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert any(f.startswith("nodes.text") for f in error_fields(answer)), answer.json()
    assert tenant.admin.get("/api/workflows/small").status_code == 404


@pytest.mark.parametrize(
    ("node_id", "field"),
    [("text", "colour"), ("text", "wait_condition"), ("done", "action"), ("done", "transitionz")],
)
def test_create_unknown_field_in_a_node(tenant: Tenant, node_id: str, field: str) -> None:
    body = small()
    body["nodes"][node_id][field] = "x"
    answer = tenant.admin.post("/api/workflows", json=body)
    assert answer.status_code == 422, answer.text
    assert any(f.startswith(f"nodes.{node_id}") and f.endswith(field) for f in error_fields(answer)), answer.json()
    assert field in answer.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"colour": "teal"}, "colour"),
        ({"tenant": "default"}, "tenant"),
        ({"created_at": "2020-01-01T00:00:00+00:00"}, "created_at"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"version": "1.0"}, "version"),
        ({"version": "v1.0.0"}, "version"),
        ({"nodes": "none"}, "nodes"),
        ({"tags": ["Not Slug"]}, "tags"),
    ],
)
def test_create_invalid_body(tenant: Tenant, change: dict[str, Any], field: str) -> None:
    answer = tenant.admin.post("/api/workflows", json={**small(), **change})
    assert answer.status_code == 422, answer.text
    assert any(f.startswith(field) for f in error_fields(answer)), answer.json()


@pytest.mark.parametrize("missing", ["name", "nodes"])
def test_create_missing_required(tenant: Tenant, missing: str) -> None:
    body = small()
    del body[missing]
    answer = tenant.admin.post("/api/workflows", json=body)
    assert answer.status_code == 422
    assert missing in error_fields(answer)


# ---------------------------------------------------------------------------------------------- get / list


def test_get_unknown_template(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    theirs = make_tenant().template(small(template_id="theirs"))
    for template_id in ("nope", "abcdefabcdef", theirs["id"]):
        answer = tenant.admin.get(f"/api/workflows/{template_id}")
        assert answer.status_code == 404
        assert answer.json()["detail"].startswith("no workflow template with id")
    assert tenant.admin.get("/api/workflows/NOT-A-SLUG").status_code == 404


def test_list_newest_first_and_tag_filter(tenant: Tenant) -> None:
    tenant.template(small("w1", tags=["outreach"]))
    tenant.template(small("w2", tags=["gotv", "outreach"]))
    tenant.template(small("w3", tags=["gotv"]))
    tenant.template(small("w4"))
    assert ids(tenant.admin.get("/api/workflows")) == ["w4", "w3", "w2", "w1"]
    assert ids(tenant.admin.get("/api/workflows", params={"tag": "outreach"})) == ["w2", "w1"]
    assert ids(tenant.admin.get("/api/workflows", params={"tag": "gotv"})) == ["w3", "w2"]
    assert ids(tenant.admin.get("/api/workflows", params={"tag": "absent"})) == []
    assert tenant.admin.get("/api/workflows", params={"tag": "Not A Slug"}).status_code == 422


def test_list_pages(tenant: Tenant) -> None:
    made = [tenant.template(small(f"p{n}"))["id"] for n in range(5)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        answer = tenant.admin.get("/api/workflows", params=params)
        seen += ids(answer)
        pages += 1
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
        assert pages < 10
    assert pages == 3
    assert seen == made[::-1]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 501}, {"cursor": "garbage"}])
def test_list_bad_paging(tenant: Tenant, params: dict[str, Any]) -> None:
    assert tenant.admin.get("/api/workflows", params=params).status_code == 422


def test_list_is_tenant_scoped(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    make_tenant().template(small("theirs"))
    tenant.template(small("mine"))
    assert ids(tenant.admin.get("/api/workflows")) == ["mine"]


# ---------------------------------------------------------------------------------------------- patch


def test_patch_name_only_keeps_the_version(tenant: Tenant) -> None:
    made = tenant.template(small())
    time.sleep(0.01)
    patched = patch(tenant, "small", {"name": "Renamed", "description": "now described"})
    assert patched["name"] == "Renamed"
    assert patched["description"] == "now described"
    assert patched["version"] == "1.0.0"
    assert patched["nodes"] == made["nodes"]
    assert patched["created_at"] == made["created_at"]
    assert when(patched["updated_at"]) > when(made["updated_at"])
    assert tenant.admin.get("/api/workflows/small").json() == patched


def test_patch_nodes_bumps_the_minor_version(tenant: Tenant) -> None:
    made = tenant.template(small())
    first = patch(tenant, "small", {"nodes": with_extra_node(made["nodes"], "extra1")})
    assert first["version"] == "1.1.0"
    assert "extra1" in first["nodes"]
    second = patch(tenant, "small", {"nodes": with_extra_node(first["nodes"], "extra2")})
    assert second["version"] == "1.2.0"
    # The same version given with a graph change is not higher: it bumps too.
    third = patch(tenant, "small", {"version": "1.2.0", "nodes": with_extra_node(second["nodes"], "extra3")})
    assert third["version"] == "1.3.0"


def test_patch_same_nodes_does_not_bump(tenant: Tenant) -> None:
    made = tenant.template(small())
    assert patch(tenant, "small", {"nodes": made["nodes"], "start_node": "text"})["version"] == "1.0.0"


def test_patch_with_higher_version_takes_it(tenant: Tenant) -> None:
    made = tenant.template(small())
    patched = patch(tenant, "small", {"version": "2.0.0", "nodes": with_extra_node(made["nodes"])})
    assert patched["version"] == "2.0.0"
    assert tenant.admin.get("/api/workflows/small").json()["version"] == "2.0.0"


def test_patch_higher_version_without_graph_change(tenant: Tenant) -> None:
    tenant.template(small())
    assert patch(tenant, "small", {"version": "1.0.1"})["version"] == "1.0.1"


@pytest.mark.parametrize("lower", ["1.0.9", "0.9.0", "1.0.0-old"])
def test_patch_lower_version_refused(tenant: Tenant, lower: str) -> None:
    made = tenant.template(small(version="1.1.0"))
    answer = tenant.admin.patch(
        "/api/workflows/small", json={"version": lower, "nodes": with_extra_node(made["nodes"])}
    )
    assert answer.status_code == 422, answer.text
    assert "version" in answer.json()["detail"]
    after = tenant.admin.get("/api/workflows/small").json()
    assert after["version"] == "1.1.0"
    assert after["nodes"] == made["nodes"]


def test_patch_start_node_bumps(tenant: Tenant) -> None:
    made = tenant.template(small())
    nodes = with_extra_node(made["nodes"], "intro")
    nodes["intro"] = {"type": "action", "action": "phone_call", "transitions": {"done": "text"}}
    first = patch(tenant, "small", {"nodes": nodes})
    assert first["version"] == "1.1.0"
    moved = patch(tenant, "small", {"start_node": "intro"})
    assert moved["start_node"] == "intro"
    assert moved["version"] == "1.2.0"


def test_patch_errors(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.template(small())
    theirs = make_tenant().template(small("theirs"))
    assert tenant.admin.patch("/api/workflows/nope", json={"name": "x"}).status_code == 404
    assert tenant.admin.patch(f"/api/workflows/{theirs['id']}", json={"name": "x"}).status_code == 404
    unknown = tenant.admin.patch("/api/workflows/small", json={"colour": "teal"})
    assert unknown.status_code == 422
    assert "colour" in error_fields(unknown)
    bad_node = tenant.admin.patch("/api/workflows/small", json={"nodes": {"x": {"type": "teleport"}}})
    assert bad_node.status_code == 422
    assert tenant.admin.get("/api/workflows/small").json()["version"] == "1.0.0"


# ---------------------------------------------------------------------------------------------- versions


def test_versions_newest_first_with_old_nodes(tenant: Tenant) -> None:
    made = tenant.template(small())
    v11 = patch(tenant, "small", {"nodes": with_extra_node(made["nodes"], "x1")})
    v12 = patch(tenant, "small", {"nodes": with_extra_node(v11["nodes"], "x2")})
    answer = tenant.admin.get("/api/workflows/small/versions")
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [v["version"] for v in items] == ["1.2.0", "1.1.0", "1.0.0"]
    for item in items:
        assert item["template_id"] == "small"
        assert item["template"]["id"] == "small"
        assert item["template"]["version"] == item["version"]
        when(item["created_at"])
    assert items[2]["template"]["nodes"] == made["nodes"]
    assert items[1]["template"]["nodes"] == v11["nodes"]
    assert items[0]["template"]["nodes"] == v12["nodes"]
    # Paged.
    first = tenant.admin.get("/api/workflows/small/versions", params={"limit": 2}).json()
    assert [v["version"] for v in first["items"]] == ["1.2.0", "1.1.0"]
    rest = tenant.admin.get("/api/workflows/small/versions", params={"limit": 2, "cursor": first["next_cursor"]})
    assert [v["version"] for v in rest.json()["items"]] == ["1.0.0"]
    assert rest.json()["next_cursor"] is None


def test_versions_of_an_unchanged_template(tenant: Tenant) -> None:
    tenant.template(small())
    patch(tenant, "small", {"name": "Renamed"})
    items = tenant.admin.get("/api/workflows/small/versions").json()["items"]
    assert [v["version"] for v in items] == ["1.0.0"]


def test_versions_unknown_template(tenant: Tenant) -> None:
    assert tenant.admin.get("/api/workflows/nope/versions").status_code == 404


# ---------------------------------------------------------------------------------------------- delete


def test_delete_template(tenant: Tenant) -> None:
    tenant.template(small())
    answer = tenant.admin.delete("/api/workflows/small")
    assert answer.status_code == 204
    assert answer.content == b""
    assert tenant.admin.get("/api/workflows/small").status_code == 404
    assert tenant.admin.get("/api/workflows/small/versions").status_code == 404
    assert tenant.admin.delete("/api/workflows/small").status_code == 404
    assert ids(tenant.admin.get("/api/workflows")) == []
    # The id is free again.
    assert tenant.template(small())["version"] == "1.0.0"


def test_delete_template_of_another_tenant(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    other.template(small())
    assert tenant.admin.delete("/api/workflows/small").status_code == 404
    assert other.admin.get("/api/workflows/small").status_code == 200


def test_instance_survives_template_edit_then_delete(tenant: Tenant) -> None:
    made = tenant.template()
    instance = enrol(tenant, made["id"])
    assert instance["template_version"] == "1.0.0"
    frozen = instance["nodes"]

    # An edit: the end node for declines is gone; declines now end as failed.
    nodes = copy.deepcopy(made["nodes"])
    del nodes["end_declined"]
    nodes["initial_call"]["transitions"]["answered_not_interested"] = "end_failed"
    nodes["schedule_door"]["transitions"]["contacted_not_interested"] = "end_failed"
    edited = patch(tenant, made["id"], {"nodes": nodes})
    assert edited["version"] == "1.1.0"
    after_edit = tenant.admin.get(f"/api/instances/{instance['id']}").json()
    assert after_edit["template_version"] == "1.0.0"
    assert after_edit["nodes"] == frozen
    assert enrol(tenant, made["id"])["template_version"] == "1.1.0"

    assert tenant.admin.delete(f"/api/workflows/{made['id']}").status_code == 204
    after_delete = tenant.admin.get(f"/api/instances/{instance['id']}")
    assert after_delete.status_code == 200
    assert after_delete.json()["template_version"] == "1.0.0"
    assert after_delete.json()["nodes"] == frozen
    # It keeps running on its frozen copy: this outcome leads to end_declined, which only the copy has.
    moved = tenant.admin.post(
        f"/api/instances/{instance['id']}/transition", json={"outcome": "answered_not_interested"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "completed"
    assert moved.json()["end_status"] == "declined"


def test_instances_cannot_be_created_from_a_deleted_template(tenant: Tenant) -> None:
    tenant.template(small())
    tenant.admin.delete("/api/workflows/small")
    contact = tenant.contact()
    answer = tenant.admin.post("/api/instances", json={"contact_id": contact["id"], "template_id": "small"})
    assert answer.status_code == 404


# ---------------------------------------------------------------------------------------------- clone


def test_clone_with_given_id_and_name(tenant: Tenant) -> None:
    made = tenant.template()
    bumped = patch(tenant, made["id"], {"nodes": with_extra_node(made["nodes"])})
    assert bumped["version"] == "1.1.0"
    answer = tenant.admin.post(f"/api/workflows/{made['id']}/clone", json={"id": "county-2026", "name": "County 2026"})
    assert answer.status_code == 201, answer.text
    clone = answer.json()
    assert clone["id"] == "county-2026"
    assert clone["name"] == "County 2026"
    assert clone["version"] == "1.0.0"
    assert clone["nodes"] == bumped["nodes"]
    assert clone["start_node"] == bumped["start_node"]
    assert clone["tenant"] == tenant.id
    assert tenant.admin.get("/api/workflows/county-2026").json() == clone
    assert [v["version"] for v in tenant.admin.get("/api/workflows/county-2026/versions").json()["items"]] == ["1.0.0"]
    # The source is untouched.
    assert tenant.admin.get(f"/api/workflows/{made['id']}").json() == bumped


@pytest.mark.parametrize("body", [None, {}, {"id": "given-only"}])
def test_clone_default_name(tenant: Tenant, body: dict[str, Any] | None) -> None:
    tenant.template(small(name="Small flow"))
    if body is None:
        answer = tenant.admin.post("/api/workflows/small/clone")
    else:
        answer = tenant.admin.post("/api/workflows/small/clone", json=body)
    assert answer.status_code == 201, answer.text
    clone = answer.json()
    assert clone["name"] == "Small flow (copy)"
    assert clone["version"] == "1.0.0"
    if body and "id" in body:
        assert clone["id"] == body["id"]
    else:
        assert HEX12.fullmatch(clone["id"])


def test_clone_onto_an_existing_id(tenant: Tenant) -> None:
    tenant.template(small())
    tenant.template(small("taken", name="Taken"))
    answer = tenant.admin.post("/api/workflows/small/clone", json={"id": "taken"})
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert tenant.admin.get("/api/workflows/taken").json()["name"] == "Taken"
    assert tenant.admin.post("/api/workflows/small/clone", json={"id": "small"}).status_code == 409


def test_clone_unknown_source(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    make_tenant().template(small("theirs"))
    for source in ("nope", "theirs"):
        answer = tenant.admin.post(f"/api/workflows/{source}/clone", json={"id": "copy"})
        assert answer.status_code == 404
        assert answer.json()["detail"].startswith("no workflow template with id")
    assert tenant.admin.get("/api/workflows/copy").status_code == 404


@pytest.mark.parametrize("body", [{"id": "Bad Id"}, {"name": ""}, {"colour": "teal"}])
def test_clone_invalid_body(tenant: Tenant, body: dict[str, Any]) -> None:
    tenant.template(small())
    assert tenant.admin.post("/api/workflows/small/clone", json=body).status_code == 422


# ---------------------------------------------------------------------------------------------- validate


def test_validate_reference_template(tenant: Tenant) -> None:
    made = tenant.template()
    answer = tenant.admin.get(f"/api/workflows/{made['id']}/validate")
    assert answer.status_code == 200
    assert answer.json() == {"valid": True, "errors": [], "warnings": []}


def test_validate_unknown_template(tenant: Tenant) -> None:
    assert tenant.admin.get("/api/workflows/nope/validate").status_code == 404


SMS_TO_END: dict[str, Any] = {"type": "action", "action": "sms", "transitions": {"sent": "end"}}

BROKEN: list[tuple[str, str, str | None, str, dict[str, Any]]] = [
    # (level, code, node, start_node, nodes)
    ("errors", "start_node_unknown", None, "ghost", {"a": SMS_TO_END, "end": END}),
    (
        "errors",
        "unknown_transition_target",
        "a",
        "a",
        {"a": {"type": "action", "action": "sms", "transitions": {"sent": "end", "failed": "ghost"}}, "end": END},
    ),
    (
        "errors",
        "dead_end",
        "b",
        "a",
        {
            "a": {"type": "action", "action": "sms", "transitions": {"sent": "b", "x": "end"}},
            "b": {"type": "action", "action": "sms"},
            "end": END,
        },
    ),
    ("errors", "end_has_transitions", "end", "a", {"a": SMS_TO_END, "end": {"type": "end", "transitions": {"x": "a"}}}),
    ("errors", "action_missing", "a", "a", {"a": {"type": "action", "transitions": {"sent": "end"}}, "end": END}),
    (
        "errors",
        "rule_invalid",
        "a",
        "a",
        {"a": {"type": "decision", "rule": {"type": "magic"}, "transitions": {"yes": "end"}}, "end": END},
    ),
    (
        "errors",
        "expression_syntax",
        "a",
        "a",
        {
            "a": {
                "type": "decision",
                "rule": {"type": "heuristic", "expression": "state.x >"},
                "transitions": {"true": "end", "false": "end"},
            },
            "end": END,
        },
    ),
    (
        "errors",
        "wait_condition_invalid",
        "a",
        "a",
        {
            "a": {
                "type": "wait",
                "wait_condition": {"type": "duration", "duration": "forever"},
                "transitions": {"elapsed": "end"},
            },
            "end": END,
        },
    ),
    (
        "errors",
        "webhook_url_invalid",
        "a",
        "a",
        {
            "a": {
                "type": "webhook",
                "webhook_url": "ftp://example.com/x",
                "transitions": {"success": "end", "failure": "end"},
            },
            "end": END,
        },
    ),
    (
        "warnings",
        "unreachable",
        "orphan",
        "a",
        {"a": SMS_TO_END, "orphan": SMS_TO_END, "end": END},
    ),
    (
        "warnings",
        "ai_no_fallback",
        "a",
        "a",
        {
            "a": {
                "type": "decision",
                "rule": {"type": "ai", "prompt": "Pick one"},
                "transitions": {"text": "end", "mail": "end"},
            },
            "end": END,
        },
    ),
]


@pytest.mark.parametrize(("level", "code", "node", "start", "nodes"), BROKEN, ids=[case[1] for case in BROKEN])
def test_validate_reports(
    tenant: Tenant, level: str, code: str, node: str | None, start: str, nodes: dict[str, Any]
) -> None:
    made = tenant.template({"id": "broken", "name": "Broken", "start_node": start, "nodes": nodes})
    answer = tenant.admin.get(f"/api/workflows/{made['id']}/validate")
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert set(report) == {"valid", "errors", "warnings"}
    for item in report["errors"] + report["warnings"]:
        assert set(item) == {"code", "node", "message"}
        assert isinstance(item["message"], str)
        assert item["message"].strip()
    found = [(i["code"], i["node"]) for i in report[level]]
    assert (code, node) in found, report
    assert report["valid"] is (not report["errors"])
    if level == "errors":
        assert report["valid"] is False
    else:
        assert report["errors"] == [], report
        assert report["valid"] is True


def test_instance_from_a_template_with_errors(tenant: Tenant) -> None:
    tenant.template(
        {
            "id": "broken",
            "name": "Broken",
            "start_node": "a",
            "nodes": {"a": {"type": "action", "transitions": {"sent": "ghost"}}, "end": END},
        }
    )
    contact = tenant.contact()
    answer = tenant.admin.post("/api/instances", json={"contact_id": contact["id"], "template_id": "broken"})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert isinstance(body["detail"], str)
    codes = {e["code"] for e in body["errors"]}
    assert {"action_missing", "unknown_transition_target"} <= codes
    assert all(e["message"] for e in body["errors"])
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json()["workflow_instance_ids"] == []
    assert ids(tenant.admin.get("/api/instances")) == []


def test_instance_from_a_template_with_only_warnings(tenant: Tenant) -> None:
    tenant.template(
        {
            "id": "warned",
            "name": "Warned",
            "start_node": "a",
            "nodes": {"a": SMS_TO_END, "orphan": SMS_TO_END, "end": END},
        }
    )
    enrol(tenant, "warned")


def test_fixed_draft_can_be_enrolled(tenant: Tenant) -> None:
    tenant.template(
        {
            "id": "draft",
            "name": "Draft",
            "start_node": "a",
            "nodes": {"a": {"type": "action", "transitions": {"sent": "end"}}, "end": END},
        }
    )
    contact = tenant.contact()
    body = {"contact_id": contact["id"], "template_id": "draft"}
    assert tenant.admin.post("/api/instances", json=body).status_code == 422
    patch(tenant, "draft", {"nodes": {"a": SMS_TO_END, "end": END}})
    assert tenant.admin.get("/api/workflows/draft/validate").json()["valid"] is True
    assert tenant.admin.post("/api/instances", json=body).status_code == 201
