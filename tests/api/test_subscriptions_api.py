"""`/api/subscriptions` over HTTP on each store: the records, their secrets, bad input (422 naming the field),
roles and tenancy. What deliveries do is tests/store/test_deliveries_run.py's (fake clock) and
tests/system/test_webhooks.py's (real processes)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Tenant

URL = "https://1.1.1.1/hooks/cbw"  # a public address: the guard lets it through without a DNS answer


def secret_of(n: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(n))).decode()


def create(tenant: Tenant, **body: Any) -> dict[str, Any]:
    answer = tenant.admin.post("/api/subscriptions", json={"url": URL, "events": ["*"], **body})
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def test_a_subscription_shows_its_secret_once(tenant: Tenant) -> None:
    made = create(tenant, events=["node_entered", "instance_completed", "node_entered"])
    assert made["events"] == ["node_entered", "instance_completed"]  # duplicates dropped
    assert (made["enabled"], made["disabled_reason"], made["failure_count"], made["failing_since"]) == (
        True,
        None,
        0,
        None,
    )
    assert made["secret"].startswith("whsec_")
    assert len(base64.b64decode(made["secret"].removeprefix("whsec_"), validate=True)) == 32
    assert len(made["id"]) == 12
    shown = tenant.admin.get(f"/api/subscriptions/{made['id']}").json()
    assert "secret" not in shown
    assert shown == {k: v for k, v in made.items() if k != "secret"}
    listed = tenant.admin.get("/api/subscriptions").json()
    assert listed["items"] == [shown]
    assert "secret" not in str(listed)

    given = secret_of(24)
    assert create(tenant, secret=given)["secret"] == given
    newest = tenant.admin.get("/api/subscriptions", params={"limit": 1}).json()
    assert newest["items"][0]["id"] != made["id"]
    assert newest["next_cursor"]


def test_patch_changes_disables_and_re_enables(tenant: Tenant) -> None:
    made = create(tenant)
    path = f"/api/subscriptions/{made['id']}"
    changed = tenant.admin.patch(path, json={"url": "https://1.0.0.1/other", "events": ["user_note"]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["events"]) == ("https://1.0.0.1/other", ["user_note"])
    off = tenant.admin.patch(path, json={"enabled": False}).json()
    assert (off["enabled"], off["disabled_reason"]) == (False, "disabled by an admin")
    on = tenant.admin.patch(path, json={"enabled": True}).json()
    assert (on["enabled"], on["disabled_reason"], on["failure_count"]) == (True, None, 0)
    assert tenant.admin.get(f"{path}/deliveries").json() == {"items": [], "next_cursor": None}
    assert tenant.admin.get(f"{path}/deliveries", params={"status": "failed"}).status_code == 200
    assert tenant.admin.delete(path).status_code == 204
    assert tenant.admin.get(path).status_code == 404
    assert tenant.admin.delete(path).status_code == 404


BAD: list[tuple[dict[str, Any], str]] = [
    ({"url": "ftp://files.example.org/in"}, "url"),
    ({"url": "not a url"}, "url"),
    ({"url": "http://127.0.0.1:9/in"}, "url"),  # the SSRF guard: loopback
    ({"url": "http://169.254.169.254/latest"}, "url"),  # cloud metadata
    ({"url": "http://[::1]/in"}, "url"),
    ({"url": "https://" + "a" * 2100 + ".org/"}, "url"),
    ({"events": []}, "events"),
    ({"events": ["no_such_event"]}, "events"),
    ({"events": ["*", "node_entered"]}, "events"),
    ({"events": "node_entered"}, "events"),
    ({"secret": "not-a-secret"}, "secret"),
    ({"secret": "whsec_!!!not base64!!!"}, "secret"),
    ({"secret": secret_of(10)}, "secret"),  # too short a key
    ({"secret": secret_of(65)}, "secret"),
    ({"colour": "blue"}, "colour"),
]


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_input_is_a_422_naming_the_field(tenant: Tenant, change: dict[str, Any], field: str) -> None:
    body = {"url": URL, "events": ["*"], **change}
    answer = tenant.admin.post("/api/subscriptions", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(field), answer.json()
    assert tenant.admin.get("/api/subscriptions").json()["items"] == []


def test_bad_changes_and_filters_are_422_and_nothing_changes(tenant: Tenant) -> None:
    made = create(tenant)
    path = f"/api/subscriptions/{made['id']}"
    for body in ({"url": "http://10.0.0.8/in"}, {"events": ["nope"]}, {"enabled": "maybe"}, {"secret": secret_of(32)}):
        answer = tenant.admin.patch(path, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["detail"]
    assert tenant.admin.get(path).json() == {k: v for k, v in made.items() if k != "secret"}
    assert tenant.admin.get(f"{path}/deliveries", params={"status": "lost"}).status_code == 422
    assert (
        tenant.admin.post("/api/subscriptions", content=b"{", headers={"Content-Type": "application/json"}).status_code
        == 400
    )


def test_only_admins_manage_subscriptions(tenant: Tenant) -> None:
    made = create(tenant)
    path = f"/api/subscriptions/{made['id']}"
    for role in ("staff", "volunteer", "viewer"):
        client = tenant.as_role(role)
        calls: list[tuple[str, str, dict[str, Any] | None]] = [
            ("GET", "/api/subscriptions", None),
            ("POST", "/api/subscriptions", {"url": URL, "events": ["*"]}),
            ("GET", path, None),
            ("PATCH", path, {"enabled": False}),
            ("DELETE", path, None),
            ("GET", f"{path}/deliveries", None),
            ("POST", f"{path}/deliveries/abcdef012345/redeliver", None),
        ]
        for method, url, body in calls:
            answer = client.request(method, url, json=body)
            assert answer.status_code == 403, (role, answer.request.method, answer.request.url, answer.text)
    assert tenant.admin.get(path).json()["enabled"] is True


def test_another_tenants_subscription_answers_404(make_tenant: Callable[[], Tenant]) -> None:
    a, b = make_tenant(), make_tenant()
    made = create(a)
    path = f"/api/subscriptions/{made['id']}"
    for answer in (
        b.admin.get(path),
        b.admin.patch(path, json={"enabled": False}),
        b.admin.delete(path),
        b.admin.get(f"{path}/deliveries"),
        b.admin.post(f"{path}/deliveries/abcdef012345/redeliver"),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["detail"]
    assert b.admin.get("/api/subscriptions").json()["items"] == []
    assert a.admin.get(path).json()["enabled"] is True
    unknown = a.admin.post(f"{path}/deliveries/abcdef012345/redeliver")
    assert unknown.status_code == 404
    assert "delivery" in unknown.json()["detail"]
    assert a.admin.get("/api/subscriptions/not%20an%20id").status_code == 404
