"""/docs and /redoc load only assets the server itself serves, so they render without internet.

The in-process tests read the pages' HTML; the slow one renders /docs in headless Chromium with every
request to another host refused, and checks the operation list is on screen (skipped, saying why, where
Chromium or Playwright is missing).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path

import pytest

from aiaas.api.docs import ASSETS_DIR
from tests.ui.browser import SCREENSHOTS, chromium_path, skip_loudly


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The pages do not touch the database: SQLite only."""
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


URL_ATTRS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")
JS_URLS = re.compile(r"""(?:url|spec-url)\s*[:=]\s*["']([^"']+)["']""")
ABSOLUTE = re.compile(r"""["'(]\s*((?:https?:)?//[^"')\s]+)""")


def referenced_urls(html: str) -> set[str]:
    return set(URL_ATTRS.findall(html)) | set(JS_URLS.findall(html))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_only_local_urls_that_answer(client, page):
    r = await client.get(page)
    assert r.status_code == 200
    html = r.text
    assert not ABSOLUTE.findall(html), f"{page} loads from another host: {ABSOLUTE.findall(html)}"
    urls = referenced_urls(html)
    scripts = [u for u in urls if u.endswith(".js")]
    assert scripts, f"{page} loads no script at all: {urls}"
    assert "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/"), f"{page} references {url}, not a path on this server"
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    for url in scripts:
        asset = await client.get(url)
        assert "javascript" in asset.headers["content-type"], url
        assert len(asset.content) > 500_000, f"{url} is not the full bundle"


def test_vendored_assets_carry_their_licences_and_versions():
    versions = (ASSETS_DIR / "VERSIONS").read_text()
    assert re.search(r"^swagger-ui-dist \d+\.\d+\.\d+ sha512-", versions, re.MULTILINE)
    assert re.search(r"^redoc \d+\.\d+\.\d+ sha512-", versions, re.MULTILINE)
    for name in ("swagger-ui/LICENSE", "redoc/LICENSE"):
        assert (ASSETS_DIR / name).stat().st_size > 500, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(app):
    """The app on a real socket (uvicorn in a thread), for a browser."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _browser():
    if chromium_path() is None:
        skip_loudly("CHROMIUM NOT FOUND: /docs was not rendered; `apt-get install -y chromium` to run this test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_loudly("PLAYWRIGHT NOT INSTALLED: /docs was not rendered; install the dev extra to run this test")
    return sync_playwright


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "operation_selector"),
    [("/docs", ".opblock"), ("/redoc", "li[data-item-id^='tag/'], li[data-item-id^='operation/']")],
)
def test_docs_render_offline_in_chromium(live_server, tmp_path: Path, page, operation_selector):
    sync_playwright = _browser()
    foreign: list[str] = []

    def only_local(route):
        if route.request.url.startswith(live_server):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 2000})
            ctx.route("**/*", only_local)  # as if offline: nothing but this server answers
            tab = ctx.new_page()
            tab.goto(live_server + page, wait_until="load")
            tab.wait_for_selector(operation_selector, timeout=60_000)
            shown = tab.locator(operation_selector).count()
            if page == "/docs":  # an operation opened: its answer's schema and its error codes are on screen
                tab.click("#operations-fine-tuning-create_job_v1_fine_tuning_jobs_post .opblock-summary")
                tab.wait_for_selector("text=Error codes", timeout=60_000)
            text = tab.inner_text("body")
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)  # git-ignored, beside the console's screenshots
            shot = SCREENSHOTS / f"api-{page.strip('/')}-offline.png"
            tab.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert not foreign, f"{page} asked other hosts: {foreign}"
    assert shown >= 5, f"{page} shows {shown} operations"
    assert "/v1/fine_tuning/jobs" in text or "fine_tuning" in text.lower()
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    if page == "/docs":
        assert "unsupported_integration" in text and "FineTuningJob" in text, "the opened operation shows no schema"
