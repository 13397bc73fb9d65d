"""Fixtures shared by the browser tests in this folder."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.browser import launch, start_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per test module (skips loudly where it is absent)."""
    pw = start_playwright()
    b = launch(pw)
    yield b
    b.close()
    pw.stop()
