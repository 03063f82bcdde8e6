"""Helpers for the web pages' tests: people added over the API (or written to the store with a password hashed once),
and a browser-like client that signs in with the form (cookies kept, form tokens read from the page, `Origin` sent as
a browser does)."""

from __future__ import annotations

import asyncio
import html
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import httpx

from conftest import TLS, Tenant

PASSWORD = "correct horse battery"
FORM_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')
_HASHED: dict[str, str] = {}


def person(tenant: Tenant, role: str, email: str | None = None, password: str | None = PASSWORD) -> dict[str, Any]:
    """A person of `tenant` added by its admin; the answer of POST /api/users."""
    body: dict[str, Any] = {
        "email": email or f"{role}-{secrets.token_hex(4)}@example.org",
        "name": f"A {role}",
        "role": role,
    }
    if password is not None:
        body["password"] = password
    made = tenant.admin.post("/api/users", json=body)
    assert made.status_code == 201, made.text
    answer: dict[str, Any] = made.json()
    return answer


def password_hash(password: str = PASSWORD) -> str:
    """The argon2 hash of `password`, made once per process by the service's own `hash_password` (the production
    parameters: tens of milliseconds of two cores on purpose, too slow to pay for each person a page test needs)."""
    if password not in _HASHED:
        from cbworkflow.services.users import hash_password

        _HASHED[password] = asyncio.run(hash_password(password))
    return _HASHED[password]


def stored_person(tenant: Tenant, role: str) -> dict[str, Any]:
    """An active person of `tenant` whose password is PASSWORD, written to the server's store as the service writes
    one (the same record, with the hash from `password_hash`); the user as POST /api/users answers it. Signing in
    as them checks the password against that hash with argon2 as usual. Adding people over the API, with or without
    a password, is tested with `person` (web/test_sign_in.py, api/test_users_api.py)."""
    from cbworkflow.ids import new_id
    from cbworkflow.models.users import User, UserRecord, UserRole, UserStatus, email_key
    from cbworkflow.settings import Settings
    from cbworkflow.store import open_store
    from cbworkflow.store.base import Tx

    now = datetime.now(UTC)
    user = User(
        id=new_id(),
        tenant=tenant.id,
        email=f"{role}-{secrets.token_hex(4)}@example.org",
        name=f"A {role}",
        role=UserRole(role),
        status=UserStatus.ACTIVE,
        created_at=now,
    )
    record = UserRecord(user=user, password_hash=password_hash())

    def insert(tx: Tx) -> None:
        assert tx.get_user_by_email(email_key(user.email)) is None
        tx.insert_user(record)

    async def write() -> None:
        server = tenant.server
        store = open_store(Settings(_env_file=None, data_dir=server.data_dir, database_url=server.database_url))
        try:
            await store.write(tenant.id, insert)
        finally:
            await store.close()

    asyncio.run(write())
    return user.model_dump(mode="json")


def invitation_path(made: dict[str, Any]) -> str:
    """The path of an invitation link (the link itself is on CBW_PUBLIC_URL, not the test server's port)."""
    link: str = made["invitation_url"]
    return link[link.index("/invite/") :]


def browser(tenant: Tenant) -> httpx.Client:
    """A client that behaves like a browser: keeps cookies, asks for HTML, sends its origin, never follows
    redirects by itself (tests look at them). Closed with the tenant's other clients."""
    base_url = tenant.server.base_url
    client = httpx.Client(
        base_url=base_url,
        headers={"Accept": "text/html", "Origin": base_url},
        follow_redirects=False,
        timeout=30,
        verify=TLS,
    )
    tenant._clients.append(client)
    return client


def form_token(page: httpx.Response) -> str:
    found = FORM_TOKEN.search(page.text)
    assert found, f"no form token on the page:\n{page.text[:2000]}"
    return html.unescape(found.group(1))


def sign_in(client: httpx.Client, email: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    page = client.get("/login")
    assert page.status_code == 200, page.text
    return client.post("/login", data={"csrf": form_token(page), "email": email, "password": password, **extra})


def signed_in(tenant: Tenant, role: str) -> tuple[httpx.Client, dict[str, Any]]:
    """A browser signed in with the form as a new person of `tenant` with `role` (see `stored_person`)."""
    user = stored_person(tenant, role)
    client = browser(tenant)
    answer = sign_in(client, user["email"])
    assert answer.status_code == 303, answer.text
    return client, user


def text_of(page: httpx.Response) -> str:
    """The page's text as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


def form_fields(page: httpx.Response, action_pattern: str) -> tuple[str, dict[str, str]]:
    """The action of the page's form whose action matches `action_pattern`, and the hidden fields it carries."""
    found = re.search(r'<form method="post" action="(' + action_pattern + r')"[^>]*>(.*?)</form>', page.text, re.S)
    assert found, f"no form {action_pattern!r} on the page:\n{page.text[:2000]}"
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', found.group(2))
    return found.group(1), {name: html.unescape(value) for name, value in hidden}
