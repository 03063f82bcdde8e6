"""Signing in to the web pages (web.md, issue: people and sign-in) on every store: sessions in the store, cookies,
CSRF, session fixation, sign-out and removal ending sessions at once, failed sign-ins limited."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from conftest import Tenant
from pages import PASSWORD, browser, form_token, invitation_path, person, sign_in, signed_in, text_of


def test_a_page_without_a_session_sends_the_browser_to_sign_in(tenant: Tenant) -> None:
    client = browser(tenant)
    answer = client.get("/next?action=phone_call")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=%2Fnext%3Faction%3Dphone_call"
    page = client.get("/login")
    assert page.status_code == 200
    assert '<label for="email">Email</label>' in page.text
    assert '<label for="password">Password</label>' in page.text
    assert ">Sign in</button>" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


def test_signing_in_opens_a_session_with_a_safe_cookie(tenant: Tenant) -> None:
    made = person(tenant, "staff")
    client = browser(tenant)
    answer = sign_in(client, made["user"]["email"].upper(), next="/next")
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/next"
    cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and v.startswith("cbw_session="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # plain HTTP here; set when the request came over TLS
    dashboard = client.get("/")
    assert dashboard.status_code == 200, dashboard.text
    assert "Dashboard" in text_of(dashboard)
    assert made["user"]["name"] in dashboard.text


def test_a_wrong_password_or_address_says_so_without_saying_which(tenant: Tenant) -> None:
    made = person(tenant, "staff")
    client = browser(tenant)
    wrong_password = sign_in(client, made["user"]["email"], "not the password at all")
    unknown = sign_in(client, "nobody-here@example.org")
    assert wrong_password.status_code == unknown.status_code == 401
    assert "do not match an account" in text_of(wrong_password)
    assert text_of(wrong_password).replace(made["user"]["email"], "X") == text_of(unknown).replace(
        "nobody-here@example.org", "X"
    )
    assert "cbw_session" not in client.cookies


def test_the_session_id_changes_at_sign_in(tenant: Tenant) -> None:
    """Session fixation: a session cookie the browser already had (planted, or an old one) is never kept."""
    made = person(tenant, "staff")
    first = browser(tenant)
    assert sign_in(first, made["user"]["email"]).status_code == 303
    old = first.cookies["cbw_session"]
    assert first.post("/logout", data={"csrf": form_token(first.get("/"))}).status_code == 303
    planted = browser(tenant)
    planted.cookies.set("cbw_session", old, domain="127.0.0.1")
    assert sign_in(planted, made["user"]["email"]).status_code == 303
    assert planted.cookies["cbw_session"] != old
    assert planted.cookies["cbw_session"].split(".")[1] != old.split(".")[1]  # a new session, not a new secret
    forged = browser(tenant)
    forged.cookies.set("cbw_session", planted.cookies["cbw_session"][:-4] + "AAAA", domain="127.0.0.1")
    assert forged.get("/").status_code == 303


def test_a_form_without_its_token_or_from_another_site_is_refused(tenant: Tenant) -> None:
    made = person(tenant, "staff")
    client = browser(tenant)
    page = client.get("/login")
    token = form_token(page)
    no_token = client.post("/login", data={"email": made["user"]["email"], "password": PASSWORD})
    assert no_token.status_code == 403
    other_site = client.post(
        "/login",
        data={"csrf": token, "email": made["user"]["email"], "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert other_site.status_code == 403
    assert "another site" in text_of(other_site)
    assert "cbw_session" not in client.cookies
    # Signed in, a page's form needs the session's token too.
    signed, _ = signed_in(tenant, "volunteer")
    tenant.instance(start=True)
    assert signed.post("/next/claim", data={}).status_code == 403
    assert signed.post("/next/claim", data={"csrf": "forged"}).status_code == 403
    assert tenant.admin.get("/api/tasks").json()["items"][0]["held_by"] is None  # nothing was claimed


def test_signing_out_ends_the_session(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "staff")
    cookie = client.cookies["cbw_session"]
    page = client.get("/")
    answer = client.post("/logout", data={"csrf": form_token(page)})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    replay = browser(tenant)
    replay.cookies.set("cbw_session", cookie, domain="127.0.0.1")
    assert replay.get("/").status_code == 303  # the old cookie is worth nothing now


def test_a_removed_persons_open_session_stops_at_its_next_request(tenant: Tenant) -> None:
    client, user = signed_in(tenant, "staff")
    assert client.get("/").status_code == 200
    assert tenant.admin.delete(f"/api/users/{user['id']}").status_code == 204
    answer = client.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login")


def test_failed_sign_ins_are_limited_per_account(tenant: Tenant) -> None:
    made = person(tenant, "staff")
    client = browser(tenant)
    for _ in range(5):
        assert sign_in(client, made["user"]["email"], "wrong password here").status_code == 401
    blocked = sign_in(client, made["user"]["email"])  # even the right password, for now
    assert blocked.status_code == 429
    assert "Too many failed sign-ins" in text_of(blocked)
    assert blocked.headers["retry-after"]
    other = person(tenant, "staff")
    assert sign_in(browser(tenant), other["user"]["email"]).status_code == 303


def test_an_invitation_link_sets_a_password_once(tenant: Tenant) -> None:
    made = person(tenant, "volunteer", password=None)
    link = invitation_path(made)
    client = browser(tenant)
    assert sign_in(client, made["user"]["email"], PASSWORD).status_code == 401  # no password yet
    page = client.get(link)
    assert page.status_code == 200, page.text
    assert made["user"]["email"] in page.text
    token = form_token(page)
    mismatch = client.post(link, data={"csrf": token, "password": PASSWORD, "password_again": PASSWORD + "x"})
    assert mismatch.status_code == 422
    assert "not the same" in text_of(mismatch)
    short = client.post(link, data={"csrf": token, "password": "short", "password_again": "short"})
    assert short.status_code == 422
    done = client.post(link, data={"csrf": token, "password": PASSWORD, "password_again": PASSWORD})
    assert done.status_code == 303, done.text
    assert client.get("/next").status_code == 200  # signed in straight away
    assert tenant.admin.get(f"/api/users/{made['user']['id']}").json()["status"] == "active"
    used = browser(tenant).get(link)
    assert used.status_code == 404
    assert "not valid" in text_of(used)
    assert browser(tenant).get("/invite/nonsense").status_code == 404
    assert sign_in(browser(tenant), made["user"]["email"]).status_code == 303


def test_one_address_in_two_campaigns_chooses_one(make_tenant: Callable[[], Tenant]) -> None:
    first, second = make_tenant(), make_tenant()
    email = f"both-{first.id}@example.org"
    person(first, "staff", email=email)
    person(second, "viewer", email=email)
    client = browser(first)
    asked = sign_in(client, email)
    assert asked.status_code == 200
    assert '<label for="tenant">Campaign</label>' in asked.text
    assert f"Tenant {first.id}" in asked.text
    assert f"Tenant {second.id}" in asked.text
    chosen = client.post(
        "/login", data={"csrf": form_token(asked), "email": email, "password": PASSWORD, "tenant": second.id}
    )
    assert chosen.status_code == 303
    assert client.cookies["cbw_session"].startswith(f"{second.id}.")


def test_the_api_keeps_working_with_tokens_and_ignores_sessions(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "admin")
    assert client.get("/api/contacts").status_code == 401  # a session is for the pages; machines use tokens
    assert tenant.admin.get("/api/contacts").status_code == 200


def test_next_after_sign_in_stays_on_this_site(tenant: Tenant) -> None:
    made = person(tenant, "staff")
    for target in ("https://evil.example/", "//evil.example", "/\\evil.example"):
        client = browser(tenant)
        answer = sign_in(client, made["user"]["email"], next=target)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"


def test_unknown_pages_answer_a_page_and_the_api_json(tenant: Tenant) -> None:
    client = browser(tenant)
    page = client.get("/no-such-page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    api = httpx.get(f"{tenant.server.base_url}/api/nothing", headers={"Accept": "text/html"})
    assert api.status_code in (401, 404)
    assert api.headers["content-type"].startswith("application/json")


def test_a_burst_of_simultaneous_guesses_is_limited_like_a_sequence(tenant: Tenant) -> None:
    """Every attempt is counted as it starts: 20 guesses sent at once get at most 5 password checks."""
    made = person(tenant, "staff")
    client = browser(tenant)
    token = form_token(client.get("/login"))
    fields = {"csrf": token, "email": made["user"]["email"]}

    def guess(i: int) -> int:
        return client.post("/login", data={**fields, "password": f"wrong guess {i}"}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(guess, range(20)))
    assert answers.count(401) <= 5, answers
    assert answers.count(429) >= 15, answers


def test_another_tenants_account_cannot_clear_the_failures_of_an_address(make_tenant: Callable[[], Tenant]) -> None:
    """An admin who adds the victim's address to their own tenant, with a password they know, signing in with it
    does not give them more guesses at the victim's account."""
    victim_tenant, attacker_tenant = make_tenant(), make_tenant()
    email = f"victim-{victim_tenant.id}@example.org"
    person(victim_tenant, "staff", email=email, password="the victim's password")
    person(attacker_tenant, "viewer", email=email, password="attacker knows this")
    answers = []
    for _ in range(3):
        for i in range(2):
            answers.append(sign_in(browser(attacker_tenant), email, f"guess {i}").status_code)
        own = sign_in(browser(attacker_tenant), email, "attacker knows this", tenant=attacker_tenant.id)
        answers.append(own.status_code)
    assert 429 in answers, answers


def test_an_invitation_link_is_not_written_to_the_log(tenant: Tenant) -> None:
    made = person(tenant, "volunteer", password=None)
    link = invitation_path(made)
    assert browser(tenant).get(link).status_code == 200
    secret = link.rsplit(".", 1)[1]
    deadline = time.monotonic() + 10
    while link.rsplit(".", 1)[0] not in (log := (tenant.server.data_dir / "server.log").read_text()):
        assert time.monotonic() < deadline, "no access line for the invitation"  # written once answered
        time.sleep(0.05)
    assert secret not in log  # ...without the secret


def test_a_link_to_logout_from_elsewhere_asks_first(tenant: Tenant) -> None:
    client, _ = signed_in(tenant, "staff")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {}, {"Referer": "https://evil.example/"}):
        asked = client.get("/logout", headers=headers)
        assert asked.status_code == 200, headers
        assert "Sign out?" in text_of(asked)
        assert client.get("/").status_code == 200  # still signed in
    done = client.get("/logout", headers={"Sec-Fetch-Site": "same-origin"})
    assert done.status_code == 303
    assert client.get("/").status_code == 303
