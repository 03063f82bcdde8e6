"""The OpenAPI document is one a client generator can use: named operations, the real error body and headers, a
description on everything, examples that the API accepts, and a generated client that works against the server."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from cbworkflow.api.openapi import OPERATION_IDS
from conftest import ONE_STORE, REFERENCE_ID, Server, Tenant

pytestmark = ONE_STORE

METHODS = ("get", "post", "put", "patch", "delete")


def document(server: Server) -> dict[str, Any]:
    answer = httpx.get(f"{server.base_url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    spec: dict[str, Any] = answer.json()
    return spec


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, path, op) for path, item in spec["paths"].items() for m, op in item.items() if m in METHODS]


def schema_of(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """The named schema behind `schema` (a `$ref`, or the one `$ref` of an optional body's `anyOf`)."""
    refs = [schema] if "$ref" in schema else [s for s in schema.get("anyOf", []) if "$ref" in s]
    assert len(refs) == 1, schema
    found: dict[str, Any] = spec["components"]["schemas"][refs[0]["$ref"].rsplit("/", 1)[1]]
    return found


def body_example(spec: dict[str, Any], op: dict[str, Any]) -> dict[str, Any]:
    content = op["requestBody"]["content"]["application/json"]
    examples = content.get("examples") or schema_of(spec, content["schema"]).get("examples")
    assert examples, f"{op['operationId']} has no request body example"
    example: dict[str, Any] = examples[0]
    return example


FILE_BODIES = {("POST", "/api/contacts/import")}  # a file as the body, in each of the types the route reads


def file_examples(op: dict[str, Any]) -> dict[str, str]:
    """The example of each content type of a file body."""
    content = op["requestBody"]["content"]
    assert "application/json" not in content
    found = {kind: media.get("example") for kind, media in content.items()}
    assert all(isinstance(example, str) and example for example in found.values()), found
    return found  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ operation ids
def test_every_operation_is_named_resource_verb_from_the_table(server: Server) -> None:
    spec = document(server)
    ids = {(m.upper(), path): op["operationId"] for m, path, op in operations(spec)}
    assert ids == OPERATION_IDS  # every route has its entry and no entry names a route that is gone
    assert len(set(ids.values())) == len(ids)
    for name in ids.values():
        assert re.fullmatch(r"[a-z]+_[a-z_]+", name), name
    assert ids[("POST", "/api/contacts")] == "contacts_create"
    assert ids[("GET", "/api/contacts/{contact_id}")] == "contacts_get"


# ---------------------------------------------------------------------------------------------- errors, headers
def test_every_error_answer_has_the_error_body_and_its_headers(server: Server) -> None:
    spec = document(server)
    error = spec["components"]["schemas"]["Error"]
    assert error["required"] == ["detail"]
    assert {"detail", "errors", "current_node"} <= set(error["properties"])
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            assert "X-Request-ID" in response.get("headers", {}), (method, path, status)
            if status in ("429", "503"):
                assert "Retry-After" in response["headers"], (method, path, status)
            if status == "401":
                assert "WWW-Authenticate" in response["headers"], (method, path)
            if int(status) >= 400 and path.startswith("/api/"):
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
        if path.startswith("/api/"):
            assert {"401", "422", "429", "503"} <= set(op["responses"]), (method, path)
        names = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert ("Idempotency-Key" in names) == (method == "post" and path.startswith("/api/")), (method, path)


def test_the_documented_error_fields_and_headers_are_the_ones_sent(tenant: Tenant) -> None:
    # A real 409 with current_node, a real 401 with WWW-Authenticate (429 and 503: test_rate_limit, test_store_errors).
    contact = tenant.contact()
    instance = tenant.instance(contact["id"])
    tenant.admin.post(f"/api/instances/{instance['id']}/start").raise_for_status()
    moved = tenant.admin.post(
        f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer", "expected_node": "elsewhere"}
    )
    assert moved.status_code == 409
    assert moved.json()["current_node"] == "initial_call"
    assert moved.headers["x-request-id"]
    unauthorized = httpx.get(f"{tenant.server.base_url}/api/contacts", timeout=10)
    assert unauthorized.headers["www-authenticate"] == "Bearer"


# ------------------------------------------------------------------------------------------------- descriptions
def test_every_operation_parameter_schema_and_field_is_described(server: Server) -> None:
    spec = document(server)
    missing: list[str] = []
    for method, path, op in operations(spec):
        if not op.get("description"):
            missing.append(f"operation {method.upper()} {path}")
        for parameter in op.get("parameters", []):
            if not parameter.get("description"):
                missing.append(f"parameter {parameter['name']} of {method.upper()} {path}")
    for name, schema in spec["components"]["schemas"].items():
        if not schema.get("description"):
            missing.append(f"schema {name}")
        for field, definition in schema.get("properties", {}).items():
            if not definition.get("description"):
                missing.append(f"field {name}.{field}")
    assert not missing, f"{len(missing)} without a description: " + ", ".join(missing[:40])


# ----------------------------------------------------------------------------------------------------- examples
# Every request body's example, posted in an order that makes each one meaningful: the ids are the examples' own.
SCENARIO: list[tuple[str, str, int]] = [
    ("POST", "/api/tokens", 201),
    ("POST", "/api/contacts", 201),
    ("PUT", "/api/contacts/by-external-id/crm-1001", 201),
    ("PATCH", "/api/contacts/ada-lovelace", 200),
    ("POST", "/api/workflows", 201),
    ("PATCH", "/api/workflows/{welcome}", 200),
    ("POST", f"/api/workflows/{REFERENCE_ID}/clone", 201),
    ("POST", "/api/instances", 201),
    ("POST", "/api/instances/bulk", 200),
    ("POST", "/api/instances/{instance}/start", 200),
    ("POST", "/api/instances/{instance}/state", 200),
    ("POST", "/api/instances/{instance}/notes", 200),
    ("POST", "/api/tasks/claim", 200),
    ("POST", "/api/instances/{instance}/transition", 200),
    ("POST", "/api/instances/{instance}/pause", 200),
    ("POST", "/api/instances/{instance}/resume", 200),
    ("POST", "/api/instances/{instance}/move", 200),
    ("POST", "/api/instances/{instance}/retry", 409),  # the example is right; the instance is not failed
    ("POST", "/api/events", 200),
    ("POST", "/api/instances/{instance}/cancel", 200),
    ("POST", "/api/contacts/ada-lovelace/opt-out", 200),
    ("PATCH", "/api/tenants/{tenant}/settings", 200),
    ("POST", f"/api/workflows/{REFERENCE_ID}/simulate", 200),
    ("POST", f"/api/workflows/{REFERENCE_ID}/migrate", 422),  # the example is right; there is no older version here
    ("POST", "/api/contacts/import", 200),
    ("POST", "/api/subscriptions", 201),
    ("PATCH", "/api/subscriptions/{subscription}", 200),
    ("POST", "/api/users", 201),
    ("PATCH", "/api/users/{user}", 200),
]


def template_path(path: str) -> str:
    """The document's path for a scenario path (`/api/contacts/ada-lovelace` is `/api/contacts/{contact_id}`)."""
    path = re.sub(r"^/api/instances/\{instance\}", "/api/instances/{instance_id}", path)
    path = path.replace("/api/subscriptions/{subscription}", "/api/subscriptions/{subscription_id}")
    path = path.replace("/api/users/{user}", "/api/users/{user_id}")
    path = path.replace("/api/tenants/{tenant}", "/api/tenants/{tenant_id}")
    path = re.sub(r"^/api/workflows/(\{welcome\}|[a-z0-9-]+)", "/api/workflows/{template_id}", path)
    path = re.sub(r"^/api/contacts/by-external-id/.+", "/api/contacts/by-external-id/{external_id}", path)
    return re.sub(r"^/api/contacts/(?!by-|import$)[a-z0-9-]+", "/api/contacts/{contact_id}", path)


def test_every_request_body_has_an_example_the_api_accepts(server: Server, tenant: Tenant) -> None:
    spec = document(server)
    with_body = {(m.upper(), path) for m, path, op in operations(spec) if "requestBody" in op}
    assert with_body - {(m, template_path(p)) for m, p, _ in SCENARIO} == {("POST", "/api/tenants")}
    tenant.template()  # the reference template the examples enrol into
    ids: dict[str, str] = {"tenant": tenant.id}
    for method, path, expected in SCENARIO:
        op = spec["paths"][template_path(path)][method.lower()]
        if (method, path) in FILE_BODIES:
            for kind, text in file_examples(op).items():
                sent = tenant.admin.request(method, path, content=text.encode(), headers={"Content-Type": kind})
                assert sent.status_code == expected, f"{method} {path} as {kind}: {sent.status_code} {sent.text}"
                assert sent.json()["rejected"] == 0, sent.text
            continue
        example = body_example(spec, op)
        url = path.format(**ids)
        answer = tenant.admin.request(method, url, json=example)
        assert answer.status_code == expected, f"{method} {url} with {example}: {answer.status_code} {answer.text}"
        if path == "/api/workflows":
            ids["welcome"] = answer.json()["id"]
        elif path == "/api/instances":
            ids["instance"] = answer.json()["id"]
        elif path == "/api/subscriptions":
            ids["subscription"] = answer.json()["id"]
        elif path == "/api/users":
            ids["user"] = answer.json()["user"]["id"]
    tenants = spec["paths"]["/api/tenants"]["post"]
    with server.client(server.admin_token) as root:
        created = root.post("/api/tenants", json=body_example(spec, tenants))
    assert created.status_code == 201, created.text


# ------------------------------------------------------------------------------------------- a generated client
def test_a_client_generated_from_the_document_creates_and_reads_a_contact(
    server: Server, tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "openapi.json").write_text(httpx.get(f"{server.base_url}/openapi.json", timeout=10).text)
    # No formatter run over the generated code; a file body (the import's CSV or JSON lines) is sent as bytes, the
    # generator's way for a content type it has no model of.
    file_types = ("text/csv", "application/x-ndjson", "application/jsonl")
    overrides = "".join(f"  {kind}: application/octet-stream\n" for kind in file_types)
    (tmp_path / "config.yaml").write_text(f"post_hooks: []\ncontent_type_overrides:\n{overrides}")
    generator = Path(sys.executable).parent / "openapi-python-client"
    arguments = ["--path", "openapi.json", "--config", "config.yaml", "--meta", "none", "--output-path", "cbw_client"]
    made = subprocess.run(
        [str(generator), "generate", *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    assert "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr  # every schema and operation read
    monkeypatch.syspath_prepend(str(tmp_path))
    client_module = importlib.import_module("cbw_client")
    create = importlib.import_module("cbw_client.api.contacts.contacts_create")
    get = importlib.import_module("cbw_client.api.contacts.contacts_get")
    models = importlib.import_module("cbw_client.models")

    client = client_module.AuthenticatedClient(base_url=server.base_url, token=tenant.admin_token)
    with client:
        body = models.ContactCreate(name="Grace Hopper", email="grace@example.org", phone="+1 555 010 9999")
        created = create.sync_detailed(client=client, body=body, idempotency_key="generated-1")
        assert created.status_code == 201, created.content
        assert created.parsed.name == "Grace Hopper"
        assert created.parsed.phone_e164 == "+15550109999"
        read = get.sync(contact_id=created.parsed.id, client=client)
        assert read is not None
        assert read.email == "grace@example.org"
        unknown = get.sync_detailed(contact_id="nobody-here", client=client)
        assert unknown.status_code == 404
        assert unknown.parsed.detail == "no contact with id 'nobody-here'"
    for name in [n for n in sys.modules if n == "cbw_client" or n.startswith("cbw_client.")]:
        del sys.modules[name]
