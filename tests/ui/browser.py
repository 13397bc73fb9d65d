"""Playwright (Python) driving Debian's Chromium, for the console's browser tests.

Playwright's own browser download is not reachable on our machines, so the tests launch the system
Chromium (`apt-get install chromium`; .ci/run installs it when absent). Where there is none, or no
playwright package, the browser tests are skipped LOUDLY: a pytest skip with the reason, and a
warning line on the terminal that survives output capture.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SCREENSHOTS = Path(__file__).resolve().parents[1] / "e2e" / "screenshots"  # git-ignored
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("AIAAS_TEST_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def skip_loudly(reason: str) -> None:
    line = f"\nWARNING: console browser tests SKIPPED: {reason}\n"
    print(line, file=sys.__stderr__, flush=True)  # past pytest's capture: nobody misses it
    pytest.skip(reason)


def launch(playwright_context: Any) -> Any:
    path = chromium_path()
    if path is None:
        skip_loudly("no Chromium found (apt-get install -y chromium, or set AIAAS_TEST_CHROMIUM)")
    return playwright_context.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-gpu"])


def start_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_loudly("the playwright package is not installed (pip install -e '.[dev]')")
    return sync_playwright().start()


@dataclass
class Watch:
    """What a page did that it should not: console errors, uncaught exceptions, dialogs (alert())."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def unexpected(self, *statuses: int) -> list[str]:
        """The errors, less Chromium's note of a page that answered one of `statuses` on purpose
        (a test that provokes a 403 or 404 page sees it logged as a console error)."""
        allowed = tuple(f"status of {s} " for s in statuses)
        return [e for e in self.errors if not ("Failed to load resource" in e and any(a in e for a in allowed))]

    def attach(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text} @ {page.url}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e} @ {page.url}"))

        def on_dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        return page


def new_page(browser: Any, base_url: str, watch: Watch, viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(base_url=base_url, viewport=viewport)
    return watch.attach(context.new_page())


def shot(page: Any, name: str, *, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def sign_in(page: Any, key: str) -> None:
    page.goto("/ui/signin")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def wait_until(page: Any, expression: str, *, timeout: float) -> Any:
    """Poll `expression` (page.evaluate) until truthy. Playwright's wait_for_function evaluates a string
    in the page, which the console's CSP (no 'unsafe-eval') rightly refuses; evaluate() is not affected."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for: {expression}")
        page.wait_for_timeout(100)
