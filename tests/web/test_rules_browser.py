"""The campaign-rules parts of the pages in a real browser (Debian's Chromium driven by Playwright), at 360 px and
1280 px: an admin records an opt-out on a contact's page, simulates the reference template for a voter in Los
Angeles, and saves the contact rules on /admin. Nothing is wider than the screen, no dialog fires, buttons are a
thumb high, and each page is saved as a screenshot in `artifacts/screenshots/`."""

from __future__ import annotations

from typing import Any

import pytest
from test_workflows_browser import fits, tall_enough

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ONE_STORE, Tenant
from pages import person

pytestmark = [ONE_STORE, pytest.mark.slow]

HOSTILE = "<script>alert(1)</script>"


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_admin_uses_the_campaign_rules_pages(chromium: Any, tenant: Tenant, size: dict[str, int]) -> None:  # noqa: F811
    template = tenant.template()
    tenant.admin.patch(f"/api/tenants/{tenant.id}/settings", json={"contact_hours": None}).raise_for_status()
    contact = tenant.contact(name="Rosa Parks", phone="+12135550100")
    admin = person(tenant, "admin")
    screen = Screen(chromium, tenant.server.base_url, size, "rules")
    page = screen.page
    screen.sign_in(admin["user"]["email"])

    page.goto(f"/contacts/{contact['id']}")
    page.get_by_label("Texts (SMS)", exact=True).check()
    page.get_by_label("Reason").fill(HOSTILE)
    page.get_by_role("button", name="Opt out").click()
    page.wait_for_load_state()
    assert page.locator(".opt-outs li").count() == 1
    tall_enough(screen, "button", "Undo")
    tall_enough(screen, "button", "Opt out")
    screen.shot("contact-opt-outs")
    fits(screen)

    page.goto(f"/workflows/{template['id']}")
    page.get_by_label("Start (UTC)").fill("2026-10-05T13:00")
    page.get_by_label("The voter's time zone").fill("America/Los_Angeles")
    page.get_by_role("button", name="Simulate").click()
    page.wait_for_load_state()
    assert "20 paths" in page.locator("#simulate").inner_text()
    assert page.locator("ol.wf-paths > li").count() == 20
    tall_enough(screen, "button", "Simulate")
    page.locator("#simulate").scroll_into_view_if_needed()
    screen.shot("workflow-simulate")
    fits(screen)

    page.goto("/admin#settings")
    page.get_by_label("Time zone of voters whose own is unknown").fill("America/Chicago")
    page.get_by_label("Sat").uncheck()
    page.get_by_label("Sun").uncheck()
    page.locator("#cap-channel-0").select_option("sms")
    page.get_by_label("At most").first.fill("2")
    page.locator("#cap-per-0").fill("P7D")
    page.get_by_role("button", name="Save the contact rules").click()
    page.wait_for_load_state()
    assert "The contact rules are saved" in page.content()
    stored = tenant.admin.get(f"/api/tenants/{tenant.id}/settings").json()
    assert stored["timezone"] == "America/Chicago"
    assert stored["contact_hours"]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert stored["frequency_caps"] == [{"channel": "sms", "max": 2, "per": "P7D"}]
    tall_enough(screen, "button", "Save the contact rules")
    page.locator("#settings").scroll_into_view_if_needed()
    screen.shot("admin-contact-rules")
    fits(screen)
    screen.close()
