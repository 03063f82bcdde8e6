"""The instances pages in a real browser (Debian's Chromium driven by Playwright), at 360 px and 1280 px: an organiser
filters the list, opens an instance, watches its timeline update live while it moves through the API, pauses it
and adds a note; a viewer sees no buttons; hostile names and notes, on the page or arriving live, run no script.

Screenshots are written to `artifacts/screenshots/instances-*.png` for a person to look at.
"""

from __future__ import annotations

from typing import Any

import pytest

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ONE_STORE, Tenant
from pages import person

pytestmark = [ONE_STORE, pytest.mark.slow]

HOSTILE = "<script>alert(1)</script>"
WAIT_MS = 15_000


def fits(screen: Screen) -> None:
    width = screen.page.evaluate("document.documentElement.scrollWidth")
    assert width <= screen.size["width"], f"the page is {width} px wide at {screen.size['width']} px"


def tall_enough(screen: Screen, selector: str) -> None:
    """Every visible button or link matched is at least 44 px high (a thumb's width)."""
    for handle in screen.page.locator(selector).all():
        if handle.is_visible():
            box = handle.bounding_box()
            assert box is not None
            assert box["height"] >= 44, f"{selector} {handle.inner_text()!r} is {box['height']} px high"


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_organiser_follows_an_instance_live(chromium: Any, tenant: Tenant, size: dict[str, int]) -> None:  # noqa: F811
    followed = tenant.instance(
        tenant.contact(name="Ada Lovelace")["id"],
        start=True,
        tags=["spring-drive"],
        initial_state={"households": 3, "language": "en"},
    )
    tenant.instance(tenant.contact(name="Grace Hopper")["id"], start=True)
    tenant.instance(tenant.contact(name="Katherine Johnson")["id"])
    organiser = person(tenant, "staff")
    screen = Screen(chromium, tenant.server.base_url, size, "organiser")
    page = screen.page
    screen.sign_in(organiser["user"]["email"])

    page.goto("/instances")
    assert page.get_by_role("heading", name="Instances", exact=True).count() == 1
    assert page.get_by_role("link", name="Katherine Johnson").count() == 1
    screen.shot("instances")
    fits(screen)
    tall_enough(screen, "main button, main a.button, .instance-table a")

    page.get_by_label("Status").select_option("active")
    page.get_by_label("Tags").fill("spring-drive")
    page.get_by_role("button", name="Show instances").click()
    page.wait_for_load_state()
    assert "status=active" in page.url
    assert page.get_by_role("link", name="Ada Lovelace").count() == 1
    assert page.get_by_role("link", name="Grace Hopper").count() == 0
    assert page.get_by_role("link", name="Katherine Johnson").count() == 0
    screen.shot("instances-filtered")

    page.goto("/instances?status=asleep")
    assert page.get_by_role("alert").first.inner_text().startswith("Status:")
    screen.shot("instances-bad-filter")
    fits(screen)

    page.goto("/instances?status=active&tag=spring-drive")
    page.get_by_role("link", name="Ada Lovelace").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/instances/{followed['id']}")
    assert page.locator("#instance-status").inner_text() == "Active"
    assert page.locator("#instance-node").inner_text() == "Initial phone call"
    page.locator("#live-note").filter(has_text="Live").wait_for(timeout=WAIT_MS)  # the stream is open
    drawn = page.locator("#instance-diagram")
    assert drawn.evaluate("img => img.complete && img.naturalWidth > 0")
    screen.shot("instance")
    fits(screen)
    tall_enough(screen, ".instance-actions button, .instance-actions summary, .back a")

    before = page.locator("#timeline li").count()
    page.evaluate("window.stillTheSamePage = true")
    moved = tenant.admin.post(
        f"/api/instances/{followed['id']}/transition",
        json={"outcome": "no_answer", "note": f"Rang twice {HOSTILE}"},
    )
    assert moved.status_code == 200, moved.text
    page.locator("#timeline li", has_text="Entered Door knock").wait_for(timeout=WAIT_MS)
    assert page.evaluate("window.stillTheSamePage === true")  # no reload: the page itself took the events
    assert page.locator("#timeline li").count() == before + 3
    assert page.locator("#instance-node").inner_text() == "Door knock"
    assert page.locator("#timeline li", has_text=f"Rang twice {HOSTILE}").count() == 1  # shown as text
    # A function, not an expression: Playwright polls an expression with eval(), which the page's CSP refuses
    # (EvalError) whenever the drawing is not loaded at the first look.
    page.wait_for_function("() => document.getElementById('instance-diagram').complete")
    screen.shot("instance-live")
    fits(screen)

    tenant.admin.post(f"/api/instances/{followed['id']}/pause")
    page.locator("#instance-status", has_text="Paused").wait_for(timeout=WAIT_MS)
    assert page.get_by_role("button", name="Resume").is_visible()  # the buttons follow the status live
    assert not page.get_by_role("button", name="Pause").is_visible()
    page.get_by_role("button", name="Resume").click()
    page.wait_for_load_state()
    assert page.get_by_role("status").first.inner_text() == "Resumed where it was."
    assert page.locator("#instance-status").inner_text() == "Active"

    page.get_by_label("Add a note").fill("Prefers texts after 6 pm")
    page.get_by_role("button", name="Add note").click()
    page.wait_for_load_state()
    assert page.locator("#timeline li", has_text="Prefers texts after 6 pm").count() == 1
    page.get_by_role("button", name="Add note").click()  # empty: refused on the page
    page.wait_for_load_state()
    assert page.get_by_role("alert").inner_text() == "Note: this is needed."
    screen.shot("instance-error")
    fits(screen)

    page.get_by_text("Cancel this instance").click()
    page.get_by_label("Reason").fill("Moved away")
    page.get_by_role("button", name="Cancel the instance").click()
    page.wait_for_load_state()
    assert page.locator("#instance-status").inner_text() == "Cancelled"
    assert not page.get_by_role("button", name="Pause").is_visible()
    screen.shot("instance-cancelled")
    assert screen.dialogs == []
    screen.close()


