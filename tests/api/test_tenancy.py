"""Tenancy matrix: nothing of tenant A can be read, listed, changed or inferred by tenant B (api.md § Conventions).

Tenant A holds a contact, a template `tpl-a`, a started instance and a staff token. Tenant B's admin calls every
route that takes an id with A's ids: each answers 404 exactly as an unknown id does, and A's records stay as they
were. B's lists and searches never show A's records; B may reuse A's ids and external ids for its own records.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import Server, Tenant, reference_template

Json = dict[str, Any]

A_CONTACT: Json = {
    "name": "Zebulon Quillfeather",
    "email": "zebulon@tenant-a.example",
    "phone": "(202) 555-0143",
    "county": "Adams",
    "organization": "Org A",
    "role": "Chair",
    "external_id": "crm-a-0001",
    "tags": ["alpha"],
    "metadata": {"secret": "only A"},
}
# Ids that exist nowhere: the "unknown id" each of A's ids is compared with.
UNKNOWN = {"contact": "0a0b0c0d0e0f", "template": "tpl-none", "instance": "0f0e0d0c0b0a", "token": "0a1b2c3d4e5f"}


def ok(answer: httpx.Response, status: int = 200) -> Json:
    assert answer.status_code == status, f"{answer.status_code} {answer.text}"
    body: Json = answer.json()
    return body


@dataclass
class World:
    a: Tenant
    b: Tenant
    contact: Json
    template: Json
    instance: Json
    token: Json
    a_token_ids: list[str]

    @property
    def ids(self) -> dict[str, str]:
        return {
            "contact": self.contact["id"],
            "template": self.template["id"],
            "instance": self.instance["id"],
            "token": self.token["id"],
        }

    def a_view(self) -> Json:
        """Everything A can see of its records, to compare before and after B's calls."""
        a = self.a.admin
        c, t, i = self.contact["id"], self.template["id"], self.instance["id"]
        return {
            "contact": ok(a.get(f"/api/contacts/{c}")),
            "contact_timeline": ok(a.get(f"/api/contacts/{c}/timeline", params={"limit": 500})),
            "template": ok(a.get(f"/api/workflows/{t}")),
            "versions": ok(a.get(f"/api/workflows/{t}/versions")),
            "instance": ok(a.get(f"/api/instances/{i}")),
            "tokens": sorted((k["id"], k["role"], k["name"], k["tenant"]) for k in ok(a.get("/api/tokens"))["items"]),
        }


def build_world(make_tenant: Callable[[], Tenant]) -> World:
    a = make_tenant()
    b = make_tenant()
    contact = a.contact(**A_CONTACT)
    body = reference_template()
    body["id"] = "tpl-a"
    body["name"] = "A's outreach"
    template = a.template(body)
    instance = a.instance(contact_id=contact["id"], template_id="tpl-a", start=True, tags=["itag"])
    ok(a.admin.post(f"/api/instances/{instance['id']}/notes", json={"text": "A's private note"}))
    token = a.token("staff", "A's staff")
    a_token_ids = [k["id"] for k in ok(a.admin.get("/api/tokens"))["items"]]
    assert token["id"] in a_token_ids
    assert len(a_token_ids) == 2
    return World(a, b, contact, template, instance, token, a_token_ids)


@pytest.fixture
def world(make_tenant: Callable[[], Tenant]) -> World:
    """A fresh pair of tenants per test: a call of B's that wrongly succeeds cannot spoil another test."""
    return build_world(make_tenant)


# ---------------------------------------------------------------- every route that takes an id

