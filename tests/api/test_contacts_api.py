"""`/api/contacts` over HTTP (api.md § Contacts, except `/import`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Tenant

HEX12 = re.compile(r"[0-9a-f]{12}")


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def when(value: str) -> datetime:
    assert value.endswith("+00:00"), value
    return datetime.fromisoformat(value)


def error_fields(answer: httpx.Response) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]


def finish(tenant: Tenant, instance_id: str) -> None:
    """Drive a started reference-template instance to its `end_declined` end node."""
    moved = tenant.admin.post(f"/api/instances/{instance_id}/transition", json={"outcome": "answered_not_interested"})
    assert moved.status_code == 200, moved.text
    assert moved.json()["status"] == "completed"


# ---------------------------------------------------------------------------------------------- list


def test_list_is_newest_first(tenant: Tenant) -> None:
    made = [tenant.contact(name=f"Person {n}")["id"] for n in range(4)]
    answer = tenant.admin.get("/api/contacts")
    assert ids(answer) == made[::-1]
    assert answer.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"county": "Kent"}, ["a", "b"]),
        ({"county": "Sussex"}, ["c"]),
        ({"county": "Nowhere"}, []),
        ({"organization": "Union 12"}, ["b", "c"]),
        ({"external_id": "crm-2"}, ["b"]),
        ({"external_id": "crm-404"}, []),
        ({"tag": "donor"}, ["a", "b", "c"]),
        ({"tag": ["donor", "volunteer"]}, ["b", "c"]),
        ({"tag": ["donor", "volunteer", "captain"]}, ["c"]),
        ({"tag": ["volunteer", "unknown"]}, []),
        ({"county": "Kent", "tag": "volunteer"}, ["b"]),
        ({"county": "Kent", "organization": "Union 12"}, ["b"]),
    ],
)
def test_list_filters(tenant: Tenant, params: dict[str, Any], expected: list[str]) -> None:
    tenant.contact(id="a", county="Kent", organization="PTA", external_id="crm-1", tags=["donor"])
    tenant.contact(id="b", county="Kent", organization="Union 12", external_id="crm-2", tags=["donor", "volunteer"])
    tenant.contact(
        id="c", county="Sussex", organization="Union 12", external_id="crm-3", tags=["captain", "volunteer", "donor"]
    )
    tenant.contact(id="d", name="No fields")
    found = ids(tenant.admin.get("/api/contacts", params=params))
    assert sorted(found) == expected


def test_paging_through_120_contacts(tenant: Tenant) -> None:
    made = {tenant.contact(name=f"Paged {n}")["id"] for n in range(120)}
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 50}
        if cursor is not None:
            params["cursor"] = cursor
        answer = tenant.admin.get("/api/contacts", params=params)
        pages.append(ids(answer))
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, "paging does not end"
    assert [len(p) for p in pages] == [50, 50, 20]
    flat = [i for page in pages for i in page]
    assert len(set(flat)) == 120
    assert set(flat) == made
    # The order is stable: the same as one big page, and the same when paged again.
    assert flat == ids(tenant.admin.get("/api/contacts", params={"limit": 500}))
    again = tenant.admin.get("/api/contacts", params={"limit": 50})
    assert ids(again) == pages[0]
    second = tenant.admin.get("/api/contacts", params={"limit": 50, "cursor": again.json()["next_cursor"]})
    assert ids(second) == pages[1]


@pytest.mark.parametrize("limit", ["0", "501", "-1", "abc"])
def test_list_limit_out_of_range(tenant: Tenant, limit: str) -> None:
    answer = tenant.admin.get("/api/contacts", params={"limit": limit})
    assert answer.status_code == 422, answer.text
    assert isinstance(answer.json()["detail"], str)
    assert "limit" in answer.json()["detail"]


@pytest.mark.parametrize("limit", ["1", "500"])
def test_list_limit_bounds_accepted(tenant: Tenant, limit: str) -> None:
    tenant.contact()
    tenant.contact()
    answer = tenant.admin.get("/api/contacts", params={"limit": limit})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["items"]) == min(int(limit), 2)
    assert (answer.json()["next_cursor"] is not None) == (limit == "1")


@pytest.mark.parametrize("cursor", ["garbage", "!!!", "eyJ4IjogMX0", "MTIz", "x" * 600, "'; DROP TABLE contacts; --"])
def test_list_garbage_cursor(tenant: Tenant, cursor: str) -> None:
    tenant.contact()
    answer = tenant.admin.get("/api/contacts", params={"cursor": cursor})
    assert answer.status_code == 422, answer.text
    assert isinstance(answer.json()["detail"], str)


# ---------------------------------------------------------------------------------------------- search


@pytest.fixture
def searchable(tenant: Tenant) -> Tenant:
    tenant.contact(id="marguerite", name="Marguerite Okafor", email="m.okafor@example.org", phone="(555) 201-3344")
    tenant.contact(id="bob", name="Bob Lindqvist", email="bob@lindqvist.net", phone="+44 20 7946 0018")
    tenant.contact(id="ana", name="Ana Ok", email="ana@example.com")
    return tenant


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Marguerite", ["marguerite"]),
        ("marguerite okafor", ["marguerite"]),
        ("GUERITE OKA", ["marguerite"]),
        ("lindQVIST", ["bob"]),
        ("m.okafor@example.org", ["marguerite"]),
        ("@lindqvist.net", ["bob"]),
        ("example", ["ana", "marguerite"]),
        ("Oka", ["marguerite"]),
        ("a Ok", ["ana"]),
        ("zzzz-no-such-person", []),
    ],
)
def test_search_name_and_email(searchable: Tenant, query: str, expected: list[str]) -> None:
    answer = searchable.admin.get("/api/contacts/search", params={"q": query})
    assert sorted(ids(answer)) == expected
    assert answer.json()["next_cursor"] is None


@pytest.mark.parametrize(
    "query", ["(555) 201-3344", "555-201-3344", "5552013344", "555.201.3344", "201 3344", "+1 555 201 3344"]
)
def test_search_phone_digits_whatever_the_punctuation(searchable: Tenant, query: str) -> None:
    answer = searchable.admin.get("/api/contacts/search", params={"q": query})
    assert ids(answer) == ["marguerite"]


@pytest.mark.parametrize(
    ("q", "expected"),
    [("b", ["bob"]), ("BO", ["bob"]), (" bo ", ["bob"]), ("a", ["ana"]), ("m", ["marguerite"]), ("ok", []), ("55", [])],
)
def test_one_or_two_characters_match_the_start_of_a_name(searchable: Tenant, q: str, expected: list[str]) -> None:
    """Short queries match where a name starts, case aside, never inside it ("ok" is in two names, starts none)
    nor in phones or emails."""
    answer = searchable.admin.get("/api/contacts/search", params={"q": q})
    assert answer.status_code == 200, answer.text
    assert ids(answer) == expected


def test_short_search_is_alphabetical_and_pages(tenant: Tenant) -> None:
    for name in ["Zoe Quinn", "Zachary Adams", "zara Bell", "Zed", "Zachary Adams", "Émile Z"]:
        tenant.contact(name=name)
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"q": "z", "limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = tenant.admin.get("/api/contacts/search", params=params)
        assert answer.status_code == 200, answer.text
        seen += [item["name"] for item in answer.json()["items"]]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["Zachary Adams", "Zachary Adams", "zara Bell", "Zed", "Zoe Quinn"]
    assert [item["name"] for item in tenant.admin.get("/api/contacts/search", params={"q": "ém"}).json()["items"]] == [
        "Émile Z"
    ]


def test_a_long_search_cursor_is_refused_by_a_short_search(searchable: Tenant) -> None:
    for n in range(3):
        searchable.contact(name=f"Examplary {n}", email=f"x{n}@example.net")
    long_cursor = searchable.admin.get("/api/contacts/search", params={"q": "example", "limit": 1}).json()[
        "next_cursor"
    ]
    answer = searchable.admin.get("/api/contacts/search", params={"q": "ex", "cursor": long_cursor})
    assert answer.status_code == 422
    assert "cursor" in answer.json()["detail"]


def test_search_no_match_is_empty(searchable: Tenant) -> None:
    answer = searchable.admin.get("/api/contacts/search", params={"q": "Quetzalcoatl"})
    assert answer.status_code == 200
    assert answer.json() == {"items": [], "next_cursor": None}


def test_search_is_tenant_scoped(searchable: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    other.contact(name="Marguerite Okafor", email="m.okafor@example.org", phone="(555) 201-3344")
    for query in ("Marguerite", "okafor@example", "5552013344"):
        assert ids(searchable.admin.get("/api/contacts/search", params={"q": query})) == ["marguerite"]
    mine = ids(other.admin.get("/api/contacts/search", params={"q": "Marguerite"}))
    assert len(mine) == 1
    assert mine != ["marguerite"]


def test_search_needs_a_query(tenant: Tenant) -> None:
    assert tenant.admin.get("/api/contacts/search").status_code == 422
    assert tenant.admin.get("/api/contacts/search", params={"q": ""}).status_code == 422


def test_search_pages(tenant: Tenant) -> None:
    made = [tenant.contact(name=f"Searchable Sam {n}")["id"] for n in range(5)]
    first = tenant.admin.get("/api/contacts/search", params={"q": "searchable sam", "limit": 3})
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    second = tenant.admin.get("/api/contacts/search", params={"q": "searchable sam", "limit": 3, "cursor": cursor})
    assert ids(first) + ids(second) == made[::-1]
    assert second.json()["next_cursor"] is None


# ---------------------------------------------------------------------------------------------- get


def test_get_contact(tenant: Tenant) -> None:
    made = tenant.contact(name="Gia Get", email="gia@example.com", county="Kent", metadata={"k": [1, 2]})
    answer = tenant.admin.get(f"/api/contacts/{made['id']}")
    assert answer.status_code == 200
    assert answer.json() == made


@pytest.mark.parametrize("contact_id", ["nobody-here", "0123456789ab", "UPPER", "a" * 300, "a..b"])
def test_get_unknown_contact(tenant: Tenant, contact_id: str) -> None:
    answer = tenant.admin.get(f"/api/contacts/{contact_id}")
    assert answer.status_code == 404
    assert isinstance(answer.json()["detail"], str)


def test_get_contact_of_another_tenant(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    theirs = make_tenant().contact(name="Theirs")
    answer = tenant.admin.get(f"/api/contacts/{theirs['id']}")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("no contact with id")
    unknown = tenant.admin.get("/api/contacts/abcdefabcdef")
    assert unknown.json()["detail"].startswith("no contact with id")


# ---------------------------------------------------------------------------------------------- create


def test_create_contact(tenant: Tenant) -> None:
    body = {
        "name": "Cara Create",
        "email": "cara@example.com",
        "phone": "(555) 201-3344",
        "county": "Kent",
        "organization": "PTA",
        "role": "chair",
        "external_id": "crm-77",
        "tags": ["donor", "volunteer", "donor"],
        "metadata": {"source": "fair", "n": 3},
    }
    answer = tenant.admin.post("/api/contacts", json=body)
    assert answer.status_code == 201, answer.text
    made = answer.json()
    assert HEX12.fullmatch(made["id"])
    assert made["tenant"] == tenant.id
    assert made["phone"] == "(555) 201-3344"
    assert made["phone_e164"] == "+15552013344"
    assert made["tags"] == ["donor", "volunteer"]
    assert made["workflow_instance_ids"] == []
    for key in ("name", "email", "county", "organization", "role", "external_id", "metadata"):
        assert made[key] == body[key]
    assert when(made["created_at"]) == when(made["updated_at"])
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json() == made


def test_create_minimal_contact(tenant: Tenant) -> None:
    made = tenant.contact(name="Min")
    for key in ("email", "phone", "phone_e164", "county", "organization", "role", "external_id"):
        assert made[key] is None
    assert made["tags"] == []
    assert made["metadata"] == {}


def test_generated_ids_differ(tenant: Tenant) -> None:
    assert len({tenant.contact()["id"] for _ in range(5)}) == 5


def test_create_with_given_slug_id(tenant: Tenant) -> None:
    made = tenant.contact(id="jane-doe_2")
    assert made["id"] == "jane-doe_2"
    assert tenant.admin.get("/api/contacts/jane-doe_2").status_code == 200


@pytest.mark.parametrize("bad_id", ["Jane", "-jane", "jane doe", "a" * 65, "", "jane/doe"])
def test_create_with_non_slug_id(tenant: Tenant, bad_id: str) -> None:
    answer = tenant.admin.post("/api/contacts", json={"id": bad_id, "name": "X"})
    assert answer.status_code == 422, answer.text
    assert "id" in error_fields(answer)


def test_create_duplicate_id(tenant: Tenant) -> None:
    tenant.contact(id="dup", name="First")
    answer = tenant.admin.post("/api/contacts", json={"id": "dup", "name": "Second"})
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert tenant.admin.get("/api/contacts/dup").json()["name"] == "First"


def test_same_id_in_two_tenants(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.contact(id="shared-id")
    assert make_tenant().contact(id="shared-id")["id"] == "shared-id"


def test_create_duplicate_external_id(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    tenant.contact(external_id="crm-1")
    answer = tenant.admin.post("/api/contacts", json={"name": "Other", "external_id": "crm-1"})
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert len(ids(tenant.admin.get("/api/contacts"))) == 1
    # Unique per tenant only.
    make_tenant().contact(external_id="crm-1")


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 201}, {"name": None}, {"name": 12}, {"email": "a@example.com"}],
)
def test_create_name_required(tenant: Tenant, body: dict[str, Any]) -> None:
    answer = tenant.admin.post("/api/contacts", json=body)
    assert answer.status_code == 422, answer.text
    assert "name" in error_fields(answer)
    assert "name" in answer.json()["detail"]


@pytest.mark.parametrize("name", ["x", "x" * 200, "Zoë Ñúñez-O'Brien"])
def test_create_name_lengths_accepted(tenant: Tenant, name: str) -> None:
    assert tenant.contact(name=name)["name"] == name


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "a b@example.com", "a@b@c.com", 42])
def test_create_invalid_email(tenant: Tenant, email: Any) -> None:
    answer = tenant.admin.post("/api/contacts", json={"name": "X", "email": email})
    assert answer.status_code == 422, answer.text
    assert "email" in error_fields(answer)
    assert "email" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("phone", "e164"),
    [
        ("(555) 201-3344", "+15552013344"),
        ("555.201.3344", "+15552013344"),
        ("+1 555 201 3344", "+15552013344"),
        ("+44 20 7946 0018", "+442079460018"),
        ("not a phone", None),
        ("12", None),
    ],
)
def test_create_phone_e164(tenant: Tenant, phone: str, e164: str | None) -> None:
    made = tenant.contact(phone=phone)
    assert made["phone"] == phone
    assert made["phone_e164"] == e164
    assert len(phone_warnings(made)) == (0 if e164 else 1)


def phone_warnings(answer: dict[str, Any]) -> list[str]:
    """The messages of the answer's warnings about `phone` (a phone that parsed gives no `warnings` key)."""
    if "warnings" not in answer:
        return []
    assert answer["warnings"], "an empty warnings list is left out of the answer"
    return [w["message"] for w in answer["warnings"] if w["field"] == "phone"]


