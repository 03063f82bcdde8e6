"""Role matrix: for each role, every write route and every read route answers its success status or 403.

Roles (api.md § Conventions, plus the choices in the project docs):
  superadmin  an admin of its tenant who also creates tenants and tokens in any tenant
  admin       everything in its tenant (templates, tokens); not /api/tenants
  staff       contacts and instances (every write, transitions, notes, state, tags, retry, delete; not move);
              reads templates
  volunteer   holds no task yet (no claim route): lists, contact/instance reads, transitions and notes → 403
  viewer      every GET on contacts, workflows and instances; every write → 403; /api/tokens → 403

The matrix shares one tenant (a client per role); each case gets fresh records, made by `Records` only when the
route names them, so deletes and state changes never interfere.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import httpx
import pytest

from conftest import ONE_STORE, Server, Tenant, reference_template

pytestmark = ONE_STORE

Json = dict[str, Any]
ROLES = ("superadmin", "admin", "staff", "volunteer", "viewer")
Y = True  # the role may: the route answers its success status
N = False  # the role may not: 403


@dataclass
class Shop:
    """One tenant for the whole matrix, with a client per role and a template to run instances of."""

    tenant: Tenant
    clients: dict[str, httpx.Client]
    template: str


class Records:
    """Fresh records for one case (made by the tenant's admin, only when the route names them: {contact}...)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.tenant = shop.tenant
        self.uid = uuid.uuid4().hex[:10]
        self.tenant_id = shop.tenant.id

    def __getitem__(self, name: str) -> str:
        value: str = getattr(self, name)
        return value

    @cached_property
    def template(self) -> str:
        body = reference_template()
        body["id"] = f"tpl-{self.uid}"
        return str(self.tenant.template(body)["id"])

    @cached_property
    def contact(self) -> str:
        return str(self.tenant.contact(tags=["x"])["id"])

    def _instance(self, **extra: Any) -> str:
        return str(self.tenant.instance(template_id=self.shop.template, **extra)["id"])

    @cached_property
    def pending(self) -> str:
        return self._instance(start=False)

    @cached_property
    def active(self) -> str:
        return self._instance(start=True, tags=["x"])

    @cached_property
    def paused(self) -> str:
        instance = self._instance(start=True)
        assert self.tenant.admin.post(f"/api/instances/{instance}/pause").status_code == 200
        return instance

    @cached_property
    def failed(self) -> str:
        """An instance whose heuristic divided by zero."""
        nodes = {
            "share": {"type": "decision", "rule": {"type": "heuristic", "expression": "1 / 0 > 1"},
                      "transitions": {"true": "done", "false": "done"}},
            "done": {"type": "end"},
        }  # fmt: skip
        template = self.tenant.template(
            {"id": f"fails-{self.uid}", "name": "Fails", "start_node": "share", "nodes": nodes}
        )
        instance = self.tenant.instance(template_id=template["id"], start=True)
        assert instance["status"] == "failed"
        return str(instance["id"])

    @cached_property
    def token(self) -> str:
        return str(self.tenant.token("viewer", "to revoke")["id"])


def client_for(tenant: Tenant, root: httpx.Client, role: str) -> httpx.Client:
    if role == "admin":
        return tenant.admin
    if role == "superadmin":
        # The bootstrap superadmin makes a superadmin token in this tenant: a superadmin of its own tenant.
        made = root.post("/api/tokens", json={"role": "superadmin", "tenant": tenant.id, "name": "super"})
        assert made.status_code == 201, made.text
        return tenant.client(made.json()["token"])
    return tenant.as_role(role)


@pytest.fixture(scope="module")
def shop(server: Server, root: httpx.Client) -> Iterator[Shop]:
    tenant_id = f"roles-{uuid.uuid4().hex[:10]}"
    made = root.post("/api/tenants", json={"id": tenant_id, "name": "Role matrix"})
    assert made.status_code == 201, made.text
    token = made.json()["admin_token"]
    tenant = Tenant(tenant_id, server, token, server.client(token))
    template = str(tenant.template()["id"])
    yield Shop(tenant, {role: client_for(tenant, root, role) for role in ROLES}, template)
    tenant.admin.close()
    for client in tenant._clients:
        client.close()


Body = Json | Callable[[Records], Json] | None

# ---------------------------------------------------------------- every write route
# name, method, path, body, success status, and for each of ROLES: superadmin, admin, staff, volunteer, viewer
WRITES: list[tuple[str, str, str, Body, int, tuple[bool, bool, bool, bool, bool]]] = [
    # contacts
    ("contacts.create", "POST", "/api/contacts", {"name": "New Person"}, 201, (Y, Y, Y, N, N)),
    ("contacts.patch", "PATCH", "/api/contacts/{contact}", {"county": "Adams"}, 200, (Y, Y, Y, N, N)),
    ("contacts.delete", "DELETE", "/api/contacts/{contact}", None, 204, (Y, Y, Y, N, N)),
    ("contacts.tag_add", "POST", "/api/contacts/{contact}/tags/lead", None, 200, (Y, Y, Y, N, N)),
    ("contacts.tag_remove", "DELETE", "/api/contacts/{contact}/tags/x", None, 200, (Y, Y, Y, N, N)),
    ("contacts.upsert", "PUT", "/api/contacts/by-external-id/crm-{uid}", {"name": "Synced"}, 201, (Y, Y, Y, N, N)),
    # workflow templates
    ("workflows.create", "POST", "/api/workflows", lambda r: {"id": f"tiny-{r.uid}", "name": "Tiny",
     "start_node": "done", "nodes": {"done": {"type": "end"}}}, 201, (Y, Y, N, N, N)),
    ("workflows.patch", "PATCH", "/api/workflows/{template}", {"description": "changed"}, 200, (Y, Y, N, N, N)),
    ("workflows.delete", "DELETE", "/api/workflows/{template}", None, 204, (Y, Y, N, N, N)),
    ("workflows.clone", "POST", "/api/workflows/{template}/clone", lambda r: {"id": f"copy-{r.uid}"}, 201,
     (Y, Y, N, N, N)),
    # instances
    ("instances.create", "POST", "/api/instances", lambda r: {"contact_id": r.contact, "template_id": r.shop.template},
     201, (Y, Y, Y, N, N)),
    ("instances.delete", "DELETE", "/api/instances/{active}", None, 204, (Y, Y, Y, N, N)),
    ("instances.start", "POST", "/api/instances/{pending}/start", None, 200, (Y, Y, Y, N, N)),
    ("instances.pause", "POST", "/api/instances/{active}/pause", None, 200, (Y, Y, Y, N, N)),
    ("instances.resume", "POST", "/api/instances/{paused}/resume", None, 200, (Y, Y, Y, N, N)),
    ("instances.cancel", "POST", "/api/instances/{active}/cancel", None, 200, (Y, Y, Y, N, N)),
    ("instances.transition", "POST", "/api/instances/{active}/transition", {"outcome": "no_answer"}, 200,
     (Y, Y, Y, N, N)),
    ("instances.state", "POST", "/api/instances/{active}/state", {"updates": {"a": 1}}, 200, (Y, Y, Y, N, N)),
    ("instances.notes", "POST", "/api/instances/{active}/notes", {"text": "hello"}, 200, (Y, Y, Y, N, N)),
    ("instances.tag_add", "POST", "/api/instances/{active}/tags/lead", None, 200, (Y, Y, Y, N, N)),
    ("instances.tag_remove", "DELETE", "/api/instances/{active}/tags/x", None, 200, (Y, Y, Y, N, N)),
    ("instances.retry", "POST", "/api/instances/{failed}/retry", {"state_updates": {"a": 1}}, 200, (Y, Y, Y, N, N)),
    ("instances.move", "POST", "/api/instances/{active}/move", {"node": "send_postcard", "reason": "asked for mail"},
     200, (Y, Y, N, N, N)),
    # tokens and tenants
    ("tokens.create", "POST", "/api/tokens", {"role": "viewer", "name": "made"}, 201, (Y, Y, N, N, N)),
    ("tokens.create_in_own_tenant", "POST", "/api/tokens", lambda r: {"role": "staff", "tenant": r.tenant_id},
     201, (Y, Y, N, N, N)),
    ("tokens.delete", "DELETE", "/api/tokens/{token}", None, 204, (Y, Y, N, N, N)),
    ("tenants.create", "POST", "/api/tenants", {"name": "Another campaign"}, 201, (Y, N, N, N, N)),
]  # fmt: skip

# ---------------------------------------------------------------- every read route
# name, path, and for each of ROLES: superadmin, admin, staff, volunteer, viewer (success is 200)
READS: list[tuple[str, str, tuple[bool, bool, bool, bool, bool]]] = [
    ("contacts.list", "/api/contacts", (Y, Y, Y, N, Y)),
    ("contacts.list_filtered", "/api/contacts?tag=x&county=Adams", (Y, Y, Y, N, Y)),
    ("contacts.search", "/api/contacts/search?q=Test", (Y, Y, Y, N, Y)),
    ("contacts.get", "/api/contacts/{contact}", (Y, Y, Y, N, Y)),
    ("contacts.timeline", "/api/contacts/{contact}/timeline", (Y, Y, Y, N, Y)),
    ("workflows.list", "/api/workflows", (Y, Y, Y, N, Y)),
    ("workflows.get", "/api/workflows/{template}", (Y, Y, Y, N, Y)),
    ("workflows.versions", "/api/workflows/{template}/versions", (Y, Y, Y, N, Y)),
    ("workflows.validate", "/api/workflows/{template}/validate", (Y, Y, Y, N, Y)),
    ("instances.list", "/api/instances", (Y, Y, Y, N, Y)),
    ("instances.list_filtered", "/api/instances?status=active&tag=x", (Y, Y, Y, N, Y)),
    ("instances.get", "/api/instances/{active}", (Y, Y, Y, N, Y)),
    ("instances.timeline", "/api/instances/{active}/timeline", (Y, Y, Y, N, Y)),
    ("tokens.list", "/api/tokens", (Y, Y, N, N, N)),
]


def expand(table: list[Any], ok_status: Callable[[Any], int]) -> list[Any]:
    """One pytest case per (route, role): the expected status is the route's success status or 403."""
    return [
        pytest.param(row, role, ok_status(row) if allowed else 403, id=f"{row[0]}-{role}")
        for row in table
        for role, allowed in zip(ROLES, row[-1], strict=True)
    ]


@pytest.mark.parametrize(("row", "role", "expected"), expand(WRITES, lambda row: row[4]))
def test_write_route_by_role(shop: Shop, row: tuple[Any, ...], role: str, expected: int) -> None:
    _name, method, path, body, _ok, _roles = row
    records = Records(shop)
    url = path.format_map(records)
    payload = body(records) if callable(body) else body
    client = shop.clients[role]
    answer = client.request(method, url, json=payload) if payload is not None else client.request(method, url)
    assert answer.status_code == expected, f"{method} {url} as {role}: {answer.status_code} {answer.text}"
    if expected == 403:
        detail = answer.json()["detail"]
        assert isinstance(detail, str)
        assert detail


@pytest.mark.parametrize(("row", "role", "expected"), expand(READS, lambda _row: 200))
def test_read_route_by_role(shop: Shop, row: tuple[Any, ...], role: str, expected: int) -> None:
    _name, path, _roles = row
    url = path.format_map(Records(shop))
    answer = shop.clients[role].get(url)
    assert answer.status_code == expected, f"GET {url} as {role}: {answer.status_code} {answer.text}"
    body = answer.json()
    assert isinstance(body, dict)
    if expected == 403:
        assert isinstance(body["detail"], str)
    elif "next_cursor" in body:
        assert isinstance(body["items"], list)


# ---------------------------------------------------------------- refused writes change nothing


@pytest.mark.parametrize("role", ["volunteer", "viewer"])
def test_refused_instance_writes_leave_no_trace(shop: Shop, role: str) -> None:
    tenant = shop.tenant
    instance = Records(shop).active
    before = tenant.admin.get(f"/api/instances/{instance}").json()
    client = shop.clients[role]
    for path, body in [
        ("transition", {"outcome": "no_answer"}),
        ("notes", {"text": "hi"}),
        ("state", {"updates": {"a": 1}}),
        ("pause", None),
        ("cancel", None),
        ("tags/lead", None),
        ("move", {"node": "send_postcard", "reason": "asked for mail"}),
    ]:
        answer = client.post(f"/api/instances/{instance}/{path}", json=body)
        assert answer.status_code == 403, f"{path} as {role}: {answer.text}"
    assert client.delete(f"/api/instances/{instance}").status_code == 403
    assert tenant.admin.get(f"/api/instances/{instance}").json() == before
    failed = Records(shop).failed
    before = tenant.admin.get(f"/api/instances/{failed}").json()
    assert client.post(f"/api/instances/{failed}/retry").status_code == 403
    assert tenant.admin.get(f"/api/instances/{failed}").json() == before


def test_a_volunteer_must_claim_before_recording(shop: Shop) -> None:
    instance = Records(shop).active
    answer = shop.clients["volunteer"].post(f"/api/instances/{instance}/transition", json={"outcome": "no_answer"})
    assert answer.status_code == 403
    assert "claim" in answer.json()["detail"]


# ---------------------------------------------------------------- tokens across tenants


def test_superadmin_may_create_tokens_in_any_tenant(make_tenant: Callable[[], Tenant], root: httpx.Client) -> None:
    home, other = make_tenant(), make_tenant()
    superadmin = client_for(home, root, "superadmin")
    made = superadmin.post("/api/tokens", json={"role": "staff", "tenant": other.id, "name": "for other"})
    assert made.status_code == 201, made.text
    assert made.json()["tenant"] == other.id
    assert made.json()["role"] == "staff"
    with httpx.Client(base_url=str(root.base_url), headers={"Authorization": f"Bearer {made.json()['token']}"}) as c:
        assert c.get("/api/contacts").status_code == 200
    assert made.json()["id"] in [t["id"] for t in other.admin.get("/api/tokens").json()["items"]]
    assert made.json()["id"] not in [t["id"] for t in home.admin.get("/api/tokens").json()["items"]]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"role": "staff", "tenant": "default"}, "another tenant"),
        ({"role": "superadmin"}, "a superadmin token"),
    ],
)
def test_an_admin_may_not_reach_beyond_its_tenant(tenant: Tenant, body: Json, why: str) -> None:
    before = tenant.admin.get("/api/tokens").json()["items"]
    answer = tenant.admin.post("/api/tokens", json=body)
    assert answer.status_code == 403, f"{why}: {answer.text}"
    assert tenant.admin.get("/api/tokens").json()["items"] == before