# (name, method, path with {contact}/{template}/{instance}/{token}, JSON body or None)
ID_ROUTES: list[tuple[str, str, str, Json | None]] = [
    ("contact get", "GET", "/api/contacts/{contact}", None),
    ("contact patch", "PATCH", "/api/contacts/{contact}", {"name": "Taken over"}),
    ("contact delete", "DELETE", "/api/contacts/{contact}", None),
    ("contact delete cascade", "DELETE", "/api/contacts/{contact}?cascade=true", None),
    ("contact tag add", "POST", "/api/contacts/{contact}/tags/beta", None),
    ("contact tag remove", "DELETE", "/api/contacts/{contact}/tags/alpha", None),
    ("contact timeline", "GET", "/api/contacts/{contact}/timeline", None),
    ("workflow get", "GET", "/api/workflows/{template}", None),
    ("workflow patch", "PATCH", "/api/workflows/{template}", {"name": "Taken over"}),
    ("workflow delete", "DELETE", "/api/workflows/{template}", None),
    ("workflow versions", "GET", "/api/workflows/{template}/versions", None),
    ("workflow clone", "POST", "/api/workflows/{template}/clone", {"id": "stolen-copy"}),
    ("workflow clone no body", "POST", "/api/workflows/{template}/clone", None),
    ("workflow validate", "GET", "/api/workflows/{template}/validate", None),
    ("instance get", "GET", "/api/instances/{instance}", None),
    ("instance delete", "DELETE", "/api/instances/{instance}", None),
    ("instance start", "POST", "/api/instances/{instance}/start", None),
    ("instance pause", "POST", "/api/instances/{instance}/pause", None),
    ("instance resume", "POST", "/api/instances/{instance}/resume", None),
    ("instance cancel", "POST", "/api/instances/{instance}/cancel", None),
    ("instance transition", "POST", "/api/instances/{instance}/transition", {"outcome": "answered_not_interested"}),
    (
        "instance transition expected",
        "POST",
        "/api/instances/{instance}/transition",
        {"outcome": "no_answer", "expected_node": "initial_call"},
    ),
    ("instance state", "POST", "/api/instances/{instance}/state", {"updates": {"stolen": True}}),
    ("instance note", "POST", "/api/instances/{instance}/notes", {"text": "B was here"}),
    ("instance retry", "POST", "/api/instances/{instance}/retry", {"state_updates": {"stolen": True}}),
    ("instance move", "POST", "/api/instances/{instance}/move", {"node": "end_declined", "reason": "B was here"}),
    ("instance tag add", "POST", "/api/instances/{instance}/tags/btag", None),
    ("instance tag remove", "DELETE", "/api/instances/{instance}/tags/itag", None),
    ("instance timeline", "GET", "/api/instances/{instance}/timeline", None),
    ("token delete", "DELETE", "/api/tokens/{token}", None),
]


def call(client: httpx.Client, method: str, path: str, body: Json | None) -> httpx.Response:
    return client.request(method, path, json=body) if body is not None else client.request(method, path)


def normalized(answer: httpx.Response, ids: dict[str, str]) -> Json:
    """The answer's body with the ids of the request replaced by a placeholder."""
    body: Json = answer.json()
    for kind, value in ids.items():
        body = {k: v.replace(value, f"<{kind}>") if isinstance(v, str) else v for k, v in body.items()}
    return body


@pytest.mark.parametrize(("name", "method", "path", "body"), ID_ROUTES, ids=[r[0] for r in ID_ROUTES])
def test_another_tenants_id_answers_like_an_unknown_id(
    world: World, name: str, method: str, path: str, body: Json | None
) -> None:
    before = world.a_view()
    theirs = call(world.b.admin, method, path.format(**world.ids), body)
    unknown = call(world.b.admin, method, path.format(**UNKNOWN), body)
    assert theirs.status_code == 404, f"{name}: {theirs.status_code} {theirs.text}"
    assert unknown.status_code == 404, f"{name}: {unknown.status_code} {unknown.text}"
    assert theirs.headers["content-type"] == unknown.headers["content-type"]
    assert set(theirs.json()) == set(unknown.json()) == {"detail"}
    assert normalized(theirs, world.ids) == normalized(unknown, UNKNOWN)
    assert "only A" not in theirs.text
    assert world.a_view() == before