def test_a_viewer_sees_no_buttons_and_hostile_text_runs_no_script(chromium: Any, tenant: Tenant) -> None:  # noqa: F811
    tenant.template()
    clone = tenant.admin.post("/api/workflows/county-outreach-v1/clone", json={"id": "hostile", "name": HOSTILE})
    assert clone.status_code == 201, clone.text
    hostile = tenant.instance(
        tenant.contact(name=HOSTILE)["id"],
        template_id="hostile",
        start=True,
        initial_state={"said": '"><img src=x onerror=alert(2)>'},
    )
    viewer = person(tenant, "viewer")
    for size in (PHONE, DESKTOP):
        screen = Screen(chromium, tenant.server.base_url, size, "viewer")
        page = screen.page
        screen.sign_in(viewer["user"]["email"])
        page.goto("/instances")
        assert page.get_by_role("link", name=HOSTILE).count() == 1
        page.get_by_role("link", name=HOSTILE).click()
        page.wait_for_load_state()
        assert page.get_by_role("heading", name=HOSTILE).count() == 1
        assert page.locator(".instance-actions").count() == 0  # a viewer sees no buttons
        assert page.locator("main form[method=post]").count() == 0
        page.locator("#live-note").filter(has_text="Live").wait_for(timeout=WAIT_MS)
        note = tenant.admin.post(
            f"/api/instances/{hostile['id']}/notes", json={"text": f"live {size['width']} {HOSTILE}"}
        )
        assert note.status_code == 200, note.text
        page.locator("#timeline li", has_text=f"live {size['width']} {HOSTILE}").wait_for(timeout=WAIT_MS)
        screen.shot("instance-viewer")
        fits(screen)
        assert screen.dialogs == []
        screen.close()
