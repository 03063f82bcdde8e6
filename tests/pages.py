"""Helpers for the web pages' tests: people added over the API, and a browser-like client that signs in with the
form (cookies kept, form tokens read from the page, `Origin` sent as a browser does)."""

from __future__ import annotations

import html
import re
import secrets
from typing import Any

import httpx

from conftest import Tenant

PASSWORD = "correct horse battery"
FORM_TOKEN = re.compile(r'name="csrf" value="([^"]+)"')


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


def invitation_path(made: dict[str, Any]) -> str:
    """The path of an invitation link (the link itself is on CBW_PUBLIC_URL, not the test server's port)."""
    link: str = made["invitation_url"]
    return link[link.index("/invite/") :]


def browser(tenant: Tenant) -> httpx.Client:
    """A client that behaves like a browser: keeps cookies, asks for HTML, sends its origin, never follows
    redirects by itself (tests look at them). Closed with the tenant's other clients."""
    base_url = tenant.server.base_url
    client = httpx.Client(
        base_url=base_url, headers={"Accept": "text/html", "Origin": base_url}, follow_redirects=False, timeout=30
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


def signed_in(tenant: Tenant, role: str, **kwargs: Any) -> tuple[httpx.Client, dict[str, Any]]:
    """A browser signed in as a new person of `tenant` with `role`."""
    made = person(tenant, role, **kwargs)
    client = browser(tenant)
    answer = sign_in(client, made["user"]["email"])
    assert answer.status_code == 303, answer.text
    return client, made["user"]


def text_of(page: httpx.Response) -> str:
    """The page's text as a person reads it: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


def form_fields(page: httpx.Response, action_pattern: str) -> tuple[str, dict[str, str]]:
    """The action of the page's form whose action matches `action_pattern`, and the hidden fields it carries."""
    found = re.search(r'<form method="post" action="(' + action_pattern + r')"[^>]*>(.*?)</form>', page.text, re.S)
    assert found, f"no form {action_pattern!r} on the page:\n{page.text[:2000]}"
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', found.group(2))
    return found.group(1), {name: html.unescape(value) for name, value in hidden}