def test_a_phone_that_does_not_parse_is_stored_with_a_warning_on_create_patch_and_upsert(tenant: Tenant) -> None:
    made = tenant.contact(name="Maybe", phone="call me maybe")
    [message] = phone_warnings(made)
    assert "'call me maybe' could not be read as a phone number" in message
    assert "stored as given, and texts and calls will not use it" in message
    stored = tenant.admin.get(f"/api/contacts/{made['id']}").json()
    assert (stored["phone"], stored["phone_e164"]) == ("call me maybe", None)
    assert "warnings" not in stored  # the contact's shape is unchanged: warnings belong to the write's answer
    assert stored == {k: v for k, v in made.items() if k != "warnings"}

    path = f"/api/contacts/{made['id']}"
    assert phone_warnings(tenant.admin.patch(path, json={"phone": "ring twice"}).json())
    assert "warnings" not in tenant.admin.patch(path, json={"county": "Kent"}).json()  # the phone was not given
    fixed = tenant.admin.patch(path, json={"phone": "(555) 201-3344"}).json()
    assert (fixed["phone_e164"], "warnings" in fixed) == ("+15552013344", False)

    upsert = "/api/contacts/by-external-id/crm-maybe"
    created = tenant.admin.put(upsert, json={"name": "Maybe", "phone": "call me maybe"})
    assert created.status_code == 201, created.text
    assert phone_warnings(created.json())
    replaced = tenant.admin.put(upsert, json={"name": "Maybe", "phone": "+44 20 7946 0018"})
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["phone_e164"], "warnings" in replaced.json()) == ("+442079460018", False)


