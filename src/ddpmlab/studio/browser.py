"""Driving the studio page from a real browser: Debian's Chromium through Playwright (the `studio-test` extra).

The browser tests and `docs/studio_screenshots.py` share these. Playwright is told to look for its own browsers in
a folder that holds none, so it never downloads one; the system Chromium is launched instead.

    with chromium() as browser:
        page = browser.new_page()
        page.goto(start(["runs/demo"], "127.0.0.1", free_port()).url)
        fill(page, "#images", 16)
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = Path("/usr/bin/chromium")


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def chromium(timeout_ms: float = 30_000) -> Iterator[Any]:
    """The system Chromium under Playwright, with browser downloads pointed at an empty folder for the duration."""
    from playwright.sync_api import sync_playwright

    before = os.environ.get("PLAYWRIGHT_BROWSERS_PATH")
    with tempfile.TemporaryDirectory(prefix="no-browser-downloads-") as nowhere:
        os.environ["PLAYWRIGHT_BROWSERS_PATH"] = nowhere
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], timeout=timeout_ms)
                try:
                    yield browser
                finally:
                    browser.close()
        finally:
            if before is None:
                os.environ.pop("PLAYWRIGHT_BROWSERS_PATH", None)
            else:
                os.environ["PLAYWRIGHT_BROWSERS_PATH"] = before


def fill(page: Any, selector: str, value: object) -> None:
    """Type `value` into the number box of the component `selector` and commit it."""
    box = page.locator(f"{selector} input[type=number]").first
    box.fill(str(value))
    box.press("Enter")


def choose(page: Any, selector: str, option: str) -> None:
    """Pick `option` in the dropdown `selector`."""
    page.locator(f"{selector} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def wait_for_text(page: Any, selector: str, text: str, timeout_s: float = 30) -> None:
    """Wait until the element `selector` exists and its visible text contains `text`."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel);"
                           " return e !== null && e.innerText.includes(text); }",
                           arg=[selector, text], timeout=timeout_s * 1000)