def test_token_list_never_shows_secrets(tenant: Tenant) -> None:
    made = tenant.token("staff", "listed")
    listed = tenant.admin.get("/api/tokens").json()["items"]
    assert made["id"] in [t["id"] for t in listed]
    assert made["token"] not in str(listed)
    assert all("token" not in t and "secret_hash" not in t for t in listed)


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/contacts"),
        ("POST", "/api/contacts"),
        ("GET", "/api/workflows"),
        ("GET", "/api/instances"),
        ("GET", "/api/tokens"),
        ("POST", "/api/tenants"),
        ("GET", "/api/instances/0123456789ab"),
    ],
)
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-real-token", "Basic dXNlcjpwYXNz", "cbw_nobearerprefix"],
    ids=["missing", "empty", "unknown", "basic", "no-scheme"],
)
def test_missing_or_unknown_token_is_401(server: Server, method: str, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    with server.client() as client:
        answer = client.request(method, path, headers=headers, json={"name": "x"} if method == "POST" else None)
    assert answer.status_code == 401, answer.text
    assert isinstance(answer.json()["detail"], str)


def test_a_revoked_token_is_401_at_once(tenant: Tenant) -> None:
    made = tenant.token("staff", "soon revoked")
    client = tenant.client(made["token"])
    assert client.get("/api/contacts").status_code == 200
    assert tenant.admin.delete(f"/api/tokens/{made['id']}").status_code == 204
    assert client.get("/api/contacts").status_code == 401
    assert client.post("/api/contacts", json={"name": "x"}).status_code == 401
    assert tenant.admin.delete(f"/api/tokens/{made['id']}").status_code == 404