def test_the_openapi_document_shows_the_warnings_of_contact_writes(tenant: Tenant) -> None:
    document = tenant.admin.get("/openapi.json").json()
    for path, method, status in [
        ("/api/contacts", "post", "201"),
        ("/api/contacts/{contact_id}", "patch", "200"),
        ("/api/contacts/by-external-id/{external_id}", "put", "200"),
        ("/api/contacts/by-external-id/{external_id}", "put", "201"),
    ]:
        schema = document["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
        name = schema["$ref"].rsplit("/", 1)[-1]
        warnings = document["components"]["schemas"][name]["properties"]["warnings"]
        assert warnings["items"]["$ref"].endswith("/FieldWarning"), (path, method)
        assert "warnings" not in document["components"]["schemas"][name].get("required", [])
    assert set(document["components"]["schemas"]["FieldWarning"]["properties"]) == {"field", "message"}


def test_create_unknown_field(tenant: Tenant) -> None:
    answer = tenant.admin.post("/api/contacts", json={"name": "X", "favourite_colour": "teal"})
    assert answer.status_code == 422
    assert "favourite_colour" in error_fields(answer)
    assert "favourite_colour" in answer.json()["detail"]


SERVER_OWNED: list[tuple[str, Any]] = [
    ("tenant", "default"),
    ("created_at", "2020-01-01T00:00:00+00:00"),
    ("updated_at", "2020-01-01T00:00:00+00:00"),
    ("workflow_instance_ids", ["abcdefabcdef"]),
    ("phone_e164", "+15552013344"),
]


@pytest.mark.parametrize(("field", "value"), SERVER_OWNED)
def test_create_server_owned_field_refused(tenant: Tenant, field: str, value: Any) -> None:
    answer = tenant.admin.post("/api/contacts", json={"name": "X", field: value})
    assert answer.status_code == 422, answer.text
    assert field in error_fields(answer)
    assert ids(tenant.admin.get("/api/contacts")) == []


@pytest.mark.parametrize(("field", "value"), [*SERVER_OWNED, ("id", "new-id"), ("shoe_size", 9)])
def test_patch_server_owned_or_unknown_field_refused(tenant: Tenant, field: str, value: Any) -> None:
    made = tenant.contact()
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={field: value})
    assert answer.status_code == 422, answer.text
    assert field in error_fields(answer)
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json() == made


