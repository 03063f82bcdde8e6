"""`GET /api/workflows/{id}/stats` and `/diagram` over HTTP, on every store: the numbers after a few steps, the
drawing of the reference template (valid SVG with every node and edge label), hostile names shown as text,
counts and one instance's path, and the errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from conftest import REFERENCE_ID, Tenant, reference_template

SVG = "{http://www.w3.org/2000/svg}"


def stats(tenant: Tenant, template_id: str = REFERENCE_ID, **params: Any) -> dict[str, Any]:
    answer = tenant.admin.get(f"/api/workflows/{template_id}/stats", params=params)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def step(tenant: Tenant, instance_id: str, outcome: str) -> dict[str, Any]:
    answer = tenant.admin.post(f"/api/instances/{instance_id}/transition", json={"outcome": outcome})
    assert answer.status_code == 200, answer.text
    moved: dict[str, Any] = answer.json()
    return moved


def test_stats_count_where_instances_are_and_what_they_did(tenant: Tenant) -> None:
    tenant.template()
    fresh = stats(tenant)
    assert fresh["template_id"] == REFERENCE_ID
    assert set(fresh["nodes"]) == set(reference_template()["nodes"])
    assert fresh["nodes"]["initial_call"] == {
        "current": 0,
        "entered": 0,
        "outcomes": {},
        "median_seconds": None,
        "retries": {},
    }
    assert fresh["end_statuses"] == {"success": 0, "declined": 0, "failed": 0}
    assert set(fresh["statuses"]) == {"pending", "active", "waiting", "paused", "completed", "failed", "cancelled"}
    started = [tenant.instance(start=True)["id"] for _ in range(3)]
    tenant.instance()  # pending: not at any node yet
    step(tenant, started[0], "answered_not_interested")
    step(tenant, started[1], "no_answer")
    numbers = stats(tenant)
    call = numbers["nodes"]["initial_call"]
    assert (call["current"], call["entered"]) == (1, 3)
    assert call["outcomes"] == {"answered_not_interested": 1, "no_answer": 1}
    assert call["median_seconds"] is not None
    assert call["median_seconds"] >= 0
    assert numbers["nodes"]["schedule_door"]["current"] == 1
    assert numbers["nodes"]["end_declined"] == {
        "current": 0,
        "entered": 1,
        "outcomes": {},
        "median_seconds": None,
        "retries": {},
    }
    assert numbers["statuses"] == {
        "pending": 1,
        "active": 2,
        "waiting": 0,
        "paused": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert numbers["end_statuses"] == {"success": 0, "declined": 1, "failed": 0}
    # A window in the past counts nothing that happened, but where instances are is now.
    old = stats(tenant, since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00Z")
    assert old["nodes"]["initial_call"] == {
        "current": 1,
        "entered": 0,
        "outcomes": {},
        "median_seconds": None,
        "retries": {},
    }
    assert (old["since"], old["until"]) == ("2020-01-01T00:00:00+00:00", "2020-01-02T00:00:00+00:00")
    assert old["statuses"] == numbers["statuses"]
    recent = stats(tenant, since="2020-01-01")  # a date alone, and no zone, is UTC
    assert recent["nodes"]["initial_call"]["entered"] == 3
    assert recent["since"] == "2020-01-01T00:00:00+00:00"


def test_stats_errors_are_clear(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.template()
    missing = tenant.admin.get("/api/workflows/no-such/stats")
    assert (missing.status_code, missing.json()["detail"]) == (404, "no workflow template with id 'no-such'")
    other = make_tenant().admin.get(f"/api/workflows/{REFERENCE_ID}/stats")
    assert other.status_code == 404  # another tenant's template does not exist here
    backwards = tenant.admin.get(
        f"/api/workflows/{REFERENCE_ID}/stats", params={"since": "2026-02-01", "until": "2026-01-01"}
    )
    assert (backwards.status_code, backwards.json()["detail"]) == (422, "until: must be later than since")
    garbled = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/stats", params={"since": "last tuesday"})
    assert garbled.status_code == 422
    assert "since" in garbled.json()["detail"]
    assert tenant.as_role("volunteer").get(f"/api/workflows/{REFERENCE_ID}/stats").status_code == 403  # as templates


def _svg(text: str) -> ET.Element:
    return ET.fromstring(text)  # a parse error fails the test


def _texts(root: ET.Element) -> str:
    return " ".join("".join(e.itertext()) for e in root.iter(f"{SVG}text"))


def test_the_reference_template_drawn_is_valid_svg_with_every_label(tenant: Tenant) -> None:
    tenant.template()
    answer = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("image/svg+xml")
    words = _texts(_svg(answer.text))
    for node in reference_template()["nodes"].values():
        assert node["name"].split()[0] in words, node["name"]
        for outcome in node.get("transitions", {}):
            assert outcome in words, outcome
    mermaid = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram", params={"format": "mermaid"})
    assert mermaid.status_code == 200
    assert mermaid.headers["content-type"].startswith("text/vnd.mermaid")
    assert "flowchart TD" in mermaid.text
    assert "answered_interested" in mermaid.text


def test_names_that_hold_markup_are_drawn_as_text(tenant: Tenant) -> None:
    body = reference_template()
    body["id"] = "hostile"
    body["name"] = "<script>alert(1)</script>"
    body["nodes"]["initial_call"]["name"] = '<img src=x onerror="alert(2)">'
    tenant.template(body)
    answer = tenant.admin.get("/api/workflows/hostile/diagram")
    assert answer.status_code == 200
    assert "<script>" not in answer.text
    assert "<img" not in answer.text
    root = _svg(answer.text)
    assert not [e for e in root.iter() if e.tag in (f"{SVG}script", "script", f"{SVG}foreignObject")]
    assert "<script>alert(1)</script>" in "".join(root.itertext())


def test_counts_and_one_instances_path_are_drawn(tenant: Tenant) -> None:
    tenant.template()
    walker = tenant.instance(start=True)["id"]
    tenant.instance(start=True)
    step(tenant, walker, "no_answer")
    counted = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram", params={"stats": "true"})
    assert counted.status_code == 200
    badges = [e for e in _svg(counted.text).iter(f"{SVG}rect") if e.get("class") == "count"]
    assert len(badges) == len(reference_template()["nodes"])  # every node labelled, zeros included
    assert "count" not in tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram").text
    labelled = tenant.admin.get(
        f"/api/workflows/{REFERENCE_ID}/diagram", params={"stats": "true", "format": "mermaid"}
    ).text
    assert [line for line in labelled.splitlines() if "1 here" in line and ("Initial" in line or "Door" in line)]
    path = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram", params={"instance_id": walker})
    assert path.status_code == 200
    plain = tenant.admin.get(f"/api/workflows/{REFERENCE_ID}/diagram")
    assert path.text != plain.text  # the path and the current node stand out
    mermaid = tenant.admin.get(
        f"/api/workflows/{REFERENCE_ID}/diagram", params={"instance_id": walker, "format": "mermaid"}
    )
    assert "class" in mermaid.text
    assert "current" in mermaid.text


def test_diagram_errors_are_clear(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.template()
    url = f"/api/workflows/{REFERENCE_ID}/diagram"
    bad_format = tenant.admin.get(url, params={"format": "png"})
    assert bad_format.status_code == 422
    assert "format" in bad_format.json()["detail"]
    ghost = tenant.admin.get(url, params={"instance_id": "ghost"})
    assert (ghost.status_code, ghost.json()["detail"]) == (404, "no instance with id 'ghost'")
    body = reference_template()
    body["id"] = "second"
    tenant.template(body)
    elsewhere = tenant.instance(template_id="second")["id"]
    wrong = tenant.admin.get(url, params={"instance_id": elsewhere})
    assert wrong.status_code == 404
    assert wrong.json()["detail"] == f"no instance with id {elsewhere!r} of template {REFERENCE_ID!r}"
    stranger = make_tenant()
    assert stranger.admin.get(url).status_code == 404
    assert stranger.admin.get("/api/workflows/second/diagram").status_code == 404
    assert tenant.as_role("volunteer").get(url).status_code == 403  # volunteers do not read templates
    assert tenant.as_role("viewer").get(url, params={"instance_id": elsewhere}).status_code == 404
