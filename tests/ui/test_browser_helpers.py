"""Where no Chromium exists, the browser tests skip loudly: a pytest skip with the reason, and a
warning line on the real stderr (past pytest's capture)."""

from __future__ import annotations

import pytest

from tests.ui import browser


def test_no_chromium_skips_loudly(monkeypatch, capfd):
    monkeypatch.setattr(browser, "chromium_path", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="no Chromium found"):
        browser.launch(object())
    err = capfd.readouterr().err
    assert "WARNING: console browser tests SKIPPED: no Chromium found" in err


def test_chromium_override_must_exist(monkeypatch, tmp_path):
    monkeypatch.setenv("AIAAS_TEST_CHROMIUM", str(tmp_path / "missing"))
    found = browser.chromium_path()
    assert found != str(tmp_path / "missing")
