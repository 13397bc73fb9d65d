"""Console actions in process: deploy, the try-it box (scope, tenancy, metering per key), delete, cancel a
job, revoke a key (its sessions end at once)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aiaas.store.models import ApiKey, UsageEvent
from tests.helpers.deployed import export_tiny_classifier, register
from tests.ui.conftest import make_key, new_client, sign_in
from tests.ui.test_console import upload

MODEL = "ft:tiny-bert:org-a:toy:ftjob-1"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def model_id(settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    return MODEL


async def test_deploy_try_it_and_delete(app, db, org_a, org_b, model_id):
    infer_key = make_key(db, org_a, ["infer"])
    read_key = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as infer, new_client(app) as reader, \
            new_client(app) as other:
        csrf = await sign_in(admin, org_a.key)
        r = await admin.post("/ui/deployments", data={"name": "toy", "model": model_id, "csrf": csrf})
        assert r.status_code == 303 and r.headers["location"] == "/ui/deployments/toy"
        page = await admin.get("/ui/deployments/toy")
        assert 'id="try-form"' in page.text

        # An infer key reaches the deployment and the try-it box; its request is metered to it.
        infer_csrf = await sign_in(infer, infer_key)
        page = await infer.get("/ui/deployments/toy")
        assert page.status_code == 200 and 'id="try-form"' in page.text and "Delete this deployment" not in page.text
        r = await infer.post("/ui/deployments/toy/try", data={"text": "great service", "csrf": infer_csrf})
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result["label"] in ("negative", "positive") and len(result["scores"]) == 2
        app.state.aiaas.services.usage.flush()
        with db.session() as s:
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.name == "infer"))
            rows = list(s.scalars(select(UsageEvent).where(UsageEvent.key_id == key_id)))
            assert sum(u.requests for u in rows) == 1 and rows[0].model == model_id

        # A read key sees the deployment but may not predict (as POST .../predict needs 'infer').
        read_csrf = await sign_in(reader, read_key)
        page = await reader.get("/ui/deployments/toy")
        assert page.status_code == 200 and 'id="try-form"' not in page.text
        r = await reader.post("/ui/deployments/toy/try", data={"text": "hi", "csrf": read_csrf})
        assert r.status_code == 403

        # Another organisation: the same 404 as a deployment that does not exist, for the page and try-it.
        other_csrf = await sign_in(other, org_b.key)
        for path in ["/ui/deployments/toy", "/ui/deployments/nothing"]:
            assert (await other.get(path)).status_code == 404
        r = await other.post("/ui/deployments/toy/try", data={"text": "hi", "csrf": other_csrf})
        assert r.status_code == 404

        r = await admin.post("/ui/deployments/toy/delete", data={"csrf": csrf})
        assert r.status_code == 303
        assert (await admin.get("/ui/deployments/toy")).status_code == 404
        r = await infer.post("/ui/deployments/toy/try", data={"text": "hi", "csrf": infer_csrf})
        assert r.status_code == 404


async def test_cancel_a_queued_job(client, org_a):
    csrf = await sign_in(client, org_a.key)
    fid = await upload(client, csrf)
    page = await client.get(f"/ui/jobs/new?file={fid}")
    assert '<option selected>text</option>' in page.text and '<option selected>label</option>' in page.text
    r = await client.post("/ui/jobs", data={"training_file": fid, "model": "tfidf-linear", "csrf": csrf,
                                            "text_column": "text", "label_column": "label"})
    assert r.status_code == 303
    job_url = r.headers["location"]
    assert 'id="cancel-job"' in (await client.get(job_url)).text
    r = await client.post(job_url + "/cancel", data={"csrf": csrf})
    assert r.status_code == 303
    page = await client.get(job_url)
    assert "s-cancelled" in page.text and 'id="cancel-job"' not in page.text
    # A bad form answers the error page with what to fix, naming the field.
    r = await client.post("/ui/jobs", data={"training_file": fid, "model": "tfidf-linear", "csrf": csrf,
                                            "text_column": "nope"})
    assert r.status_code == 400 and "no column" in r.text and "text_column" in r.text
    r = await client.post("/ui/jobs", data={"training_file": fid, "model": "tfidf-linear", "csrf": csrf,
                                            "text_column": "text", "label_column": "label", "task": "ranking"})
    assert r.status_code == 400 and "task" in r.text  # validated as the API validates it


async def test_revoking_a_key_in_the_console_ends_its_sessions(app, db, org_a):
    victim = make_key(db, org_a, ["read"])
    async with new_client(app) as admin, new_client(app) as holder:
        csrf = await sign_in(admin, org_a.key)
        await sign_in(holder, victim)
        assert (await holder.get("/ui/files")).status_code == 200
        with db.session() as s:
            key_id = s.scalar(select(ApiKey.id).where(ApiKey.name == "read"))
        r = await admin.post(f"/ui/keys/{key_id}/revoke", data={"csrf": csrf})
        assert r.status_code == 303
        assert (await holder.get("/ui/files")).status_code == 303  # back to sign-in
        form = await holder.get("/ui/signin")
        assert form.status_code == 200


async def test_job_page_shows_the_automatic_choices_reasons_from_a_long_log(client, db, org_a):
    from aiaas.store import jobs as job_store

    csrf = await sign_in(client, org_a.key)
    fid = await upload(client, csrf)
    r = await client.post("/ui/jobs", data={"training_file": fid, "model": "tfidf-linear", "csrf": csrf})
    job_id = r.headers["location"].rsplit("/", 1)[-1]
    with db.session() as s:
        job = job_store.get_job(s, org_a.id, job_id)
        job_store.add_event(s, job, "info", "auto: <b>tfidf-linear</b> first: 60 rows is too few for a transformer")
    with db.session() as s:
        job = job_store.get_job(s, org_a.id, job_id)
        for i in range(60):  # pushes the reason off the first page of events
            job_store.add_event(s, job, "info", f"Step {i}: loss 0.5")
    page = (await client.get(f"/ui/jobs/{job_id}")).text
    assert "auto: &lt;b&gt;tfidf-linear&lt;/b&gt; first: 60 rows is too few" in page
    assert "Older events" in page
