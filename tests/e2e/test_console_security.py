"""The console's protections in a real browser against a real `aiaas serve`: XSS payloads in a file's
name and labels never execute, a form posted without its CSRF token is refused, scopes shape what a
key sees, and another organisation's id answers the missing-id page. No console errors anywhere."""

from __future__ import annotations

import pytest

from aiaas.services import authn
from aiaas.store import tenancy
from aiaas.store.db import Database
from tests.e2e.server import base_env, init, start_server
from tests.ui.browser import DESKTOP, PHONE, Watch, new_page, shot, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
XSS = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>'
# No "/" (a name keeps its last path part) and no quote (the browser sends it as %22).
NAME_XSS = "<img src=x onerror=alert(3)><svg onload=window.__xss=4>.csv"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-security")
    url = f"sqlite:///{tmp / 'aiaas.db'}"
    env = base_env(tmp / "data", url)
    admin = init(env)
    db = Database(url)
    with db.session() as s:
        principal = authn.authenticate(s, admin)
        _, read_key = tenancy.create_key(s, principal.org_id, name="reader", scopes=["read"])
        _, infer_key = tenancy.create_key(s, principal.org_id, name="app", scopes=["infer"])
        _org_b, _row, other_key = tenancy.create_organization(s, "org-b")
    db.dispose()
    server = start_server(env, tmp)
    try:
        yield server, {"admin": admin, "read": read_key, "infer": infer_key, "other": other_key}
    finally:
        server.stop()


def upload_via_page(page, name: str, body: bytes) -> str:
    page.goto("/ui/files")
    page.set_input_files("#file-input", {"name": name, "mimeType": "text/csv", "buffer": body})
    page.click("#upload-button")
    page.wait_for_url("**/ui/files/file-*")
    return page.url.rsplit("/", 1)[-1]


def test_xss_payloads_in_names_and_labels_never_run(browser, stack):
    server, keys = stack
    watch = Watch()
    page = new_page(browser, server.base_url, watch)
    sign_in(page, keys["admin"])
    body = "text,label\n" + "".join(f"row {i} says hello there,{XSS if i % 2 else 'plain'}\n" for i in range(40))
    file_id = upload_via_page(page, NAME_XSS, body.encode())
    page.wait_for_selector("svg.bars")
    assert page.inner_text("h1") == NAME_XSS  # shown as text, exactly
    assert page.locator("svg.bars text.blabel", has_text="<img").count() >= 1  # the label drawn as text
    shot(page, "xss-file")
    for path in ["/ui/files", f"/ui/files/{file_id}", "/ui/audit", f"/ui/jobs/new?file={file_id}"]:
        page.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None, path
    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors


def test_form_posted_without_csrf_token_is_refused(browser, stack):
    server, keys = stack
    watch = Watch()
    page = new_page(browser, server.base_url, watch)
    sign_in(page, keys["admin"])
    page.goto("/ui/keys")
    # The page's own form with its CSRF field removed, as a forged form from elsewhere would arrive.
    page.fill("#key-form input[name=name]", "forged")
    page.evaluate("document.querySelector('#key-form input[name=csrf]').remove()")
    with page.expect_navigation():
        page.click("#create-key")
    assert "CSRF" in page.inner_text(".error-message")
    shot(page, "csrf-refused")
    page.goto("/ui/keys")
    assert "forged" not in page.inner_text("main")
    page.fill("#key-form input[name=name]", "genuine")
    page.click("#create-key")
    page.wait_for_selector("#new-key")
    created = page.inner_text("#new-key")
    assert created.startswith("aiaas_sk_")
    shot(page, "keys-created")
    page.goto("/ui/keys")
    assert created not in page.content() and created[:20] not in page.content()  # shown once, never again
    assert watch.unexpected(403) == [], watch.errors


def test_scopes_shape_what_a_key_sees(browser, stack):
    server, keys = stack
    watch = Watch()
    page = new_page(browser, server.base_url, watch)
    sign_in(page, keys["read"])
    nav = page.inner_text("header nav")
    assert "Files" in nav and "API keys" not in nav and "Audit log" not in nav
    page.goto("/ui/files")
    assert page.locator("#upload-form").count() == 0
    page.goto("/ui/keys")
    assert page.inner_text("h1") == "Not allowed"
    shot(page, "scope-read-refused")
    infer = new_page(browser, server.base_url, watch)
    sign_in(infer, keys["infer"])
    assert infer.url.endswith("/ui/deployments")
    assert infer.inner_text("header nav").split() == ["Deployments"]
    infer.goto("/ui/files")
    assert infer.inner_text("h1") == "Not allowed"
    assert watch.unexpected(403) == [], watch.errors


def test_foreign_ids_show_the_missing_page(browser, stack):
    server, keys = stack
    watch = Watch()
    theirs = new_page(browser, server.base_url, watch)
    sign_in(theirs, keys["other"])
    foreign = upload_via_page(theirs, "theirs.csv", b"text,label\nhello there,a\nbye now,b\n")
    ours = new_page(browser, server.base_url, watch)
    sign_in(ours, keys["admin"])
    ours.goto(f"/ui/files/{foreign}")
    foreign_page = (ours.inner_text("h1"), ours.inner_text(".error-message").replace(foreign, "ID"))
    shot(ours, "foreign-id-404")
    missing = "file-" + "0" * len(foreign[5:])
    ours.goto(f"/ui/files/{missing}")
    assert foreign_page == (ours.inner_text("h1"), ours.inner_text(".error-message").replace(missing, "ID"))
    assert foreign_page[0] == "Not found"
    assert watch.unexpected(404) == [], watch.errors


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_sign_in_and_every_page_fit_the_screen(browser, stack, screen):
    """Every page at 1280x800 and at a phone's width, a file's report and a job's page included."""
    server, keys = stack
    watch = Watch()
    viewport = DESKTOP if screen == "desktop" else PHONE
    page = new_page(browser, server.base_url, watch, viewport=viewport)
    page.goto("/ui/signin")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1
    shot(page, f"{screen}-signin")
    sign_in(page, keys["admin"])
    file_page = "/ui/files/" + upload_via_page(page, "a-rather-long-file-name-for-a-phone-screen.csv",
                                               b"text,label\nhello there,a\nbye now,b\n")
    # A job on it (the classical family needs no base model; no worker here, so it stays queued).
    page.goto("/ui/jobs/new?file=" + file_page.rsplit("/", 1)[-1])
    page.select_option("select[name=model]", "tfidf-linear")
    page.click("#create-job")
    page.wait_for_url("**/ui/jobs/ftjob-*")
    job_page = "/ui/jobs/" + page.url.rsplit("/", 1)[-1]
    named = {file_page: "file", job_page: "job"}
    for path in ["/ui/overview", "/ui/files", file_page, "/ui/jobs", job_page, "/ui/jobs/new", "/ui/models",
                 "/ui/deployments", "/ui/usage", "/ui/keys", "/ui/audit"]:
        page.goto(path)
        # Usable: nothing wider than the screen, so no sideways scrolling of the page itself.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1, path
        shot(page, f"{screen}-" + named.get(path, path[len("/ui/"):].replace("/", "-")))
    assert watch.errors == [], watch.errors
