"""A real browser for the web pages' tests: Debian's Chromium driven by Playwright (nothing downloads a browser).

`chromium` is a module-scoped fixture (import it into a test module); `Screen` is one browser context at one size
that records every dialog (an `alert` that escaped) and saves screenshots to `artifacts/screenshots/`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import unavailable
from pages import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[1] / "artifacts" / "screenshots"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        unavailable("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Screen:
    """One browser context at one size; every dialog (an `alert` that escaped) is recorded, and fails the test."""

    def __init__(self, chromium: Any, base_url: str, size: dict[str, int], name: str) -> None:
        self.context = chromium.new_context(viewport=size, base_url=base_url)
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.size = size
        self.name = name

    def shot(self, what: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{what}-{self.size['width']}.png"), full_page=True)

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.page.goto("/login")
        self.page.get_by_label("Email").fill(email)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()

    def close(self) -> None:
        self.context.close()