@pytest.mark.parametrize("tags", [["Not A Slug"], ["UPPER"], ["ok", "x" * 65], "donor"])
def test_create_invalid_tags(tenant: Tenant, tags: Any) -> None:
    answer = tenant.admin.post("/api/contacts", json={"name": "X", "tags": tags})
    assert answer.status_code == 422
    assert any(f.startswith("tags") for f in error_fields(answer))


# ---------------------------------------------------------------------------------------------- patch


def test_patch_changes_only_given_fields(tenant: Tenant) -> None:
    made = tenant.contact(
        name="Pat Patch", email="pat@example.com", phone="555-201-3344", county="Kent", tags=["a"], metadata={"x": 1}
    )
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"county": "Sussex", "role": "captain"})
    assert answer.status_code == 200, answer.text
    patched = answer.json()
    assert patched["county"] == "Sussex"
    assert patched["role"] == "captain"
    for key in ("id", "name", "email", "phone", "phone_e164", "organization", "external_id", "tags", "metadata"):
        assert patched[key] == made[key], key
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json() == patched


def test_patch_null_clears_email(tenant: Tenant) -> None:
    made = tenant.contact(email="clear@example.com", county="Kent")
    patched = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"email": None}).json()
    assert patched["email"] is None
    assert patched["county"] == "Kent"
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json()["email"] is None


