"""The interactive docs work offline and know how to authenticate; small response details users rely on."""

from __future__ import annotations

import re

import httpx

from conftest import ONE_STORE, Server, Tenant

pytestmark = ONE_STORE


def test_docs_page_loads_nothing_from_outside(server: Server) -> None:
    page = httpx.get(f"{server.base_url}/docs", timeout=10)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(r"url: ?'([^']+)'", page.text)
    assert urls
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url} from outside the server"
        assert httpx.get(f"{server.base_url}{url}", timeout=10).status_code == 200, url


def test_openapi_declares_bearer_auth(server: Server) -> None:
    spec = httpx.get(f"{server.base_url}/openapi.json", timeout=10).json()
    schemes = spec["components"]["securitySchemes"]
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes.values())
    assert spec["paths"]["/api/contacts"]["get"]["security"]


def test_401_says_how_to_authenticate(server: Server) -> None:
    answer = httpx.get(f"{server.base_url}/api/contacts", timeout=10)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_waiting_instances_say_what_they_wait_for(tenant: Tenant) -> None:
    nodes = {
        "decide": {
            "type": "decision",
            "rule": {"type": "ai", "prompt": "p", "fallback": "go"},
            "transitions": {"go": "rsvp"},
        },
        "rsvp": {
            "type": "wait",
            "wait_condition": {"type": "event", "event": "rsvp_received"},
            "transitions": {"received": "pause"},
        },
        "pause": {
            "type": "wait",
            "wait_condition": {"type": "duration", "duration": "P1D"},
            "transitions": {"elapsed": "hook"},
        },
        "hook": {
            "type": "webhook",
            "webhook_url": "https://example.org/hook",
            "transitions": {"success": "end", "failure": "end"},
        },
        "end": {"type": "end"},
    }
    template = tenant.template({"name": "waits", "start_node": "decide", "nodes": nodes})
    instance = tenant.instance(template_id=template["id"], start=True)
    seen = [instance["waiting_for"]]
    for outcome in ("go", "received", "elapsed"):
        moved = tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": outcome})
        assert moved.status_code == 200, moved.text
        seen.append(moved.json()["waiting_for"])
    assert seen == ["ai_decision", "event:rsvp_received", "timer", "webhook"]


def test_completion_is_attributed_to_whoever_reached_the_end(tenant: Tenant) -> None:
    staff = tenant.token("staff")
    client = tenant.client(staff["token"])
    instance = tenant.instance(start=True)
    done = client.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "answered_not_interested"})
    assert done.status_code == 200
    events = tenant.admin.get(f"/api/instances/{instance['id']}/timeline").json()["items"]
    completed = [e for e in events if e["type"] == "instance_completed"]
    assert [e["actor"] for e in completed] == [staff["id"]]
