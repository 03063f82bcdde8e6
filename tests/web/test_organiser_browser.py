"""An organiser's day in a real browser, against a server that runs its worker: import a CSV of voters, bulk-enrol
them, watch one instance move on the live timeline when the worker fires its timer, and read the funnel."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from browsing import DESKTOP, PHONE, Screen, chromium  # noqa: F401  (the fixture)
from conftest import ADMIN_TOKEN, Server, free_port, start_server, stop_server
from pages import PASSWORD

pytestmark = pytest.mark.slow

SHORT_WAIT = {
    "id": "quick-call",
    "name": "Quick call",
    "start_node": "pause",
    "nodes": {
        "pause": {
            "type": "wait",
            "name": "Short pause",
            "wait_condition": {"type": "duration", "duration": "PT4S"},
            "transitions": {"elapsed": "call"},
        },
        "call": {
            "type": "action",
            "name": "Call them",
            "action": "phone_call",
            "transitions": {"answered": "done", "no_answer": "done"},
        },
        "done": {"type": "end", "name": "Done", "end_status": "success"},
    },
}
VOTERS = "name,phone,county,tags\nAda Lovelace,(555) 201-3344,Kent,voter\nGrace Hopper,(555) 201-3345,Kent,voter\n"


@pytest.fixture(scope="module")
def working_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """SQLite, with the worker inside (it fires the timers), polling often so the test does not wait long."""
    data_dir = tmp_path_factory.mktemp("organiser")
    port = free_port()
    proc = start_server(data_dir, port, data_dir / "server.log", worker=True, env={"CBW_WORKER_POLL_INTERVAL": "0.2"})
    try:
        yield Server(f"http://127.0.0.1:{port}", data_dir, ADMIN_TOKEN)
    finally:
        stop_server(proc)


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_import_enrol_watch_live_and_read_the_funnel(
    chromium: Any,  # noqa: F811
    working_server: Server,
    tmp_path: Path,
    size: dict[str, int],
) -> None:
    tenant_id = f"org-{size['width']}"
    with working_server.client(working_server.admin_token) as root:
        made = root.post("/api/tenants", json={"id": tenant_id, "name": "Organiser's campaign"})
        assert made.status_code == 201, made.text
    with working_server.client(made.json()["admin_token"]) as admin:
        assert admin.post("/api/workflows", json=SHORT_WAIT).status_code == 201
        email = f"organiser-{size['width']}@example.org"
        body = {"email": email, "name": "Olive Organiser", "role": "admin", "password": PASSWORD}
        assert admin.post("/api/users", json=body).status_code == 201
    voters = tmp_path / "voters.csv"
    voters.write_text(VOTERS)

    screen = Screen(chromium, working_server.base_url, size, "organiser")
    page = screen.page
    screen.sign_in(email)
    assert page.get_by_role("heading", name="Dashboard").count() == 1

    # Import the voter file.
    page.get_by_role("link", name="Contacts").first.click()
    page.get_by_label("File to import").set_input_files(str(voters))
    page.get_by_role("button", name="Import", exact=True).click()
    page.wait_for_load_state()
    assert page.get_by_role("heading", name="Imported voters.csv").count() == 1
    screen.shot("organiser-imported")

    # Enrol every voter of Kent, started at once: each waits four seconds, then becomes a call.
    page.goto("/workflows/quick-call")
    page.get_by_label("County").fill("Kent")
    page.get_by_label("Start at once").check()
    page.get_by_role("button", name="Enrol contacts").click()
    page.wait_for_load_state()
    assert page.get_by_text("Enrolled 2 contacts").count() == 1
    screen.shot("organiser-enrolled")

    # Watch one of them: the worker fires its timer, and the page shows the move without a reload.
    page.goto("/instances?template_id=quick-call")
    page.get_by_role("link", name="Ada Lovelace").first.click()
    page.wait_for_load_state()
    node = page.locator("#instance-node")
    page.evaluate("window.notReloaded = true")
    expect(node).to_have_attribute("data-node", "call", timeout=30_000)  # the worker fires it after 4 s
    assert page.evaluate("window.notReloaded === true"), "the page was reloaded instead of updated live"
    assert node.inner_text() == "Call them"
    assert page.locator("#timeline").get_by_text("Call them").count() >= 1
    screen.shot("organiser-live")

    # The funnel: both voters at the call now.
    page.goto("/")
    row = page.locator("section", has_text="Quick call").locator("tr", has_text="Call them")
    assert row.locator("td").inner_text() == "2"
    screen.shot("organiser-funnel")
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    assert screen.dialogs == []
    screen.close()