def test_by_external_id_does_not_see_a_contact(world: World) -> None:
    before = world.a_view()
    made = world.b.admin.put(
        f"/api/contacts/by-external-id/{A_CONTACT['external_id']}", json={"name": "B's own person"}
    )
    created = ok(made, 201)
    assert created["id"] != world.contact["id"]
    assert created["tenant"] == world.b.id
    assert created["name"] == "B's own person"
    assert created["email"] is None
    assert created["workflow_instance_ids"] == []
    assert created["metadata"] == {}
    replaced = ok(
        world.b.admin.put(f"/api/contacts/by-external-id/{A_CONTACT['external_id']}", json={"name": "Renamed"})
    )
    assert replaced["id"] == created["id"]
    assert world.a_view() == before


# ---------------------------------------------------------------- lists and searches


@pytest.fixture(scope="module")
def b_records(server: Server, root: httpx.Client) -> Iterator[World]:
    """One pair of tenants for the read-only list tests, where B also holds records that match the same filters
    (so B's lists are not trivially empty)."""
    made: list[Tenant] = []

    def make_tenant() -> Tenant:
        tenant_id = f"tn-{uuid.uuid4().hex[:10]}"
        answer = root.post("/api/tenants", json={"id": tenant_id, "name": f"Tenant {tenant_id}"})
        assert answer.status_code == 201, answer.text
        token = answer.json()["admin_token"]
        made.append(Tenant(tenant_id, server, token, server.client(token)))
        return made[-1]

    world = build_world(make_tenant)
    b = world.b
    b.contact(name="Zebulon Bee", county="Adams", organization="Org A", tags=["alpha"])
    body = reference_template()
    body["id"] = "tpl-b"
    b.template(body)
    b.instance(template_id="tpl-b", start=True, tags=["itag"])
    b.token("staff", "B's staff")
    yield world
    for tenant in made:
        tenant.admin.close()
        for client in tenant._clients:
            client.close()


LISTS: list[tuple[str, Json]] = [
    ("/api/contacts", {}),
    ("/api/contacts", {"county": "Adams"}),
    ("/api/contacts", {"organization": "Org A"}),
    ("/api/contacts", {"external_id": "crm-a-0001"}),
    ("/api/contacts", {"tag": "alpha"}),
    ("/api/contacts", {"limit": 500}),
    ("/api/contacts/search", {"q": "Zebulon"}),
    ("/api/contacts/search", {"q": "quillfeather"}),
    ("/api/contacts/search", {"q": "zebulon@tenant-a.example"}),
    ("/api/contacts/search", {"q": "202-555-0143"}),
    ("/api/contacts/search", {"q": "2025550143"}),
    ("/api/workflows", {}),
    ("/api/workflows", {"tag": "outreach"}),
    ("/api/instances", {}),
    ("/api/instances", {"contact_id": "{contact}"}),
    ("/api/instances", {"template_id": "tpl-a"}),
    ("/api/instances", {"status": "active"}),
    ("/api/instances", {"current_node": "initial_call"}),
    ("/api/instances", {"tag": "itag"}),
    ("/api/tokens", {}),
]


@pytest.mark.parametrize(("path", "params"), LISTS, ids=[f"{p}?{q}" for p, q in LISTS])
def test_b_lists_never_show_a_records(b_records: World, path: str, params: Json) -> None:
    world = b_records
    query = {k: v.format(**world.ids) if isinstance(v, str) else v for k, v in params.items()}
    page = ok(world.b.admin.get(path, params=query))
    assert page["next_cursor"] is None
    a_ids = {world.contact["id"], world.instance["id"], *world.a_token_ids}
    for item in page["items"]:
        assert item["tenant"] == world.b.id, item
        assert item["id"] not in a_ids
        assert item["id"] != "tpl-a"
    assert "only A" not in str(page)
    assert "Quillfeather" not in str(page)