def test_patch_phone_recomputes_e164(tenant: Tenant) -> None:
    made = tenant.contact(phone="555-201-3344")
    patched = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"phone": "(555) 999-0000"}).json()
    assert patched["phone_e164"] == "+15559990000"
    cleared = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"phone": None}).json()
    assert cleared["phone"] is None
    assert cleared["phone_e164"] is None


def test_patch_name_null_never_clears_the_name(tenant: Tenant) -> None:
    made = tenant.contact(name="Keep Me")
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"name": None})
    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        assert answer.json()["name"] == "Keep Me"
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json()["name"] == "Keep Me"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_patch_invalid_name(tenant: Tenant, name: str) -> None:
    made = tenant.contact(name="Keep Me")
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"name": name})
    assert answer.status_code == 422
    assert "name" in error_fields(answer)


def test_patch_invalid_email(tenant: Tenant) -> None:
    made = tenant.contact(email="ok@example.com")
    answer = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"email": "nope"})
    assert answer.status_code == 422
    assert "email" in error_fields(answer)
    assert tenant.admin.get(f"/api/contacts/{made['id']}").json()["email"] == "ok@example.com"


def test_patch_external_id_conflict(tenant: Tenant) -> None:
    tenant.contact(external_id="crm-1")
    other = tenant.contact(external_id="crm-2")
    answer = tenant.admin.patch(f"/api/contacts/{other['id']}", json={"external_id": "crm-1"})
    assert answer.status_code == 409
    assert isinstance(answer.json()["detail"], str)
    assert tenant.admin.get(f"/api/contacts/{other['id']}").json()["external_id"] == "crm-2"
    # Setting a contact's own external id again is no conflict.
    same = tenant.admin.patch(f"/api/contacts/{other['id']}", json={"external_id": "crm-2"})
    assert same.status_code == 200


def test_patch_moves_updated_at_not_created_at(tenant: Tenant) -> None:
    made = tenant.contact()
    time.sleep(0.01)
    patched = tenant.admin.patch(f"/api/contacts/{made['id']}", json={"county": "Kent"}).json()
    assert patched["created_at"] == made["created_at"]
    assert when(patched["updated_at"]) > when(made["updated_at"])


