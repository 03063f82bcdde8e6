"""The contacts pages in a real browser at 360 px and 1280 px: an organiser searches as they type, filters, imports a
file (a dry run, the report, a large file's job), opens a contact and exports; nothing is wider than the screen and
hostile names run no script. Without JavaScript the search works by pressing Enter.

Screenshots of each page are written to `artifacts/screenshots/` (contacts-*.png)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ONE_STORE, Tenant
from pages import PASSWORD, person

pytestmark = [ONE_STORE, pytest.mark.slow]

HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


def fits(screen: Screen) -> None:
    """Nothing on the page is wider than the screen, and no script ran from a name."""
    width = screen.page.evaluate("document.documentElement.scrollWidth")
    assert width <= screen.size["width"], f"{screen.page.url} is {width} px wide"
    assert screen.dialogs == []


def tall_enough(locator: Any) -> None:
    box = locator.bounding_box()
    assert box is not None
    assert box["height"] >= 44, box


def seed(tenant: Tenant) -> dict[str, Any]:
    ada = tenant.contact(
        name="Ada Lovelace",
        email="ada.lovelace.countess.of.lovelace@analytical-engine.example.org",
        phone="(555) 201-3344",
        county="Kent",
        organization="Analytical Society",
        tags=["voter", "donor", "volunteer-lead"],
        metadata={"precinct": "12", "address": "12 St James's Square", "notes": "Prefers an evening call"},
    )
    tenant.instance(ada["id"], start=True)
    tenant.admin.post(f"/api/contacts/{ada['id']}/tags/phone-bank")
    tenant.contact(name="Grace Hopper", email="grace@example.org", county="Sussex", tags=["voter"])
    tenant.contact(name="Katherine Johnson", phone="+1 555 010 7777", county="Kent")
    tenant.contact(name=HOSTILE, email="hostile@example.org", county="Kent", tags=["x"], metadata={"a": HOSTILE})
    return ada


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_organiser_works_the_contacts_pages(
    chromium: Any,  # noqa: F811
    tenant: Tenant,
    size: dict[str, int],
    tmp_path: Path,
) -> None:
    ada = seed(tenant)
    staff = person(tenant, "staff")
    screen = Screen(chromium, tenant.server.base_url, size, "contacts")
    page = screen.page
    screen.sign_in(staff["user"]["email"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Contacts").click()
    page.wait_for_load_state()
    assert page.url.endswith("/contacts")
    assert page.get_by_role("heading", name="All contacts").count() == 1
    assert page.locator("table.contacts tbody tr").count() == 4
    tall_enough(page.get_by_role("button", name="Search"))
    tall_enough(page.get_by_role("link", name="Export all contacts (CSV)"))
    tall_enough(page.get_by_role("link", name="Ada Lovelace"))
    screen.shot("contacts")
    fits(screen)

    # Search as you type: the results change without pressing Enter, and the address follows.
    page.get_by_label("Search by name, email or phone").press_sequentially("love", delay=60)
    expect(page.locator("table.contacts tbody tr")).to_have_count(1)  # no Enter pressed
    expect(page.get_by_role("heading", name="Contacts matching “love”")).to_have_count(1)
    assert "q=love" in page.url
    screen.shot("contacts-search")
    fits(screen)
    page.get_by_label("Search by name, email or phone").fill("")
    page.get_by_label("Search by name, email or phone").press("Backspace")
    page.get_by_label("Search by name, email or phone").press_sequentially("555", delay=60)
    expect(page.locator("#results h2")).to_have_text("Contacts matching “555”")
    expect(page.locator("table.contacts tbody tr")).to_have_count(2)  # both phone numbers hold 55

    # Filters
    page.goto("/contacts")
    page.get_by_text("Filter by county, tag or organization").click()
    page.get_by_label("County", exact=True).fill("Kent")
    page.get_by_label("Tags").fill("voter")
    page.get_by_role("button", name="Use these filters").click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Contacts in Kent, tagged voter").count() == 1
    assert page.locator("table.contacts tbody tr").count() == 1
    export = page.get_by_role("link", name="Export these contacts (CSV)")
    assert "county=Kent" in (export.get_attribute("href") or "")
    with page.expect_download() as download:
        export.click()
    saved = tmp_path / "contacts.csv"
    download.value.save_as(saved)
    assert saved.read_text().splitlines()[1].split(",")[2] == "Ada Lovelace"
    screen.shot("contacts-filtered")
    fits(screen)

    # Import: a dry run first, then for real.
    people = tmp_path / "people.csv"
    people.write_text(
        "name,email,county,precinct\n"
        "Dorothy Vaughan,dorothy@example.org,Kent,14\n"
        "Mary Jackson,not-an-email,Kent,3\n"
        ",nameless@example.org,Kent,\n"
        "Ada Lovelace,ada.lovelace.countess.of.lovelace@analytical-engine.example.org,Kent,12\n"
    )
    page.goto("/contacts")
    page.get_by_label("File to import").set_input_files(str(people))
    page.get_by_label("Dry run").check()
    tall_enough(page.get_by_role("button", name="Import", exact=True))
    screen.shot("contacts-import-form")
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Dry run of people.csv").count() == 1
    assert page.locator(".counts").inner_text().split() == (
        "Would be added 1 Would be updated 0 Unchanged 1 Not imported 2".split()
    )
    screen.shot("contacts-import-dry-run")
    fits(screen)
    page.get_by_role("link", name="Import it for real, or another file").click()
    page.wait_for_load_state()
    page.get_by_label("File to import").set_input_files(str(people))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Imported people.csv").count() == 1
    assert page.get_by_role("row", name="3").inner_text().startswith("3")
    page.get_by_text("What happened to each row").click()
    screen.shot("contacts-import-report")
    fits(screen)

    # A file with no name column: the error is next to the form.
    broken = tmp_path / "broken.csv"
    broken.write_text("email\nsomeone@example.org\n")
    page.goto("/contacts")
    page.get_by_label("File to import").set_input_files(str(broken))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_load_state()
    assert "broken.csv was not imported" in page.locator("#import-error").inner_text()
    page.locator("#import").scroll_into_view_if_needed()
    screen.shot("contacts-import-error")
    fits(screen)

    # A large file runs in the background.
    large = tmp_path / "large.csv"
    large.write_text("name,county\n" + "".join(f"Voter {i},Kent\n" for i in range(5_001)))
    page.goto("/contacts")
    page.get_by_label("File to import").set_input_files(str(large))
    page.get_by_label("Dry run").check()
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_load_state()
    assert "/contacts/jobs/" in page.url
    assert page.get_by_role("heading", name="Dry run in the background").count() == 1
    assert "0 of 5,001 rows done" in page.get_by_role("status").first.inner_text()
    screen.shot("contacts-job")
    fits(screen)

    # One contact
    page.goto("/contacts")
    page.get_by_role("link", name="Ada Lovelace").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/contacts/{ada['id']}")
    assert page.get_by_role("heading", name="Ada Lovelace").count() == 1
    assert page.locator("#instances").get_by_role("link", name="County outreach").count() == 1
    assert page.locator(".timeline li").count() >= 3
    tall_enough(page.get_by_role("link", name="voter", exact=True))
    screen.shot("contacts-detail")
    fits(screen)

    page.goto("/contacts")
    page.get_by_role("link", name=HOSTILE).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name=HOSTILE).count() == 1
    fits(screen)
    screen.close()


def test_without_javascript_the_search_works_by_pressing_enter(chromium: Any, tenant: Tenant) -> None:  # noqa: F811
    seed(tenant)
    viewer = person(tenant, "viewer")
    context = chromium.new_context(viewport=PHONE, base_url=tenant.server.base_url, java_script_enabled=False)
    page = context.new_page()
    page.goto("/login")
    page.get_by_label("Email").fill(viewer["user"]["email"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto("/contacts")
    assert page.get_by_role("button", name="Import", exact=True).count() == 0  # a viewer reads only
    page.get_by_label("Search by name, email or phone").fill("grace")
    page.get_by_label("Search by name, email or phone").press("Enter")
    page.wait_for_load_state()
    assert "q=grace" in page.url
    assert page.locator("table.contacts tbody tr").count() == 1
    assert page.get_by_role("link", name="Grace Hopper").count() == 1
    context.close()
