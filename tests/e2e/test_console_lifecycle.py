"""The model lifecycle pages in Chromium against a real `aiaas serve`: versions and aliases side by side,
an alias set and a version downloaded through the page; a canary split saved and rolled back through the
deployment page, each change seen by the API; the request rate and latency charts, redrawn while the page
is open and not while its tab is hidden; a `read` key sees
versions and revisions but its forms are refused; script payloads in model metadata and in an alias name
never run; the new pages fit 1280x800 and a phone. No console errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from aiaas.core.settings import Settings
from aiaas.services import authn
from aiaas.store import tenancy
from aiaas.store.db import Database
from aiaas.store.models import Model, ModelVersion
from tests.e2e.server import base_env, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register
from tests.ui.browser import DESKTOP, PHONE, Watch, new_page, shot, sign_in, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
V1 = "ft:tiny-bert:default:toy:ftjob-1"
V2 = "ft:tiny-bert:default:toy:ftjob-2"
EVIL = "ft:tiny-bert:default:evil:ftjob-3"
XSS = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2;alert(2)</script>'


def relabelled(artifact: Path, to: Path, labels: list[str]) -> Path:
    """A copy of an exported classifier whose label names are `labels` (cheaper than a second export)."""
    shutil.copytree(artifact, to)
    for meta in to.glob("*/aiaas.json"):
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"labels": labels}))
    return to


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console-lifecycle")
    data = tmp / "data"
    env = base_env(data, AIAAS_MODEL_IDLE_UNLOAD_S="3600")
    admin = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, admin).org_id
        _, read_key = tenancy.create_key(s, org_id, name="reader", scopes=["read"])
    artifact = export_tiny_classifier(tmp)
    for model_id in (V1, V2):
        register(settings, db, org_id, artifact, model_id=model_id, task="single_label_classification",
                 labels=["negative", "positive"])
    evil = relabelled(artifact, tmp / "evil", [XSS, "fine"])
    register(settings, db, org_id, evil, model_id=EVIL, task="single_label_classification", labels=[XSS, "fine"])
    with db.session() as s:
        s.execute(update(ModelVersion).where(ModelVersion.model_id == V1).values(metrics={"accuracy": 0.8}))
        s.execute(update(ModelVersion).where(ModelVersion.model_id == V2).values(metrics={"accuracy": 0.86}))
        s.execute(update(ModelVersion).where(ModelVersion.model_id == EVIL)
                  .values(metrics={"accuracy": 0.5, XSS: 1.0, "note": XSS}, lineage={"base_model": XSS}))
        s.execute(update(Model).where(Model.id == EVIL).values(lineage={"comment": XSS}))
    db.dispose()
    server = start_server(env, tmp)
    try:
        yield server, {"admin": admin, "read": read_key}
    finally:
        server.stop()


def api(server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def test_alias_download_split_and_rollback_through_the_pages(browser, stack):
    server, keys = stack
    watch = Watch()
    with api(server, keys["admin"]) as c:
        assert c.post("/v1/deployments", json={"name": "sup", "model": "toy/1"}).status_code == 201
        page = new_page(browser, server.base_url, watch)
        sign_in(page, keys["admin"])

        page.goto("/ui/registered/toy")
        assert page.locator("#v2 .delta.better").inner_text() == "+0.06"
        page.fill("#alias-form input[name=alias]", "prod")
        page.select_option("#alias-form select[name=version]", "2")
        with page.expect_navigation():
            page.click("#set-alias")
        assert page.inner_text("#alias-prod .alias-version") == "2"
        assert c.get("/v1/registered_models/toy").json()["aliases"] == {"prod": 2}
        shot(page, "registered-model")
        with page.expect_download() as got:
            page.click("#download-2 button")
        assert got.value.suggested_filename.endswith("-hf.tar.gz")

        page.goto("/ui/deployments/sup")
        rows = page.locator("#split-form .split-row")
        rows.nth(0).locator("input[name=ref]").fill("toy/1")
        rows.nth(0).locator("input[name=weight]").fill("90")
        rows.nth(1).locator("input[name=ref]").fill("toy@prod")
        rows.nth(1).locator("input[name=weight]").fill("10")
        page.fill("#sticky-header", "X-User-Id")
        with page.expect_navigation():
            page.click("#split-save")
        assert page.locator("#traffic .traffic-row .weight").all_inner_texts() == ["90%", "10%"]
        assert page.inner_text("#sticky code") == "x-user-id"  # stored as the API stores it, lower case
        assert page.input_value("#sticky-header") == "x-user-id"  # the form shows what is saved
        dep = c.get("/v1/deployments/sup").json()
        assert dep["traffic"] == [{"model": "toy/1", "weight": 90}, {"model": "toy@prod", "weight": 10}]
        assert dep["revision"] == 2 and dep["sticky_header"] == "x-user-id"
        # The header the page set keeps one caller on one model of the split.
        served = {c.post("/v1/deployments/sup/predict", json={"inputs": ["fine"]},
                         headers={"X-User-Id": "user-42"}).json()["model"] for _ in range(8)}
        assert len(served) == 1, served

        # The registered model's page says which deployment serves each version, and how.
        page.goto("/ui/registered/toy")
        v1 = page.locator("#v1 .serving-cell li.served-by")
        v2 = page.locator("#v2 .serving-cell li.served-by")
        assert v1.count() == 1 and v2.count() == 1
        assert v1.get_attribute("data-deployment") == "sup" and v1.locator(".share").inner_text() == "90%"
        assert v2.get_attribute("data-deployment") == "sup" and v2.locator(".share").inner_text() == "10%"
        assert "@prod" in v2.inner_text() and "@prod" not in v1.inner_text()
        shot(page, "registered-model-served-by")
        page.click("#v2 .serving-cell a")  # each entry links to its deployment
        page.wait_for_url("**/ui/deployments/sup")

        for _ in range(20):
            assert c.post("/v1/deployments/sup/predict", json={"inputs": ["great service"]}).status_code == 200
        page.reload()
        assert float(page.inner_text("#p50")) > 0 and float(page.inner_text("#p99")) >= float(page.inner_text("#p50"))
        assert page.locator("#rate-chart rect.bar").count() >= 1
        shot(page, "deployment-split")

        with page.expect_navigation():
            page.click("#rollback")
        dep = c.get("/v1/deployments/sup").json()
        assert dep["traffic"] == [{"model": "toy/1", "weight": 100}] and dep["revision"] == 3
        assert page.inner_text("#revision") == "3"
        assert page.locator("#revisions tr.revision").count() == 3
        # Revision 1 had no sticky header: rolled back, neither the page nor the API names one.
        assert dep["sticky_header"] is None
        assert page.locator("#sticky").count() == 0 and page.input_value("#sticky-header") == ""
        shot(page, "deployment-rolled-back")
    assert watch.errors == [] and watch.dialogs == [], (watch.errors, watch.dialogs)


def set_hidden(page, hidden: bool) -> None:
    """What the browser does when the tab goes to the background (headless Chromium never hides one)."""
    page.evaluate("""(hidden) => {
        Object.defineProperty(document, 'hidden', {configurable: true, get: () => hidden});
        document.dispatchEvent(new Event('visibilitychange'));
    }""", hidden)


def test_the_charts_redraw_while_the_page_is_open_and_rest_while_it_is_hidden(browser, stack):
    server, keys = stack
    watch = Watch()
    with api(server, keys["admin"]) as c:
        assert c.post("/v1/deployments", json={"name": "live", "model": "toy/1"}).status_code == 201
        page = new_page(browser, server.base_url, watch)
        sign_in(page, keys["admin"])
        page.goto("/ui/deployments/live?refresh=1")
        page.evaluate("window.__loaded_once = true")  # gone if the page reloads
        assert page.inner_text("#rate-hour") == "0" and page.locator("#rate-chart rect.bar").count() == 0
        for _ in range(4):
            assert c.post("/v1/deployments/live/predict", json={"inputs": ["great service"]}).status_code == 200
        wait_until(page, "document.getElementById('rate-hour').textContent === '4'", timeout=10)
        assert page.locator("#rate-chart rect.bar").count() == 1 and float(page.inner_text("#p50")) > 0
        assert page.evaluate("window.__loaded_once") is True

        set_hidden(page, True)
        page.wait_for_timeout(1500)  # a redraw already asked for lands; none after it
        redraws = page.evaluate("document.body.dataset.chartRedraws")
        for _ in range(2):
            assert c.post("/v1/deployments/live/predict", json={"inputs": ["fine"]}).status_code == 200
        page.wait_for_timeout(2500)
        assert page.evaluate("document.body.dataset.chartRedraws") == redraws
        assert page.inner_text("#rate-hour") == "4"
        set_hidden(page, False)  # shown again: redrawn at once
        wait_until(page, "document.getElementById('rate-hour').textContent === '6'", timeout=5)
        shot(page, "deployment-live-charts")
    assert watch.errors == [] and watch.dialogs == [], (watch.errors, watch.dialogs)


def forge(page, action: str, fields: dict[str, str]) -> None:
    """Post a form the page does not offer, with the session's own CSRF token (a key that lacks the
    scope is refused by the server, not only by a missing button)."""
    page.evaluate("""([action, fields]) => {
        const f = document.createElement('form');
        f.method = 'post'; f.action = action;
        const all = Object.assign({csrf: document.querySelector('meta[name=csrf-token]').content}, fields);
        for (const [k, v] of Object.entries(all)) {
            const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
        }
        document.body.appendChild(f); f.submit();
    }""", [action, fields])
    page.wait_for_load_state()


def test_a_read_key_sees_versions_but_its_forms_are_refused(browser, stack):
    server, keys = stack
    watch = Watch()
    page = new_page(browser, server.base_url, watch)
    sign_in(page, keys["read"])
    page.goto("/ui/registered/toy")
    assert page.locator("#v1").count() == 1 and page.locator("#v2").count() == 1
    assert page.locator("#alias-form").count() == 0 and page.locator("form.move-alias").count() == 0
    shot(page, "registered-model-read")
    with api(server, keys["admin"]) as c:
        before = c.get("/v1/registered_models/toy").json()["aliases"]
        for action, fields in (("/ui/registered/toy/aliases", {"alias": "canary", "version": "1"}),
                               ("/ui/deployments/sup/rollback", {}),
                               ("/ui/deployments/sup/traffic", {"ref": "toy/2", "weight": "100"})):
            with page.expect_navigation():
                forge(page, action, fields)
            assert page.inner_text("h1") == "Not allowed", action
            assert "write" in page.inner_text(".error-message")
        shot(page, "registered-model-read-refused")
        assert c.get("/v1/registered_models/toy").json()["aliases"] == before
    page.goto("/ui/deployments/sup")
    assert page.locator("#revisions").count() == 1 and page.locator("#split-form").count() == 0
    assert page.locator("#rollback").count() == 0
    assert watch.unexpected(403) == [], watch.errors


def test_script_payloads_in_model_metadata_and_alias_names_never_run(browser, stack):
    server, keys = stack
    watch = Watch()
    page = new_page(browser, server.base_url, watch)
    sign_in(page, keys["admin"])
    for path in ["/ui/models", "/ui/registered/evil", f"/ui/models/{EVIL}"]:
        page.goto(path)
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") is None, path
    page.goto(f"/ui/models/{EVIL}")
    assert XSS in page.inner_text("main")  # shown as text, exactly
    page.goto("/ui/registered/evil")
    assert XSS in page.inner_text("#versions")
    # An alias named with a payload (the field's pattern removed, as a hand-made request would be).
    page.evaluate("document.querySelector('#alias-form input[name=alias]').removeAttribute('pattern')")
    page.fill("#alias-form input[name=alias]", "<img src=x onerror=alert(5)>")
    with page.expect_navigation():
        page.click("#set-alias")
    assert page.inner_text("h1") == "Something needs fixing"
    assert "<img src=x onerror=alert(5)>" in page.inner_text(".error-message")
    shot(page, "xss-alias-refused")
    # The try-it box of a deployment whose labels are payloads draws them as text.
    with api(server, keys["admin"]) as c:
        assert c.post("/v1/deployments", json={"name": "evil", "model": "evil/1"}).status_code == 201
    page.goto("/ui/deployments/evil")
    page.fill("#try-text", "hello there")
    page.click("#try-button")
    wait_until(page, "document.querySelectorAll('#try-result .try-label').length === 2", timeout=60)
    assert XSS in page.locator("#try-result .try-label").all_inner_texts()
    assert page.evaluate("window.__xss") is None
    assert watch.dialogs == [], watch.dialogs
    assert watch.unexpected(400) == [], watch.errors


@pytest.mark.parametrize("screen", ["desktop", "phone"])
def test_new_pages_fit_the_screen(browser, stack, screen):
    """At 1280x800 and at a phone's width: nothing wider than the screen (no sideways scrolling)."""
    server, keys = stack
    watch = Watch()
    viewport = DESKTOP if screen == "desktop" else PHONE
    page = new_page(browser, server.base_url, watch, viewport=viewport)
    sign_in(page, keys["admin"])
    for path in ["/ui/models", "/ui/registered/toy", f"/ui/models/{V1}", "/ui/deployments/sup"]:
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"] + 1, path
        shot(page, f"{screen}-" + path[len("/ui/"):].replace("/", "-").replace(":", "_"))
    assert watch.errors == [], watch.errors