def test_patch_unknown_contact(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    theirs = make_tenant().contact()
    for contact_id in ("abcdefabcdef", theirs["id"]):
        answer = tenant.admin.patch(f"/api/contacts/{contact_id}", json={"county": "Kent"})
        assert answer.status_code == 404
        assert answer.json()["detail"].startswith("no contact with id")


# ---------------------------------------------------------------------------------------------- delete


def test_delete_contact(tenant: Tenant) -> None:
    made = tenant.contact()
    answer = tenant.admin.delete(f"/api/contacts/{made['id']}")
    assert answer.status_code == 204
    assert answer.content == b""
    assert tenant.admin.get(f"/api/contacts/{made['id']}").status_code == 404
    assert tenant.admin.delete(f"/api/contacts/{made['id']}").status_code == 404
    assert ids(tenant.admin.get("/api/contacts")) == []


def test_delete_contact_of_another_tenant(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    other = make_tenant()
    theirs = other.contact()
    assert tenant.admin.delete(f"/api/contacts/{theirs['id']}").status_code == 404
    assert other.admin.get(f"/api/contacts/{theirs['id']}").status_code == 200


def test_delete_with_unfinished_instance_conflicts(tenant: Tenant) -> None:
    contact = tenant.contact()
    pending = tenant.instance(contact_id=contact["id"])
    active = tenant.instance(contact_id=contact["id"], start=True)
    answer = tenant.admin.delete(f"/api/contacts/{contact['id']}")
    assert answer.status_code == 409
    body = answer.json()
    assert isinstance(body["detail"], str)
    assert sorted(body["instance_ids"]) == sorted([pending["id"], active["id"]])
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").status_code == 200
    assert tenant.admin.get(f"/api/instances/{active['id']}").json()["status"] == "active"


def test_delete_cascade_cancels_instances(tenant: Tenant) -> None:
    contact = tenant.contact()
    instance = tenant.instance(contact_id=contact["id"], start=True)
    answer = tenant.admin.delete(f"/api/contacts/{contact['id']}", params={"cascade": "true"})
    assert answer.status_code == 204, answer.text
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").status_code == 404
    kept = tenant.admin.get(f"/api/instances/{instance['id']}")
    assert kept.status_code == 200
    assert kept.json()["status"] == "cancelled"
    assert "instance_cancelled" in [e["type"] for e in kept.json()["timeline"]]


def test_completed_instance_does_not_block_delete(tenant: Tenant) -> None:
    contact = tenant.contact()
    instance = tenant.instance(contact_id=contact["id"], start=True)
    finish(tenant, instance["id"])
    assert tenant.admin.delete(f"/api/contacts/{contact['id']}").status_code == 204
    assert tenant.admin.get(f"/api/instances/{instance['id']}").json()["status"] == "completed"


def test_workflow_instance_ids_oldest_first(tenant: Tenant) -> None:
    contact = tenant.contact()
    made = [tenant.instance(contact_id=contact["id"])["id"] for _ in range(3)]
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json()["workflow_instance_ids"] == made


# ---------------------------------------------------------------------------------------------- tags


def timeline_types(tenant: Tenant, contact_id: str) -> list[str]:
    answer = tenant.admin.get(f"/api/contacts/{contact_id}/timeline", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return [e["type"] for e in answer.json()["items"]]


def test_add_and_remove_tag_idempotent(tenant: Tenant) -> None:
    contact = tenant.contact(tags=["existing"])
    path = f"/api/contacts/{contact['id']}/tags/volunteer"
    for _ in range(2):
        answer = tenant.admin.post(path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tags"] == ["existing", "volunteer"]
    assert timeline_types(tenant, contact["id"]) == ["contact_tag_added", "contact_created"]
    for _ in range(2):
        answer = tenant.admin.delete(path)
        assert answer.status_code == 200, answer.text
        assert answer.json()["tags"] == ["existing"]
    assert timeline_types(tenant, contact["id"]) == ["tag_removed", "contact_tag_added", "contact_created"]
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json()["tags"] == ["existing"]


def test_tag_events_are_contact_level(tenant: Tenant) -> None:
    contact = tenant.contact()
    tenant.admin.post(f"/api/contacts/{contact['id']}/tags/donor")
    tenant.admin.delete(f"/api/contacts/{contact['id']}/tags/donor")
    items = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline").json()["items"]
    assert [e["type"] for e in items] == ["tag_removed", "contact_tag_added", "contact_created"]
    for event in items:
        assert event["instance_id"] is None
        assert event["contact_id"] == contact["id"]
        assert event["data"].get("tag", "donor") == "donor"
        assert event["actor"] not in ("", "system")
        assert event["timestamp"].endswith("+00:00")


def test_remove_absent_tag_is_a_no_op(tenant: Tenant) -> None:
    contact = tenant.contact(tags=["a"])
    answer = tenant.admin.delete(f"/api/contacts/{contact['id']}/tags/never-there")
    assert answer.status_code == 200
    assert answer.json()["tags"] == ["a"]
    assert timeline_types(tenant, contact["id"]) == ["contact_created"]


@pytest.mark.parametrize("tag", ["Upper", "has%20space", "-leading", "x" * 65, "tag.dot", "%C3%A9t%C3%A9"])
def test_non_slug_tag(tenant: Tenant, tag: str) -> None:
    contact = tenant.contact()
    for method in ("POST", "DELETE"):
        answer = tenant.admin.request(method, f"/api/contacts/{contact['id']}/tags/{tag}")
        assert answer.status_code == 422, (method, answer.text)
        assert isinstance(answer.json()["detail"], str)
    assert tenant.admin.get(f"/api/contacts/{contact['id']}").json()["tags"] == []


def test_tag_unknown_contact(tenant: Tenant) -> None:
    assert tenant.admin.post("/api/contacts/abcdefabcdef/tags/donor").status_code == 404
    assert tenant.admin.delete("/api/contacts/abcdefabcdef/tags/donor").status_code == 404


# ---------------------------------------------------------------------------------------------- upsert


def test_upsert_by_external_id(tenant: Tenant) -> None:
    path = "/api/contacts/by-external-id/crm-900"
    first = tenant.admin.put(path, json={"name": "Una Upsert", "county": "Kent", "email": "una@example.com"})
    assert first.status_code == 201, first.text
    created = first.json()
    assert HEX12.fullmatch(created["id"])
    assert created["external_id"] == "crm-900"
    assert created["county"] == "Kent"
    time.sleep(0.01)
    second = tenant.admin.put(path, json={"name": "Una Renamed", "organization": "PTA", "phone": "555-201-3344"})
    assert second.status_code == 200, second.text
    replaced = second.json()
    assert replaced["id"] == created["id"]
    assert replaced["external_id"] == "crm-900"
    assert replaced["name"] == "Una Renamed"
    assert replaced["organization"] == "PTA"
    assert replaced["phone_e164"] == "+15552013344"
    # Fields are replaced, not merged: what the second body left out is gone.
    assert replaced["county"] is None
    assert replaced["email"] is None
    assert replaced["created_at"] == created["created_at"]
    assert when(replaced["updated_at"]) > when(created["updated_at"])
    assert ids(tenant.admin.get("/api/contacts", params={"external_id": "crm-900"})) == [created["id"]]
    assert tenant.admin.get(f"/api/contacts/{created['id']}").json() == replaced


def test_upsert_keeps_instance_links(tenant: Tenant) -> None:
    contact = tenant.contact(external_id="crm-5")
    instance = tenant.instance(contact_id=contact["id"])
    answer = tenant.admin.put("/api/contacts/by-external-id/crm-5", json={"name": "New Name"})
    assert answer.status_code == 200
    assert answer.json()["workflow_instance_ids"] == [instance["id"]]


def test_upsert_is_tenant_scoped(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    theirs = make_tenant().contact(external_id="crm-1", name="Theirs")
    answer = tenant.admin.put("/api/contacts/by-external-id/crm-1", json={"name": "Mine"})
    assert answer.status_code == 201
    assert answer.json()["id"] != theirs["id"]


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "X", "email": "bad"}, {"name": "X", "tenant": "t"}])
def test_upsert_invalid_body(tenant: Tenant, body: dict[str, Any]) -> None:
    answer = tenant.admin.put("/api/contacts/by-external-id/crm-1", json=body)
    assert answer.status_code == 422
    assert error_fields(answer)
    assert ids(tenant.admin.get("/api/contacts")) == []


# ---------------------------------------------------------------------------------------------- timeline


def test_timeline_merges_contact_and_instance_events_newest_first(tenant: Tenant) -> None:
    contact = tenant.contact()
    tenant.admin.post(f"/api/contacts/{contact['id']}/tags/early")
    instance = tenant.instance(contact_id=contact["id"], start=True)
    tenant.admin.post(f"/api/contacts/{contact['id']}/tags/late")
    answer = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline", params={"limit": 500})
    assert answer.status_code == 200
    items = answer.json()["items"]
    assert answer.json()["next_cursor"] is None
    assert items[0]["type"] == "contact_tag_added"
    assert items[0]["data"]["tag"] == "late"
    assert items[-1]["type"] == "contact_created"
    assert items[-2]["type"] == "contact_tag_added"
    assert items[-2]["data"]["tag"] == "early"
    middle = items[1:-2]
    assert middle
    assert all(e["instance_id"] == instance["id"] for e in middle)
    types = [e["type"] for e in middle]
    assert "instance_created" in types
    assert "node_entered" in types
    # Newest first, and the same events (reversed) as the instance's own timeline.
    stamps = [when(e["timestamp"]) for e in items]
    assert stamps == sorted(stamps, reverse=True)
    own = tenant.admin.get(f"/api/instances/{instance['id']}/timeline", params={"limit": 500}).json()["items"]
    assert [e["id"] for e in middle] == [e["id"] for e in own][::-1]


def test_timeline_pages(tenant: Tenant) -> None:
    contact = tenant.contact()
    for n in range(4):
        tenant.admin.post(f"/api/contacts/{contact['id']}/tags/t{n}")
    tenant.instance(contact_id=contact["id"], start=True)
    everything = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline", params={"limit": 500}).json()["items"]
    assert len(everything) > 6
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(50):
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline", params=params)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 3
        seen += [e["id"] for e in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in everything]


def test_timeline_errors(tenant: Tenant, make_tenant: Callable[[], Tenant]) -> None:
    contact = tenant.contact()
    assert tenant.admin.get("/api/contacts/abcdefabcdef/timeline").status_code == 404
    theirs = make_tenant().contact()
    assert tenant.admin.get(f"/api/contacts/{theirs['id']}/timeline").status_code == 404
    bad = tenant.admin.get(f"/api/contacts/{contact['id']}/timeline", params={"cursor": "garbage"})
    assert bad.status_code == 422
    assert tenant.admin.get(f"/api/contacts/{contact['id']}/timeline", params={"limit": 0}).status_code == 422


# ---------------------------------------------------------------------------------------------- external ids
# One rule on create, patch, upsert and the list filter: 1-200 characters, no control characters, not "." or "..".
# Every id it accepts reaches PUT /by-external-id/{id} when the client percent-encodes it as one path segment.
BAD_EXTERNAL_IDS = ["", "a\tb", "a\nb", "crm\r1", "\x00", "a\x7f", "a\x85b", "x" * 201, ".", ".."]
ODD_EXTERNAL_IDS = [
    *("a/b", "crm/123/", "/leading", "a//b", "a/../b", "a/./b", "...", ".a", "a.", "100%", "%2F", "a%20b"),
    *("a?b=c", "a#b", "a&b", "a b", " padded ", "a+b", "a;b=c", "~user", "@", ":", "a\\b", "[1]", "{x}"),
    *("Zoë", "東京-12", "emoji 😀", "\u200bzero width", "\u2028line", "x" * 200, "é" * 200),
]


def by_external_id(external_id: str) -> str:
    return "/api/contacts/by-external-id/" + quote(external_id, safe="")


def raw_json(client: httpx.Client, method: str, path: str, external_id: str) -> httpx.Response:
    """A body with the id as JSON escapes, so a lone surrogate or a control character travels as the client wrote."""
    body = '{"name": "Pat", "external_id": ' + json.dumps(external_id) + "}"
    return client.request(method, path, content=body.encode(), headers={"Content-Type": "application/json"})


def refused_in_body(answer: httpx.Response, external_id: str) -> None:
    if external_id in ("\x00", "\ud800"):  # refused for every string of every body, before the model sees it
        assert answer.status_code == 400, answer.text
        assert "NUL character or an unpaired surrogate" in answer.json()["detail"]
    else:
        assert answer.status_code == 422, answer.text
        assert error_fields(answer) == ["external_id"]


@pytest.mark.parametrize("external_id", [*BAD_EXTERNAL_IDS, "\ud800"])
def test_a_bad_external_id_is_refused_everywhere_with_its_field(tenant: Tenant, external_id: str) -> None:
    refused_in_body(raw_json(tenant.admin, "POST", "/api/contacts", external_id), external_id)
    contact = tenant.contact()
    refused_in_body(raw_json(tenant.admin, "PATCH", f"/api/contacts/{contact['id']}", external_id), external_id)
    if external_id not in ("", ".", "..", "\ud800"):  # a client cannot even send those as one path segment
        put = tenant.admin.put(by_external_id(external_id), json={"name": "Pat"})
        assert put.status_code == 422, put.text
        assert error_fields(put) == ["external_id"]
        listed = tenant.admin.get("/api/contacts", params={"external_id": external_id})
        assert listed.status_code == 422, listed.text
        assert error_fields(listed) == ["external_id"]
    assert ids(tenant.admin.get("/api/contacts")) == [contact["id"]]


def test_a_dot_segment_or_an_empty_id_never_reaches_another_route(tenant: Tenant) -> None:
    """Clients drop `.` and `..` segments (they were refused as ids above) and an empty segment names no id."""
    for path in (
        "/api/contacts/by-external-id/",
        "/api/contacts/by-external-id/%2E%2E",
        "/api/contacts/by-external-id/%2e",
    ):
        answer = tenant.admin.put(path, json={"name": "Pat"})
        assert answer.status_code == 422, (path, answer.text)
        assert error_fields(answer) == ["external_id"]
    assert ids(tenant.admin.get("/api/contacts")) == []


def reach(tenant: Tenant, external_id: str) -> None:
    """Create with `external_id`, then find and replace that same contact by it, over HTTP."""
    made = tenant.admin.post("/api/contacts", json={"name": "Pat", "external_id": external_id})
    assert made.status_code == 201, made.text
    assert made.json()["external_id"] == external_id
    listed = tenant.admin.get("/api/contacts", params={"external_id": external_id})
    assert ids(listed) == [made.json()["id"]]
    put = tenant.admin.put(by_external_id(external_id), json={"name": "Pat Replaced"})
    assert put.status_code == 200, (external_id, put.text)
    assert (put.json()["id"], put.json()["external_id"], put.json()["name"]) == (
        made.json()["id"],
        external_id,
        "Pat Replaced",
    )
    assert tenant.admin.delete(f"/api/contacts/{made.json()['id']}").status_code == 204


@pytest.mark.parametrize("external_id", ODD_EXTERNAL_IDS)
def test_every_accepted_external_id_is_reachable_by_put(tenant: Tenant, external_id: str) -> None:
    reach(tenant, external_id)


def test_a_put_creates_what_a_later_put_and_the_filter_find(tenant: Tenant) -> None:
    first = tenant.admin.put(by_external_id("org/7 ü"), json={"name": "Una"})
    assert first.status_code == 201, first.text
    assert first.json()["external_id"] == "org/7 ü"
    again = tenant.admin.put(by_external_id("org/7 ü"), json={"name": "Una Again"})
    assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
    assert tenant.admin.put(by_external_id("org"), json={"name": "Other"}).status_code == 201  # not a prefix match


EXTERNAL_IDS = st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=200).filter(
    lambda text: text not in (".", "..")
)


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(external_id=EXTERNAL_IDS)
def test_any_accepted_external_id_is_reachable_by_put(tenant: Tenant, external_id: str) -> None:
    reach(tenant, external_id)