COUNTS: list[tuple[str, Json, int, int]] = [
    # path, params, items B sees, items A sees
    ("/api/contacts", {"external_id": "crm-a-0001"}, 0, 1),
    ("/api/contacts/search", {"q": "quillfeather"}, 0, 1),
    ("/api/contacts/search", {"q": "2025550143"}, 0, 1),
    ("/api/contacts", {"county": "Adams"}, 1, 1),
    ("/api/workflows", {}, 1, 1),
    ("/api/instances", {"contact_id": "{contact}"}, 0, 1),
    ("/api/instances", {"template_id": "tpl-a"}, 0, 1),
    ("/api/instances", {}, 1, 1),
    ("/api/tokens", {}, 2, 2),
]


@pytest.mark.parametrize(("path", "params", "b_count", "a_count"), COUNTS, ids=[f"{c[0]}?{c[1]}" for c in COUNTS])
def test_each_tenant_lists_exactly_its_own(
    b_records: World, path: str, params: Json, b_count: int, a_count: int
) -> None:
    world = b_records
    query = {k: v.format(**world.ids) for k, v in params.items()}
    assert len(ok(world.b.admin.get(path, params=query))["items"]) == b_count
    assert len(ok(world.a.admin.get(path, params=query))["items"]) == a_count


# ---------------------------------------------------------------- creating with A's ids


@pytest.mark.parametrize("whose", ["contact", "template"])
def test_b_cannot_enrol_with_a_contact_or_a_template(world: World, whose: str) -> None:
    body = reference_template()
    body["id"] = "tpl-b"
    world.b.template(body)
    b_contact = world.b.contact(name="B person")["id"]
    before = world.a_view()
    theirs = {"contact_id": b_contact, "template_id": "tpl-b"}
    unknown = dict(theirs)
    if whose == "contact":
        theirs["contact_id"], unknown["contact_id"] = world.contact["id"], UNKNOWN["contact"]
    else:
        theirs["template_id"], unknown["template_id"] = "tpl-a", UNKNOWN["template"]
    got = world.b.admin.post("/api/instances", json=theirs)
    missing = world.b.admin.post("/api/instances", json=unknown)
    assert got.status_code == 404, got.text
    assert missing.status_code == 404, missing.text
    assert normalized(got, world.ids) == normalized(missing, UNKNOWN)
    assert ok(world.b.admin.get("/api/instances"))["items"] == []
    assert world.a_view() == before


def test_b_admin_cannot_make_a_token_in_a(world: World) -> None:
    before = world.a_view()
    answer = world.b.admin.post("/api/tokens", json={"role": "admin", "tenant": world.a.id})
    assert answer.status_code == 403, answer.text
    assert world.a_view() == before


def test_a_token_does_not_work_as_b(world: World) -> None:
    """A token is bound to its tenant: A's staff token reads A's records, never B's."""
    b_contact = world.b.contact(name="B only")["id"]
    a_staff = world.a.client(world.token["token"])
    assert a_staff.get(f"/api/contacts/{b_contact}").status_code == 404
    assert [c["id"] for c in ok(a_staff.get("/api/contacts"))["items"]] == [world.contact["id"]]


# ---------------------------------------------------------------- ids are per tenant


def test_b_may_use_the_same_template_id_and_run_it(world: World) -> None:
    before = world.a_view()
    body = reference_template()
    body["id"] = "tpl-a"
    body["name"] = "B's outreach"
    mine = world.b.template(body)
    assert mine["id"] == "tpl-a"
    assert mine["tenant"] == world.b.id
    assert ok(world.b.admin.get("/api/workflows/tpl-a"))["name"] == "B's outreach"
    assert [t["id"] for t in ok(world.b.admin.get("/api/workflows"))["items"]] == ["tpl-a"]
    # B runs its own tpl-a (the same graph as A's) end to end.
    instance = world.b.instance(template_id="tpl-a", start=True)
    got = ok(world.b.admin.get(f"/api/instances/{instance['id']}"))
    assert got["tenant"] == world.b.id
    assert got["current_node"] == "initial_call"
    done = ok(
        world.b.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "answered_not_interested"})
    )
    assert done["status"] == "completed"
    assert [i["id"] for i in ok(world.b.admin.get("/api/instances", params={"template_id": "tpl-a"}))["items"]] == [
        instance["id"]
    ]
    patched = ok(world.b.admin.patch("/api/workflows/tpl-a", json={"description": "B's words"}))
    assert patched["description"] == "B's words"
    assert world.b.admin.delete("/api/workflows/tpl-a").status_code == 204
    assert world.a_view() == before
    assert ok(world.a.admin.get("/api/workflows/tpl-a"))["name"] == "A's outreach"


