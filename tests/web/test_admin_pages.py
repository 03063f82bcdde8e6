"""/admin over HTTP on SQLite (ONE_STORE: a page only calls the services, whose storage the store and sign-in suites
test on every store): people (invite, role, remove), tokens (create, revoke), subscriptions and their deliveries;
admins only; secrets shown once."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from conftest import ONE_STORE, Tenant
from pages import browser, form_token, invitation_path, sign_in, signed_in, text_of

HOOK = "https://1.1.1.1/hooks/cbw"  # a public address: the guard lets it through without a DNS answer


def post(client: httpx.Client, path: str, **fields: str) -> httpx.Response:
    return client.post(path, data={"csrf": form_token(client.get("/admin")), **fields})


@ONE_STORE
def test_only_admins_see_the_admin_page(tenant: Tenant) -> None:
    for role in ("staff", "viewer", "volunteer"):
        client, _ = signed_in(tenant, role)
        refused = client.get("/admin")
        assert refused.status_code == 403, role
        assert "Not allowed" in text_of(refused)
    admin, _ = signed_in(tenant, "admin")
    page = admin.get("/admin")
    assert page.status_code == 200
    for section in ("People", "API tokens", "Webhook subscriptions"):
        assert section in text_of(page)


@ONE_STORE
def test_inviting_someone_shows_the_link_once_and_it_works(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    answer = post(admin, "/admin/people", email="new.person@example.org", name="New Person", role="volunteer")
    assert answer.status_code == 201, answer.text
    link = re.search(r'<code class="copy">([^<]+)</code>', answer.text)
    assert link
    assert "/invite/" in link.group(1)
    again = admin.get("/admin")
    assert link.group(1) not in again.text  # shown once
    assert "New Person" in text_of(again)
    assert "invited" in text_of(again)
    invited = browser(tenant)
    page = invited.get(invitation_path({"invitation_url": link.group(1)}))
    assert page.status_code == 200
    password = "a long enough password"
    done = invited.post(
        invitation_path({"invitation_url": link.group(1)}),
        data={"csrf": form_token(page), "password": password, "password_again": password},
    )
    assert done.status_code == 303


@ONE_STORE
def test_bad_invitations_are_shown_beside_the_form(tenant: Tenant) -> None:
    admin, me = signed_in(tenant, "admin")
    bad = post(admin, "/admin/people", email="not an address", name="X", role="volunteer")
    assert bad.status_code == 422
    assert "email" in text_of(bad)
    assert 'value="not an address"' in bad.text  # what they typed stays
    twice = post(admin, "/admin/people", email=me["email"].upper(), name="Me again", role="staff")
    assert twice.status_code == 409
    assert "already signs in" in text_of(twice)
    wrong_role = post(admin, "/admin/people", email="r@example.org", name="R", role="superadmin")
    assert wrong_role.status_code == 422


@ONE_STORE
def test_changing_a_role_applies_at_the_next_click(tenant: Tenant) -> None:
    admin, me = signed_in(tenant, "admin")
    staff, person = signed_in(tenant, "staff")
    assert staff.get("/admin").status_code == 403
    changed = post(admin, f"/admin/people/{person['id']}/role", role="admin")
    assert changed.status_code == 303
    assert staff.get("/admin").status_code == 200  # the same session, the new role
    assert tenant.admin.get(f"/api/users/{person['id']}").json()["role"] == "admin"
    mine = post(admin, f"/admin/people/{me['id']}/role", role="viewer")
    assert mine.status_code == 409
    assert post(admin, f"/admin/people/{person['id']}/role", role="emperor").status_code == 422


@ONE_STORE
def test_removing_someone_signs_them_out(tenant: Tenant) -> None:
    admin, me = signed_in(tenant, "admin")
    staff, person = signed_in(tenant, "staff")
    assert staff.get("/").status_code == 200
    assert post(admin, f"/admin/people/{person['id']}/remove").status_code == 303
    assert staff.get("/").status_code == 303
    assert post(admin, f"/admin/people/{me['id']}/remove").status_code == 409
    assert post(admin, "/admin/people/000000000000/remove").status_code == 404


@ONE_STORE
def test_tokens_are_made_shown_once_and_revoked(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    made = post(admin, "/admin/tokens", role="staff", name="Phone bank desk")
    assert made.status_code == 201
    secret = re.search(r'<code class="copy">(cbw_[^<]+)</code>', made.text)
    assert secret
    client = tenant.client(secret.group(1))
    assert client.get("/api/contacts").status_code == 200
    listed = admin.get("/admin")
    assert secret.group(1) not in listed.text
    [token_id] = [t["id"] for t in tenant.admin.get("/api/tokens").json()["items"] if t["name"] == "Phone bank desk"]
    assert post(admin, f"/admin/tokens/{token_id}/revoke").status_code == 303
    assert client.get("/api/contacts").status_code == 401
    assert post(admin, "/admin/tokens", role="superadmin").status_code == 422


@ONE_STORE
def test_subscriptions_and_their_deliveries(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    made = post(admin, "/admin/subscriptions", url=HOOK, events="instance_created, node_entered")
    assert made.status_code == 201, made.text
    assert re.search(r'<code class="copy">whsec_[^<]+</code>', made.text)
    [sub] = tenant.admin.get("/api/subscriptions").json()["items"]
    assert sub["events"] == ["instance_created", "node_entered"]
    tenant.instance(start=True)  # makes events, and so deliveries (the fan-out runs in a worker; none here)
    page = admin.get(f"/admin/subscriptions/{sub['id']}")
    assert page.status_code == 200
    assert HOOK in page.text
    assert admin.get(f"/admin/subscriptions/{sub['id']}?status=nonsense").status_code == 200
    off = post(admin, f"/admin/subscriptions/{sub['id']}/enabled", enabled="false")
    assert off.status_code == 303
    assert tenant.admin.get(f"/api/subscriptions/{sub['id']}").json()["enabled"] is False
    assert post(admin, f"/admin/subscriptions/{sub['id']}/enabled", enabled="true").status_code == 303
    bad = post(admin, "/admin/subscriptions", url="http://127.0.0.1/x")
    assert bad.status_code == 422
    assert "may not call it" in text_of(bad)
    assert post(admin, f"/admin/subscriptions/{sub['id']}/delete").status_code == 303
    assert admin.get(f"/admin/subscriptions/{sub['id']}").status_code == 404


@ONE_STORE
def test_another_tenants_records_are_not_found(make_tenant: Callable[[], Tenant]) -> None:
    owner, other = make_tenant(), make_tenant()
    victim = owner.admin.post(
        "/api/users", json={"email": "v@example.org", "name": "V", "role": "staff", "password": "x" * 12}
    ).json()["user"]
    token = owner.token("staff")
    admin, _ = signed_in(other, "admin")
    assert post(admin, f"/admin/people/{victim['id']}/remove").status_code == 404
    assert post(admin, f"/admin/people/{victim['id']}/role", role="viewer").status_code == 404
    assert post(admin, f"/admin/tokens/{token['id']}/revoke").status_code == 404
    assert owner.admin.get(f"/api/users/{victim['id']}").status_code == 200
    assert sign_in(browser(owner), "v@example.org", "x" * 12).status_code == 303


@ONE_STORE
def test_forms_need_their_token(tenant: Tenant) -> None:
    admin, _ = signed_in(tenant, "admin")
    refused = admin.post("/admin/tokens", data={"role": "staff"})
    assert refused.status_code == 403
    assert tenant.admin.get("/api/tokens").json()["items"][-1]["role"] == "admin"  # only the tenant's own token
