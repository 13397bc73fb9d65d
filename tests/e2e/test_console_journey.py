"""The console journey of a new user, in Chromium against real `aiaas serve` and worker processes:
sign in, upload a CSV, start a job, watch curve points arrive while it trains, deploy, predict in the
try-it box, see the request in usage, sign out. Every page is screenshot (tests/e2e/screenshots/)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import base_env, init, start_server
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert
from tests.ui.browser import Watch, new_page, shot, sign_in, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def job_status(server, key: str, job_id: str) -> str:
    r = httpx.get(f"{server.base_url}/v1/fine_tuning/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"})
    return r.json()["status"]


def points(page) -> int:
    return int(page.inner_text("#curve-points"))


def test_new_user_journey(browser, tmp_path):
    data = tmp_path / "data"
    build_tiny_bert(data / "base_models" / "tiny-bert")
    env = base_env(data, None, AIAAS_LEASE_SECONDS="4", AIAAS_HEARTBEAT_SECONDS="0.5", AIAAS_POLL_SECONDS="0.2")
    key = init(env)
    server = start_server(env, tmp_path, job_workers=1)
    watch = Watch()
    try:
        page = new_page(browser, server.base_url, watch)
        page.goto("/ui/overview")
        assert "/ui/signin" in page.url  # a stranger is asked to sign in
        shot(page, "signin")
        sign_in(page, key)
        assert page.url.endswith("/ui/overview")
        shot(page, "overview-empty")

        # Upload through the page: the file input, the progress bar, then the file's data report.
        page.goto("/ui/files")
        page.set_input_files("#file-input", {"name": "reviews.csv", "mimeType": "text/csv",
                                             "buffer": toy_csv(150, seed=3)})
        page.click("#upload-button")
        page.wait_for_url("**/ui/files/file-*")
        assert page.inner_text("h1") == "reviews.csv"
        assert page.locator("svg.bars text.blabel", has_text="positive").count() == 1
        assert page.locator("svg.histogram rect").count() > 0 and page.locator("table.preview tbody tr").count() > 0
        shot(page, "file-report")
        shot(page, "docs-file-report", full_page=False)  # one screen, for docs/ui/

        # Start a job from the file: the form offers its columns, the task and the model family.
        page.click("text=Start a fine-tuning job on this file")
        page.wait_for_url("**/ui/jobs/new*")
        assert page.locator("select[name=text_column] option").all_inner_texts() == ["text", "label"]
        page.select_option("select[name=model]", "tiny-bert")
        page.fill("input[name=n_epochs]", "8")
        page.fill("input[name=suffix]", "journey")
        shot(page, "job-new")
        page.click("#create-job")
        page.wait_for_url("**/ui/jobs/ftjob-*")
        job_id = page.url.rsplit("/", 1)[-1]

        # Curve points arrive over the events stream while the job is still training.
        wait_until(page, "Number(document.getElementById('curve-points').textContent) > 0", timeout=180)
        first = points(page)
        status_then = job_status(server, key, job_id)
        assert status_then == "running", status_then
        shot(page, "job-training")
        wait_until(page, "document.getElementById('curves').dataset.done === '1'", timeout=300)
        assert points(page) > first  # more arrived after we first looked
        assert page.inner_text("#job-status") == "succeeded"  # the badge follows the stream
        assert job_status(server, key, job_id) == "succeeded", server.logs()[-3000:]
        page.reload()
        wait_until(page, "document.getElementById('curves').dataset.done === '1'", timeout=60)
        assert page.locator("table.heatmap td").count() == 4  # 2 labels: a 2x2 confusion matrix
        assert page.locator("#loss-chart canvas").count() == 1 and page.locator("#score-chart canvas").count() == 1
        shot(page, "job-done")
        shot(page, "docs-job-done", full_page=False)  # one screen, for docs/ui/

        page.goto("/ui/models")
        shot(page, "models")
        page.click("table a[href^='/ui/models/ft:']")
        model_id = page.inner_text("h1")
        assert model_id.startswith("ft:tiny-bert:") and ":journey:" in model_id
        shot(page, "model")

        # Deploy it and try it.
        page.goto("/ui/deployments")
        page.fill("#deploy-form input[name=name]", "journey")
        page.select_option("#deploy-form select[name=model]", model_id)
        page.click("#deploy")
        page.wait_for_url("**/ui/deployments/journey")
        page.fill("#try-text", "great service thank you")
        page.click("#try-button")
        page.wait_for_selector(".try-bars .row")
        labels = page.locator(".try-bars .try-label").all_inner_texts()
        assert sorted(labels) == ["negative", "positive"]
        assert page.inner_text(".try-top").startswith("Prediction: ")
        shot(page, "deployment-try-it")
        shot(page, "docs-deployment-try-it", full_page=False)  # one screen, for docs/ui/

        # The request shows in usage (metered like an API call, on the signed-in key).
        page.goto("/ui/usage")
        assert int(page.inner_text("#usage-requests")) >= 1
        assert "journey" in page.inner_text("table.usage-model")
        shot(page, "usage")
        page.goto("/ui/overview")
        shot(page, "overview")
        shot(page, "docs-overview", full_page=False)  # one screen, for docs/ui/
        page.goto("/ui/deployments")
        shot(page, "deployments")
        page.goto("/ui/jobs")
        shot(page, "jobs")
        page.goto("/ui/files")
        shot(page, "files")
        page.goto("/ui/keys")
        shot(page, "keys")
        page.goto("/ui/audit")
        assert "deployment.created" in page.inner_text("main")
        shot(page, "audit")

        # Sign out: the session is over, server-side.
        page.click("#signout")
        page.wait_for_url("**/ui/signin")
        page.goto("/ui/overview")
        assert "/ui/signin" in page.url
        assert watch.errors == [] and watch.dialogs == [], (watch.errors, watch.dialogs)
    finally:
        server.stop()