def test_b_may_use_the_same_external_id_and_contact_id(world: World) -> None:
    before = world.a_view()
    same_ext = world.b.contact(name="B's twin", external_id=A_CONTACT["external_id"])
    assert same_ext["external_id"] == A_CONTACT["external_id"]
    assert same_ext["tenant"] == world.b.id
    same_id = world.b.contact(id=world.contact["id"], name="B's namesake")
    assert same_id["id"] == world.contact["id"]
    assert ok(world.b.admin.get(f"/api/contacts/{world.contact['id']}"))["name"] == "B's namesake"
    listed = ok(world.b.admin.get("/api/contacts", params={"external_id": A_CONTACT["external_id"]}))["items"]
    assert [c["id"] for c in listed] == [same_ext["id"]]
    # B's records under A's ids change nothing of A's, both ways.
    ok(world.b.admin.patch(f"/api/contacts/{world.contact['id']}", json={"county": "Elsewhere"}))
    assert world.b.admin.delete(f"/api/contacts/{world.contact['id']}").status_code == 204
    assert world.a_view() == before
    assert ok(world.a.admin.get(f"/api/contacts/{world.contact['id']}"))["name"] == A_CONTACT["name"]


def test_a_records_are_unchanged_after_every_b_call(world: World) -> None:
    """All of B's attempts in one go, then A re-reads everything it holds."""
    before = world.a_view()
    for _name, method, path, body in ID_ROUTES:
        assert call(world.b.admin, method, path.format(**world.ids), body).status_code == 404
    after = world.a_view()
    assert after == before
    assert after["contact"]["name"] == A_CONTACT["name"]
    assert after["contact"]["tags"] == ["alpha"]
    assert after["contact"]["workflow_instance_ids"] == [world.instance["id"]]
    assert after["template"]["name"] == "A's outreach"
    assert after["template"]["version"] == "1.0.0"
    assert after["instance"]["status"] == "active"
    assert after["instance"]["current_node"] == "initial_call"
    assert after["instance"]["tags"] == ["itag"]
    assert after["instance"]["state"] == {}
    assert [e["type"] for e in after["instance"]["timeline"]] == [
        "instance_created",
        "instance_started",
        "node_entered",
        "user_note",
    ]
    assert len(after["tokens"]) == 2


def test_the_same_graph_in_two_tenants_runs_in_both(world: World) -> None:
    """Frozen copies are per tenant: B's instance of a graph identical to one A enrolled first is B's to read.

    The graph is new to the server (a unique node name), and A does not read its instance before B does, so no
    cache can hide a frozen copy that only A may read.
    """
    body = reference_template()
    body["id"] = "same-graph"
    body["nodes"]["initial_call"]["name"] = f"Call {uuid.uuid4().hex}"
    world.a.template(body)
    world.b.template(body)
    a_instance = world.a.instance(contact_id=world.contact["id"], template_id="same-graph", start=True)
    b_instance = world.b.instance(template_id="same-graph", start=True)
    for tenant, instance in ((world.b, b_instance), (world.a, a_instance)):
        got = ok(tenant.admin.get(f"/api/instances/{instance['id']}"))
        assert got["tenant"] == tenant.id
        assert got["nodes"]["initial_call"]["name"] == body["nodes"]["initial_call"]["name"]
        moved = ok(tenant.admin.post(f"/api/instances/{instance['id']}/transition", json={"outcome": "no_answer"}))
        assert moved["current_node"] == "schedule_door"
        listed = ok(tenant.admin.get("/api/instances", params={"template_id": "same-graph"}))["items"]
        assert [i["id"] for i in listed] == [instance["id"]]
