"""Health, authentication, tenants, tokens and the OpenAPI document (api.md § Conventions and § Other)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conftest import Server, Tenant

HEX12 = re.compile(r"[0-9a-f]{12}")
ROLES = ["admin", "staff", "volunteer", "viewer"]


@pytest.fixture
def anonymous(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


# ---------------------------------------------------------------------------------------------- health


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-token", "garbage"])
def test_health_needs_no_auth(server: Server, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with server.client() as client:
        answer = client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ok"


# ---------------------------------------------------------------------------------------------- 401

API_ROUTES: list[tuple[str, str]] = [
    ("POST", "/api/tenants"),
    ("GET", "/api/tenants"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens"),
    ("DELETE", "/api/tokens/abcdefabcdef"),
    ("GET", "/api/contacts"),
    ("POST", "/api/contacts"),
    ("GET", "/api/contacts/search?q=ann"),
    ("GET", "/api/contacts/abcdefabcdef"),
    ("PATCH", "/api/contacts/abcdefabcdef"),
    ("DELETE", "/api/contacts/abcdefabcdef"),
    ("POST", "/api/contacts/abcdefabcdef/tags/donor"),
    ("DELETE", "/api/contacts/abcdefabcdef/tags/donor"),
    ("PUT", "/api/contacts/by-external-id/crm-1"),
    ("GET", "/api/contacts/abcdefabcdef/timeline"),
    ("GET", "/api/workflows"),
    ("POST", "/api/workflows"),
    ("GET", "/api/workflows/county-outreach-v1"),
    ("PATCH", "/api/workflows/county-outreach-v1"),
    ("DELETE", "/api/workflows/county-outreach-v1"),
    ("GET", "/api/workflows/county-outreach-v1/versions"),
    ("POST", "/api/workflows/county-outreach-v1/clone"),
    ("GET", "/api/workflows/county-outreach-v1/validate"),
    ("GET", "/api/instances"),
    ("POST", "/api/instances"),
    ("GET", "/api/instances/abcdefabcdef"),
    ("DELETE", "/api/instances/abcdefabcdef"),
    ("POST", "/api/instances/abcdefabcdef/start"),
    ("POST", "/api/instances/abcdefabcdef/pause"),
    ("POST", "/api/instances/abcdefabcdef/resume"),
    ("POST", "/api/instances/abcdefabcdef/cancel"),
    ("POST", "/api/instances/abcdefabcdef/transition"),
    ("POST", "/api/instances/abcdefabcdef/state"),
    ("POST", "/api/instances/abcdefabcdef/notes"),
    ("POST", "/api/instances/abcdefabcdef/tags/vip"),
    ("DELETE", "/api/instances/abcdefabcdef/tags/vip"),
    ("GET", "/api/instances/abcdefabcdef/timeline"),
]

BAD_AUTH: dict[str, dict[str, str]] = {
    "missing": {},
    "malformed": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
    "unknown token": {"Authorization": "Bearer cbw_this-token-was-never-issued-0000000000"},
}
MALFORMED: dict[str, str] = {
    "empty": "",
    "scheme only": "Bearer",
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
    "token scheme": "Token test-superadmin-token-0123456789",
    "raw token": "test-superadmin-token-0123456789",
    "no space": "Bearertest-superadmin-token-0123456789",
    "admin token with a suffix": "Bearer test-superadmin-token-0123456789x",
    "admin token truncated": "Bearer test-superadmin-token-012345678",
    "two tokens": "Bearer test-superadmin-token-0123456789 test-superadmin-token-0123456789",
}


def json_for(method: str) -> dict[str, Any] | None:
    """A plausible body, so that nothing but the missing credential is wrong."""
    return {"name": "Someone"} if method in ("POST", "PUT", "PATCH") else None


def assert_401(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str)
    assert detail.strip()


@pytest.mark.parametrize("auth", list(BAD_AUTH), ids=list(BAD_AUTH))
@pytest.mark.parametrize(("method", "path"), API_ROUTES, ids=[f"{m} {p}" for m, p in API_ROUTES])
def test_api_routes_need_a_valid_token(anonymous: httpx.Client, method: str, path: str, auth: str) -> None:
    assert_401(anonymous.request(method, path, headers=BAD_AUTH[auth], json=json_for(method)))


@pytest.mark.parametrize("header", list(MALFORMED.values()), ids=list(MALFORMED))
@pytest.mark.parametrize(("method", "path"), [("GET", "/api/contacts"), ("POST", "/api/tenants")])
def test_malformed_authorization_headers(anonymous: httpx.Client, method: str, path: str, header: str) -> None:
    answer = anonymous.request(method, path, headers={"Authorization": header}, json=json_for(method))
    assert_401(answer)


def test_401_changes_nothing(anonymous: httpx.Client, tenant: Tenant) -> None:
    contact = tenant.contact(name="Untouched")
    for method, path in [("PATCH", f"/api/contacts/{contact['id']}"), ("DELETE", f"/api/contacts/{contact['id']}")]:
        answer = anonymous.request(method, path, json={"name": "Changed"} if method == "PATCH" else None)
        assert answer.status_code == 401
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json() == contact


# ---------------------------------------------------------------------------------------------- tenants


def new_tenant_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def test_superadmin_creates_a_tenant(root: httpx.Client, server: Server) -> None:
    tenant_id = new_tenant_id("acme")
    answer = root.post("/api/tenants", json={"id": tenant_id, "name": "Acme Campaign"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["id"] == tenant_id
    assert body["name"] == "Acme Campaign"
    token = body["admin_token"]
    assert isinstance(token, str)
    assert len(token) >= 20

    in_default = root.post("/api/contacts", json={"name": "Default person"})
    assert in_default.status_code == 201
    with server.client(token) as admin:
        made = admin.post("/api/contacts", json={"id": "new-tenant-person", "name": "New tenant person"})
        assert made.status_code == 201, made.text
        assert made.json()["tenant"] == tenant_id
        assert [c["id"] for c in admin.get("/api/contacts").json()["items"]] == ["new-tenant-person"]
        # Nothing of `default` is visible with it.
        assert admin.get(f"/api/contacts/{in_default.json()['id']}").status_code == 404
        assert admin.post("/api/tokens", json={"role": "staff", "tenant": "default"}).status_code == 403
        listed = admin.get("/api/tokens").json()["items"]
        assert {t["tenant"] for t in listed} == {tenant_id}
        assert [t["role"] for t in listed] == ["admin"]
    assert root.get("/api/contacts/new-tenant-person").status_code == 404
    assert root.delete(f"/api/contacts/{in_default.json()['id']}").status_code == 204


def test_tenant_id_generated_when_absent(root: httpx.Client, server: Server) -> None:
    answer = root.post("/api/tenants", json={"name": "No id given"})
    assert answer.status_code == 201, answer.text
    assert HEX12.fullmatch(answer.json()["id"])
    with server.client(answer.json()["admin_token"]) as admin:
        assert admin.get("/api/contacts").status_code == 200


def test_duplicate_tenant(root: httpx.Client, tenant: Tenant) -> None:
    answer = root.post("/api/tenants", json={"id": tenant.id, "name": "Again"})
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert root.post("/api/tenants", json={"id": "default", "name": "Again"}).status_code == 409
    # The first admin token still works.
    assert tenant.admin.get("/api/contacts").status_code == 200


@pytest.mark.parametrize("role", ["admin", "staff", "viewer", "volunteer"])
def test_only_a_superadmin_creates_tenants(tenant: Tenant, role: str) -> None:
    client = tenant.admin if role == "admin" else tenant.as_role(role)
    tenant_id = new_tenant_id("refused")
    answer = client.post("/api/tenants", json={"id": tenant_id, "name": "Refused"})
    assert answer.status_code == 403, answer.text
    assert isinstance(answer.json()["detail"], str)


def test_superadmin_lists_every_tenant_newest_first(root: httpx.Client, make_tenant: Callable[[], Tenant]) -> None:
    older, newer = make_tenant(), make_tenant()
    first = root.get("/api/tenants", params={"limit": 2})
    assert first.status_code == 200, first.text
    assert [t["id"] for t in first.json()["items"]] == [newer.id, older.id]
    assert set(first.json()["items"][0]) == {"id", "name", "created_at"}
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        page = root.get("/api/tenants", params=params).json()
        assert len(page["items"]) <= 3
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    ids = [t["id"] for t in seen]
    assert len(ids) == len(set(ids))
    assert {"default", older.id, newer.id} <= set(ids)
    assert ids[-1] == "default"  # the first tenant of all
    stamps = [t["created_at"] for t in seen]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(("params", "field"), [({"cursor": "not-ours"}, "cursor"), ({"limit": 0}, "limit")])
def test_tenant_list_refuses_bad_paging(root: httpx.Client, params: dict[str, Any], field: str) -> None:
    answer = root.get("/api/tenants", params=params)
    assert answer.status_code == 422, answer.text
    assert field in str(answer.json())


@pytest.mark.parametrize("role", ["admin", "staff", "viewer", "volunteer"])
def test_only_a_superadmin_lists_tenants(tenant: Tenant, role: str) -> None:
    client = tenant.admin if role == "admin" else tenant.as_role(role)
    answer = client.get("/api/tenants")
    assert answer.status_code == 403, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert tenant.id not in answer.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"id": "Bad Id", "name": "X"}, "id"),
        ({"id": "a" * 65, "name": "X"}, "id"),
        ({"name": "X", "plan": "gold"}, "plan"),
    ],
)
def test_invalid_tenant_body(root: httpx.Client, body: dict[str, Any], field: str) -> None:
    answer = root.post("/api/tenants", json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]]


# ---------------------------------------------------------------------------------------------- tokens

EXPECTED_ON_CONTACTS = {"admin": 200, "staff": 200, "viewer": 200, "volunteer": 403}


@pytest.mark.parametrize("role", ROLES)
def test_admin_creates_a_token_of_each_role(tenant: Tenant, role: str) -> None:
    answer = tenant.admin.post("/api/tokens", json={"role": role, "name": f"the {role}"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert set(body) >= {"id", "token", "role", "tenant", "name"}
    assert body["role"] == role
    assert body["tenant"] == tenant.id
    assert body["name"] == f"the {role}"
    assert isinstance(body["token"], str)
    assert len(body["token"]) >= 20
    client = tenant.client(body["token"])
    assert client.get("/api/contacts").status_code == EXPECTED_ON_CONTACTS[role]
    # Shown once: the list holds the token, never its secret.
    listed = tenant.admin.get("/api/tokens")
    assert listed.status_code == 200
    assert body["token"] not in listed.text
    mine = [t for t in listed.json()["items"] if t["id"] == body["id"]]
    assert len(mine) == 1
    assert mine[0]["role"] == role
    assert mine[0]["tenant"] == tenant.id


def test_token_without_name(tenant: Tenant) -> None:
    answer = tenant.admin.post("/api/tokens", json={"role": "viewer"})
    assert answer.status_code == 201, answer.text
    assert tenant.client(answer.json()["token"]).get("/api/workflows").status_code == 200


SECRET_KEYS = {"token", "secret", "hash", "token_hash", "secret_hash", "hashed", "key", "value"}


def test_token_list_has_no_secrets(tenant: Tenant) -> None:
    issued = [tenant.token(role)["token"] for role in ROLES] + [tenant.admin_token]
    answer = tenant.admin.get("/api/tokens")
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert len(items) == 5
    assert sorted(t["role"] for t in items) == sorted(["admin", *ROLES])
    for item in items:
        assert not (set(item) & SECRET_KEYS), item
        assert {"id", "tenant", "role", "created_at"} <= set(item)
        for value in item.values():
            assert not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)), item
    for secret in issued:
        assert secret not in answer.text


def test_token_list_pages(tenant: Tenant) -> None:
    for n in range(4):
        tenant.token("viewer", name=f"viewer {n}")
    first = tenant.admin.get("/api/tokens", params={"limit": 3}).json()
    assert len(first["items"]) == 3
    rest = tenant.admin.get("/api/tokens", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert rest["next_cursor"] is None
    assert len({t["id"] for t in first["items"] + rest["items"]}) == 5
    assert tenant.admin.get("/api/tokens", params={"limit": 0}).status_code == 422


def test_token_list_is_tenant_scoped(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    theirs = other.token("staff")
    listed = tenant.admin.get("/api/tokens").json()["items"]
    assert theirs["id"] not in [t["id"] for t in listed]
    assert {t["tenant"] for t in listed} == {tenant.id}


def test_revoke_token(tenant: Tenant) -> None:
    made = tenant.token("staff")
    client = tenant.client(made["token"])
    assert client.get("/api/contacts").status_code == 200
    answer = tenant.admin.delete(f"/api/tokens/{made['id']}")
    assert answer.status_code == 204
    assert answer.content == b""
    refused = client.get("/api/contacts")
    assert refused.status_code == 401
    assert isinstance(refused.json()["detail"], str)
    assert client.post("/api/contacts", json={"name": "X"}).status_code == 401
    assert made["id"] not in [t["id"] for t in tenant.admin.get("/api/tokens").json()["items"]]
    assert tenant.admin.delete(f"/api/tokens/{made['id']}").status_code == 404


@pytest.mark.parametrize("token_id", ["abcdefabcdef", "nope", "UPPER", "a" * 100])
def test_revoke_unknown_token(tenant: Tenant, token_id: str) -> None:
    answer = tenant.admin.delete(f"/api/tokens/{token_id}")
    assert answer.status_code == 404
    assert isinstance(answer.json()["detail"], str)


def test_revoke_token_of_another_tenant(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    theirs = other.token("staff")
    answer = tenant.admin.delete(f"/api/tokens/{theirs['id']}")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("no token with id")
    assert other.client(theirs["token"]).get("/api/contacts").status_code == 200


def test_admin_may_not_create_a_token_in_another_tenant(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    answer = tenant.admin.post("/api/tokens", json={"role": "staff", "tenant": other.id})
    assert answer.status_code == 403, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert len(other.admin.get("/api/tokens").json()["items"]) == 1
    assert tenant.admin.post("/api/tokens", json={"role": "staff", "tenant": "default"}).status_code == 403
    # Its own tenant, named explicitly, is fine.
    assert tenant.admin.post("/api/tokens", json={"role": "staff", "tenant": tenant.id}).status_code == 201


def test_superadmin_creates_a_token_in_another_tenant(root: httpx.Client, tenant: Tenant) -> None:
    answer = root.post("/api/tokens", json={"role": "staff", "tenant": tenant.id, "name": "from above"})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["tenant"] == tenant.id
    assert body["role"] == "staff"
    made = tenant.client(body["token"]).post("/api/contacts", json={"name": "Made by staff"})
    assert made.status_code == 201, made.text
    assert made.json()["tenant"] == tenant.id
    assert tenant.admin.get(f"/api/contacts/{made.json()['id']}").status_code == 200
    assert body["id"] in [t["id"] for t in tenant.admin.get("/api/tokens").json()["items"]]
    assert root.get(f"/api/contacts/{made.json()['id']}").status_code == 404


def test_superadmin_token_in_unknown_tenant(root: httpx.Client) -> None:
    answer = root.post("/api/tokens", json={"role": "staff", "tenant": "no-such-tenant-here"})
    assert answer.status_code == 404


def test_admin_may_not_create_a_superadmin_token(tenant: Tenant) -> None:
    answer = tenant.admin.post("/api/tokens", json={"role": "superadmin"})
    assert answer.status_code == 403, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert [t["role"] for t in tenant.admin.get("/api/tokens").json()["items"]] == ["admin"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"role": "owner"}, "role"),
        ({"role": "ADMIN"}, "role"),
        ({"role": ""}, "role"),
        ({}, "role"),
        ({"role": "staff", "tenant": "Bad Tenant"}, "tenant"),
        ({"role": "staff", "scopes": ["all"]}, "scopes"),
    ],
)
def test_invalid_token_body(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    answer = tenant.admin.post("/api/tokens", json=body)
    assert answer.status_code == 422, answer.text
    assert field in [e["field"] for e in answer.json()["errors"]]


@pytest.mark.parametrize("role", ["staff", "viewer", "volunteer"])
def test_only_admins_manage_tokens(tenant: Tenant, role: str) -> None:
    client = tenant.as_role(role)
    admin_id = tenant.admin.get("/api/tokens").json()["items"][0]["id"]
    assert client.post("/api/tokens", json={"role": "viewer"}).status_code == 403
    assert client.get("/api/tokens").status_code == 403
    assert client.delete(f"/api/tokens/{admin_id}").status_code == 403
    assert tenant.admin.get("/api/tokens").status_code == 200


# ---------------------------------------------------------------------------------------------- OpenAPI

# api.md routes in scope of this issue: Contacts (without /import), Workflow templates (without /stats and
# /diagram), Instances (without /bulk), tenants, tokens, healthz and readyz. Path parameters are compared by
# position only ({id} in api.md, {contact_id} in the app).
SPEC_ROUTES: list[tuple[str, str]] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/tenants"),
    ("POST", "/api/tokens"),
    ("GET", "/api/tokens"),
    ("DELETE", "/api/tokens/{}"),
    ("GET", "/api/contacts"),
    ("GET", "/api/contacts/search"),
    ("GET", "/api/contacts/{}"),
    ("POST", "/api/contacts"),
    ("PATCH", "/api/contacts/{}"),
    ("DELETE", "/api/contacts/{}"),
    ("POST", "/api/contacts/{}/tags/{}"),
    ("DELETE", "/api/contacts/{}/tags/{}"),
    ("PUT", "/api/contacts/by-external-id/{}"),
    ("GET", "/api/contacts/{}/timeline"),
    ("GET", "/api/workflows"),
    ("GET", "/api/workflows/{}"),
    ("POST", "/api/workflows"),
    ("PATCH", "/api/workflows/{}"),
    ("DELETE", "/api/workflows/{}"),
    ("GET", "/api/workflows/{}/versions"),
    ("POST", "/api/workflows/{}/clone"),
    ("GET", "/api/workflows/{}/validate"),
    ("GET", "/api/instances"),
    ("GET", "/api/instances/{}"),
    ("POST", "/api/instances"),
    ("DELETE", "/api/instances/{}"),
    ("POST", "/api/instances/{}/start"),
    ("POST", "/api/instances/{}/pause"),
    ("POST", "/api/instances/{}/resume"),
    ("POST", "/api/instances/{}/cancel"),
    ("POST", "/api/instances/{}/transition"),
    ("POST", "/api/instances/{}/state"),
    ("POST", "/api/instances/{}/notes"),
    ("POST", "/api/instances/{}/tags/{}"),
    ("DELETE", "/api/instances/{}/tags/{}"),
    ("GET", "/api/instances/{}/timeline"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks/claim"),
    ("POST", "/api/tasks/{}/release"),
    ("POST", "/api/events"),
]
# Path parameters that name a record (so a 404 is possible); the upsert creates what it does not find.
NOT_RECORD_IDS = {"/api/contacts/by-external-id/{}"}


def shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.rstrip("/") or "/")


@pytest.fixture(scope="module")
def openapi(server: Server) -> dict[str, Any]:
    with server.client() as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found[(method.upper(), shape(path))] = operation
    return found


def test_openapi_has_every_route(openapi: dict[str, Any]) -> None:
    missing = [route for route in SPEC_ROUTES if route not in operations(openapi)]
    assert missing == []


def test_openapi_documents_401_and_422(openapi: dict[str, Any]) -> None:
    lacking = [
        (method, path, code)
        for (method, path), operation in operations(openapi).items()
        if path.startswith("/api/")
        for code in ("401", "422")
        if code not in operation["responses"]
    ]
    assert lacking == []


def test_openapi_documents_404_for_ids(openapi: dict[str, Any]) -> None:
    with_ids = [
        (method, path, operation)
        for (method, path), operation in operations(openapi).items()
        if "{}" in path and path not in NOT_RECORD_IDS
    ]
    assert len(with_ids) >= 20
    lacking = [(method, path) for method, path, operation in with_ids if "404" not in operation["responses"]]
    assert lacking == []


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def test_openapi_error_responses_have_a_detail(openapi: dict[str, Any]) -> None:
    for (method, path), operation in operations(openapi).items():
        if not path.startswith("/api/"):
            continue
        for code in ("401", "422"):
            content = operation["responses"][code].get("content", {})
            assert "application/json" in content, (method, path, code)
            schema = resolve(openapi, content["application/json"]["schema"])
            assert "detail" in schema.get("properties", {}), (method, path, code, schema)
