"""The pages in a real browser (Debian's Chromium driven by Playwright, nothing downloaded): a volunteer on a phone
signs in, works the queue along the reference template's paths to "No tasks left"; hostile names run no script.

Screenshots of every page, at 360 px and 1280 px wide, are written to `artifacts/screenshots/` for a person to
look at (the README says where).
"""

from __future__ import annotations

from typing import Any

import pytest

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ONE_STORE, Tenant
from pages import invitation_path, person

pytestmark = [ONE_STORE, pytest.mark.slow]

# What the volunteer records at each step, per voter: three paths through the reference template.
PLAN = {
    "Ada Declines": {"Initial phone call": "answered_not_interested"},
    "Ben Postcard": {"Initial phone call": "no_answer", "Door knock": "not_home", "Mail a postcard": "sent"},
    "Cleo Lost": {"Initial phone call": "voicemail", "Door knock": "not_home", "Mail a postcard": "failed"},
}
ENDS = {"Ada Declines": "declined", "Ben Postcard": "success", "Cleo Lost": "failed"}


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_a_volunteer_works_the_queue_to_the_end(chromium: Any, tenant: Tenant, size: dict[str, int]) -> None:  # noqa: F811
    instances = {}
    for name in PLAN:
        contact = tenant.contact(name=name, phone="(555) 201-3344", metadata={"address": "12 Elm St", "city": "Dover"})
        instances[name] = tenant.instance(contact["id"], start=True)["id"]
    volunteer = person(tenant, "volunteer")
    screen = Screen(chromium, tenant.server.base_url, size, "volunteer")
    page = screen.page
    page.goto("/next")
    assert page.url.endswith("/login?next=%2Fnext")
    screen.shot("login")
    screen.sign_in(volunteer["user"]["email"])
    assert page.url.endswith("/next")
    screen.shot("next-ready")
    page.get_by_role("button", name="Next task").click()
    steps = 0
    while page.get_by_role("heading", name="No tasks left").count() == 0:
        steps += 1
        assert steps <= 10, page.content()
        voter = page.locator("#contact-name").inner_text()
        step = (page.locator(".task .step").text_content() or "").strip()  # as written: the style capitalises it
        outcome = PLAN[voter][step]
        assert page.get_by_role("link", name="Call (555) 201-3344").get_attribute("href") == "tel:+15552013344"
        if steps == 1:
            screen.shot("next-task")
            box = page.get_by_role("button", name=outcome, exact=True).bounding_box()
            assert box is not None
            assert box["height"] >= 44
            assert box["width"] <= size["width"]
        page.get_by_label("Notes").fill(f"{voter}: {outcome}")
        page.get_by_role("button", name=outcome, exact=True).click()
        page.wait_for_load_state()
    screen.shot("next-empty")
    assert steps == sum(len(p) for p in PLAN.values())
    for name, instance_id in instances.items():
        found = tenant.admin.get(f"/api/instances/{instance_id}").json()
        assert (found["status"], found["end_status"]) == ("completed", ENDS[name]), found
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]  # nothing wider than the phone
    assert screen.dialogs == []
    screen.close()


def test_the_organisers_dashboard_and_the_error_page(chromium: Any, tenant: Tenant) -> None:  # noqa: F811
    for name in ("Dee", "Eve"):
        tenant.instance(tenant.contact(name=name)["id"], start=True)
    organiser = person(tenant, "admin")
    invited = person(tenant, "volunteer", password=None)
    for size in (PHONE, DESKTOP):
        screen = Screen(chromium, tenant.server.base_url, size, "organiser")
        screen.page.goto(invitation_path(invited))
        assert screen.page.get_by_label("Password again").count() == 1
        screen.shot("invite")
        screen.sign_in(organiser["user"]["email"])
        assert screen.page.get_by_role("heading", name="Dashboard").count() == 1
        row = screen.page.locator("tr", has_text="Initial phone call")
        assert row.locator("td").inner_text() == "2"
        screen.shot("dashboard")
        screen.page.goto("/admin")
        screen.page.locator("#token-name").fill("Phone bank desk")
        screen.page.locator("#token-role").select_option("staff")
        screen.page.get_by_role("button", name="Create token").click()
        assert screen.page.get_by_role("heading", name="New staff token: Phone bank desk").count() == 1
        assert screen.page.locator("code.copy").inner_text().startswith("cbw_")
        screen.shot("admin")
        screen.page.goto("/no-such-page")
        assert screen.page.get_by_role("heading", name="Not found").count() == 1
        screen.shot("error")
        assert screen.page.evaluate("document.documentElement.scrollWidth") <= size["width"]
        screen.close()


def test_hostile_text_runs_no_script(chromium: Any, tenant: Tenant) -> None:  # noqa: F811
    hostile = [
        "<script>alert(1)</script>",
        '"><img src=x onerror=alert(2)>',
        "javascript:alert(3)",
    ]
    for text in hostile:
        contact = tenant.contact(name=text, phone=text, tags=["x"], metadata={"address": text, "city": text})
        tenant.instance(contact["id"], start=True)
    template = tenant.admin.post(
        "/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": "<script>alert(4)</script>"}
    )
    assert template.status_code == 201, template.text
    volunteer = person(tenant, "volunteer")
    staff = person(tenant, "staff")
    screen = Screen(chromium, tenant.server.base_url, PHONE, "hostile")
    screen.sign_in(volunteer["user"]["email"])
    screen.page.get_by_role("button", name="Next task").click()
    for _ in hostile:
        assert screen.page.locator("#contact-name").inner_text() in hostile
        screen.page.get_by_label("Notes").fill("<script>alert(5)</script>")
        screen.page.get_by_role("button", name="Skip").click()
    screen.page.get_by_role("button", name="Sign out").click()
    screen.sign_in(staff["user"]["email"])
    screen.page.goto("/")
    assert screen.page.get_by_role("heading", name="<script>alert(4)</script>").count() == 1
    assert screen.dialogs == []
    screen.close()
