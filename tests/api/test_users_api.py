"""/api/users over HTTP on every store (api.md § Campaign work): people who sign in, added by admins only."""

from __future__ import annotations

from collections.abc import Callable

from conftest import Tenant

PASSWORD = "correct horse battery"


def test_an_admin_adds_a_person_with_a_password(tenant: Tenant) -> None:
    made = tenant.admin.post(
        "/api/users", json={"email": "Sam@Example.org", "name": "Sam Rivera", "role": "volunteer", "password": PASSWORD}
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["invitation_url"] is None
    user = body["user"]
    assert (user["email"], user["name"], user["role"], user["status"]) == (
        "Sam@example.org",  # as given, the domain lowercased by the address check
        "Sam Rivera",
        "volunteer",
        "active",
    )
    assert user["tenant"] == tenant.id
    assert "password" not in made.text
    assert "hash" not in made.text
    assert tenant.admin.get(f"/api/users/{user['id']}").json() == user
    assert [u["id"] for u in tenant.admin.get("/api/users").json()["items"]] == [user["id"]]


def test_without_a_password_the_answer_holds_an_invitation_link_once(tenant: Tenant) -> None:
    made = tenant.admin.post("/api/users", json={"email": "kim@example.org", "name": "Kim", "role": "staff"})
    assert made.status_code == 201, made.text
    link = made.json()["invitation_url"]
    assert link.startswith(f"http://localhost:8000/invite/{tenant.id}.")  # on CBW_PUBLIC_URL
    user = made.json()["user"]
    assert user["status"] == "invited"
    assert user["invitation_expires_at"] > user["created_at"]
    listed = tenant.admin.get("/api/users")
    assert link.rsplit(".", 1)[1] not in listed.text  # the secret is shown once, never listed


def test_an_email_signs_in_once_per_tenant_whatever_its_case(make_tenant: Callable[[], Tenant]) -> None:
    first, second = make_tenant(), make_tenant()
    body = {"email": "ana@example.org", "name": "Ana", "role": "viewer", "password": PASSWORD}
    assert first.admin.post("/api/users", json=body).status_code == 201
    again = first.admin.post("/api/users", json={**body, "email": "ANA@example.org"})
    assert again.status_code == 409, again.text
    assert "already" in again.json()["detail"]
    assert second.admin.post("/api/users", json=body).status_code == 201  # another campaign may have her too


def test_only_admins_manage_people(tenant: Tenant) -> None:
    body = {"email": "x@example.org", "name": "X", "role": "viewer", "password": PASSWORD}
    for role in ("staff", "volunteer", "viewer"):
        client = tenant.as_role(role)
        assert client.post("/api/users", json=body).status_code == 403
        assert client.get("/api/users").status_code == 403
    assert tenant.client(None).get("/api/users").status_code == 401


def test_another_tenants_person_is_not_found(make_tenant: Callable[[], Tenant]) -> None:
    owner, other = make_tenant(), make_tenant()
    made = owner.admin.post(
        "/api/users", json={"email": "lee@example.org", "name": "Lee", "role": "staff", "password": PASSWORD}
    ).json()["user"]
    assert other.admin.get(f"/api/users/{made['id']}").status_code == 404
    assert other.admin.delete(f"/api/users/{made['id']}").status_code == 404
    assert other.admin.get("/api/users").json()["items"] == []
    assert owner.admin.get(f"/api/users/{made['id']}").status_code == 200


def test_removing_a_person(tenant: Tenant) -> None:
    made = tenant.admin.post(
        "/api/users", json={"email": "jo@example.org", "name": "Jo", "role": "staff", "password": PASSWORD}
    ).json()["user"]
    assert tenant.admin.delete(f"/api/users/{made['id']}").status_code == 204
    assert tenant.admin.get(f"/api/users/{made['id']}").status_code == 404
    assert tenant.admin.delete(f"/api/users/{made['id']}").status_code == 404
    assert tenant.admin.get("/api/users/not%20an%20id").status_code == 404


def test_bad_input_is_a_422_naming_the_field(tenant: Tenant) -> None:
    cases = {
        "email": {"email": "not an address", "name": "A", "role": "staff"},
        "password": {"email": "a@example.org", "name": "A", "role": "staff", "password": "short"},
        "role": {"email": "a@example.org", "name": "A", "role": "superadmin"},
        "name": {"email": "a@example.org", "name": "", "role": "staff"},
    }
    for field, body in cases.items():
        answer = tenant.admin.post("/api/users", json=body)
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["errors"][0]["field"] == field
    assert tenant.admin.post("/api/users", json={"email": "a@example.org"}).status_code == 422
