"""The workflows pages in a real browser (Debian's Chromium driven by Playwright), at 360 px and 1280 px: an organiser
reads the list, opens a template (its drawing loads), checks an edit, has a broken one refused, clones, enrols
contacts, reads a draft's errors beside its steps and follows a bulk enrolment that became a job. Nothing is wider
than the screen, no dialog fires (hostile names run no script), and every page is saved as a screenshot in
`artifacts/screenshots/`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ONE_STORE, Tenant
from pages import person

pytestmark = [ONE_STORE, pytest.mark.slow]

HOSTILE = "<script>alert(1)</script>"
REF = "county-outreach-v1"


def fits(screen: Screen) -> None:
    """The page is no wider than the screen, and no dialog has fired."""
    width = screen.page.evaluate("document.documentElement.scrollWidth")
    assert width <= screen.size["width"], f"{screen.page.url} is {width} px wide"
    assert screen.dialogs == []


def tall_enough(screen: Screen, role: str, name: str) -> None:
    box = screen.page.get_by_role(role, name=name, exact=True).first.bounding_box()  # type: ignore[arg-type]
    assert box is not None, name
    assert box["height"] >= 44, (name, box)
    assert box["x"] + box["width"] <= screen.size["width"], (name, box)


def drawing_loaded(screen: Screen) -> None:
    screen.page.wait_for_function(
        "() => { const img = document.querySelector('.wf-drawing img'); return img && img.complete"
        " && img.naturalWidth > 0; }"
    )


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_an_organiser_walks_the_workflows_pages(chromium: Any, tenant: Tenant, size: dict[str, int]) -> None:  # noqa: F811
    tenant.template()
    draft = {
        "id": "spring-draft",
        "name": "Spring canvass (draft)",
        "start_node": "knock",
        "nodes": {
            "knock": {"type": "action", "name": "Door knock", "transitions": {"talked": "done", "away": "wait"}},
            "wait": {"type": "wait", "name": "Wait a week"},
            "done": {"type": "end", "name": "Talked"},
        },
    }
    tenant.template(draft)
    assert tenant.admin.post(f"/api/workflows/{REF}/clone", json={"id": "hostile", "name": HOSTILE}).status_code == 201
    for name in ("Ann", "Bea", "Cal"):
        tenant.instance(tenant.contact(name=name, county="Kent")["id"], template_id=REF, start=True)
    tenant.contact(name="Dee", county="Kent")
    admin = person(tenant, "admin")
    screen = Screen(chromium, tenant.server.base_url, size, "workflows")
    page = screen.page
    screen.sign_in(admin["user"]["email"])

    page.goto("/workflows")
    assert page.get_by_role("heading", name="Workflow templates").count() == 1
    assert page.get_by_role("link", name=HOSTILE).count() == 1  # a name, not a script
    assert page.locator(".wf-list li", has_text="Spring canvass").locator(".wf-badge.bad").count() == 1
    tall_enough(screen, "link", "County outreach")
    tall_enough(screen, "button", "Filter")
    screen.shot("workflows-list")
    fits(screen)

    page.get_by_role("link", name="County outreach").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/workflows/{REF}")
    drawing_loaded(screen)
    row = page.locator(".wf-funnel tr", has_text="Initial phone call")
    assert row.locator("td").inner_text() == "3"
    for name in ("Validate", "Save", "Clone", "Enrol contacts"):
        tall_enough(screen, "button", name)
    screen.shot("workflows-template")
    fits(screen)

    # An edit that leaves a step without its action: checked, not saved.
    edited = json.loads(page.get_by_label("Template JSON").input_value())
    del edited["nodes"]["send_postcard"]["action"]
    page.get_by_label("Template JSON").fill(json.dumps(edited, indent=2))
    page.get_by_role("button", name="Validate", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_text("It is not saved yet.", exact=False).count() == 1
    assert page.locator(".wf-check .issue", has_text="action_missing").count() == 1
    screen.shot("workflows-validate")
    fits(screen)

    # JSON that does not parse is refused, and what was typed stays.
    page.get_by_label("Template JSON").fill('{"name": "Broken",')
    page.get_by_role("button", name="Save", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_text("The JSON does not parse", exact=False).count() == 1
    assert page.get_by_label("Template JSON").input_value() == '{"name": "Broken",'
    page.locator("#json").scroll_into_view_if_needed()
    screen.shot("workflows-refused")
    fits(screen)
    assert tenant.admin.get(f"/api/workflows/{REF}").json()["version"] == "1.0.0"

    # Clone, then enrol the county's voters in the copy.
    page.get_by_label("New id").fill("autumn-drive")
    page.get_by_label("Name", exact=True).fill("Autumn drive")
    page.get_by_role("button", name="Clone", exact=True).click()
    page.wait_for_load_state()
    assert page.url.endswith("/workflows/autumn-drive?said=cloned#main")
    assert page.get_by_role("heading", name="Autumn drive").count() == 1
    drawing_loaded(screen)
    screen.shot("workflows-clone")
    fits(screen)
    page.get_by_label("County").fill("Kent")
    page.get_by_label("Start at once", exact=False).check()
    page.get_by_role("button", name="Enrol contacts").click()
    page.wait_for_load_state()
    assert page.get_by_text("Enrolled 4 contacts; skipped 0 already in this workflow.").count() == 1
    page.locator("#enrol").scroll_into_view_if_needed()
    screen.shot("workflows-enrolled")
    fits(screen)

    page.goto("/workflows/spring-draft")
    drawing_loaded(screen)
    knock = page.locator(".wf-step", has_text="Id knock")
    assert knock.locator(".issue.error", has_text="action_missing").count() == 1
    wait = page.locator(".wf-step", has_text="Id wait")
    assert wait.locator(".issue", has_text="wait_condition_missing").count() == 1
    screen.shot("workflows-draft")
    fits(screen)

    page.goto("/workflows/hostile")
    drawing_loaded(screen)
    assert page.get_by_role("heading", name=HOSTILE).count() == 1
    fits(screen)
    screen.close()


def test_a_bulk_enrolment_too_large_for_one_request_is_followed_as_a_job(chromium: Any, tenant: Tenant) -> None:  # noqa: F811
    tenant.template()
    rows = ["name,county"] + [f"Voter {n},Adams" for n in range(5_001)]
    for part in (rows[:5_001], [rows[0], *rows[5_001:]]):  # two files, each small enough to import at once
        answer = tenant.admin.post(
            "/api/contacts/import", content="\n".join(part).encode(), headers={"Content-Type": "text/csv"}
        )
        assert answer.status_code == 200, answer.text
    staff = person(tenant, "staff")
    job_url = None
    for size in (PHONE, DESKTOP):
        screen = Screen(chromium, tenant.server.base_url, size, "job")
        screen.sign_in(staff["user"]["email"])
        if job_url is None:
            screen.page.goto(f"/workflows/{REF}")
            screen.page.get_by_label("County").fill("Adams")
            screen.page.get_by_role("button", name="Enrol contacts").click()
            screen.page.wait_for_load_state()
            job_url = screen.page.url
            assert "/workflows/jobs/" in job_url
        else:
            screen.page.goto(job_url)
        assert screen.page.get_by_role("heading", name="Bulk enrolment").count() == 1
        assert screen.page.get_by_text("Waiting to start").count() == 1  # no worker runs in this server
        assert screen.page.get_by_text("Progress: 0 of 5,001 contacts").count() == 1
        tall_enough(screen, "button", "Stop this job")
        screen.shot("workflows-job")
        fits(screen)
        screen.close()
