"""The SDK's results are typed (aiaas.sdk.types), read like dicts too, and come from the real app in process."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from aiaas.sdk import AsyncClient, Client, NotFoundError
from aiaas.sdk import types as t
from tests.api.conftest import Org, app, make_org  # noqa: F401 - fixtures used by name
from tests.helpers.datasets import toy_csv
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:typed:ftjob-3"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Typing is the SDK's business, not the store's: SQLite only."""
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


@pytest.fixture
def org_a(db) -> Org:
    return make_org(db, "org-a")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("typed"))


@pytest.fixture
def sync_client(app, org_a):  # noqa: F811 - `app` is the imported fixture
    from starlette.testclient import TestClient

    # One TestClient session: one event loop for every request (the app's batchers are bound to theirs).
    with TestClient(app, base_url="http://test") as http, \
            Client("http://test", org_a.key, http_client=http, max_retries=0) as c:
        yield c


@pytest.fixture
def deployed(settings, db, org_a, artifact, sync_client) -> str:
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    made = sync_client.deployments.create("typed", model=MODEL)
    assert isinstance(made, t.Deployment) and made.model == MODEL
    return made.name


def test_resources_return_typed_results(sync_client: Client) -> None:
    c = sync_client
    me = c.organizations.me()
    assert isinstance(me, t.Organization) and me.name == "org-a"

    made = c.api_keys.create("ci", scopes=["read"])
    assert isinstance(made, t.ApiKeyCreated) and made.key.startswith("aiaas_sk_") and made.scopes == ["read"]
    keys = list(c.api_keys.list(limit=1))  # pages one by one, each item typed
    assert len(keys) == 2 and all(isinstance(k, t.ApiKey) for k in keys)
    assert isinstance(c.api_keys.revoke(made.id), t.ApiKey)

    f = c.files.create(io.BytesIO(toy_csv(5)), filename="train.csv")
    assert isinstance(f, t.File) and f.bytes == len(toy_csv(5)) and f.summary and f.summary["rows"] == 10
    assert [x.id for x in c.files.list()] == [f.id]
    assert c.files.content(f.id) == toy_csv(5)

    job = c.fine_tuning.jobs.create(model="tfidf-linear", training_file=f.id, seed=1)
    assert isinstance(job, t.FineTuningJob) and job.family == "tfidf-linear" and not job.done
    assert [j.id for j in c.fine_tuning.jobs.list()] == [job.id]
    events = list(c.fine_tuning.jobs.list_events(job.id))
    assert events and all(isinstance(e, t.FineTuningJobEvent) for e in events)
    cancelled = c.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.done

    models = c.models.list()
    assert isinstance(models, t.ModelList) and all(isinstance(m, t.Model) for m in models)
    assert {"tfidf-linear", "auto"} <= {m.id for m in models.data}

    usage = c.usage.retrieve(group_by="model")
    assert isinstance(usage, t.UsageReport) and isinstance(usage.total, t.UsageBucket)
    assert isinstance(usage.total.cost, t.Cost) and usage.total.cost.total >= 0
    logs = list(c.audit_logs.list())
    assert logs and all(isinstance(entry, t.AuditLog) for entry in logs)
    assert "api_key.created" in {entry.action for entry in logs}

    assert isinstance(c.files.delete(f.id), t.Deleted)


def test_results_still_read_like_dicts(sync_client: Client) -> None:
    job_file = sync_client.files.create(io.BytesIO(toy_csv(5)), filename="t.csv")
    job = sync_client.fine_tuning.jobs.create(model="tfidf-linear", training_file=job_file["id"])
    assert job["id"] == job.id and job["status"] == job.status
    assert job.get("fine_tuned_model") is None and job.get("no_such_field", "x") == "x"
    assert "status" in job and "no_such_field" not in job
    with pytest.raises(KeyError):
        job["no_such_field"]
    # A field this SDK does not declare (a newer server's) is kept, as attribute and item.
    assert job["method"]["type"] == "supervised" and job.model_extra and "method" in job.model_extra
    assert job.to_dict()["id"] == job.id and "method" in job.to_dict()


def test_inference_helpers_are_typed(sync_client: Client, deployed: str) -> None:
    c = sync_client
    assert [d.name for d in c.deployments.list()] == [deployed]
    assert isinstance(c.deployments.retrieve(deployed), t.Deployment)

    out = c.deployments.predict(deployed, ["great service", "app crashes"], top_k=2)
    assert isinstance(out, t.Predictions) and out.deployment == deployed and len(out) == 2
    row = out.data[0]
    assert isinstance(row, t.Classification) and row.label in ("negative", "positive")
    assert isinstance(row.scores[0], t.Ranked) and abs(sum(r.score for r in row.scores) - 1) < 1e-4
    assert out.labels == [r.label for r in out]

    cls = c.classifications.create(model=deployed, input=["great service", "app crashes"])
    assert isinstance(cls, t.Predictions) and cls.labels == out.labels and cls.usage.prompt_tokens > 0

    oip = c.oip.infer(deployed, ["great service", "app crashes"], request_id="r1")
    assert isinstance(oip, t.InferResponse) and oip.id == "r1" and oip.model_name == deployed
    assert oip.labels == out.labels
    assert len(oip.scores) == 2 and all(len(s) == 2 for s in oip.scores)
    assert oip.scores[0][0] == pytest.approx(next(r.score for r in out.data[0].scores if r.label == "negative"),
                                              abs=1e-5)
    assert c.oip.ready(deployed) is True
    with pytest.raises(NotFoundError):
        c.oip.infer("no-such-model", "hello")

    gone = c.deployments.delete(deployed)
    assert isinstance(gone, t.Deleted) and gone.deleted


async def test_async_client_returns_the_same_types(app, org_a, deployed):  # noqa: F811
    transport = httpx.ASGITransport(app=app)
    http = httpx.AsyncClient(transport=transport, base_url="http://test")
    async with AsyncClient("http://test", org_a.key, http_client=http, max_retries=0) as c:
        me = await c.organizations.me()
        assert isinstance(me, t.Organization) and me["name"] == "org-a"
        keys = [k async for k in c.api_keys.list()]
        assert keys and all(isinstance(k, t.ApiKey) for k in keys)
        out = await c.deployments.predict(deployed, "great service")
        assert isinstance(out, t.Predictions) and len(out.data) == 1
        oip = await c.oip.infer(deployed, ["great service"])
        assert isinstance(oip, t.InferResponse) and oip.labels == out.labels
        assert await c.oip.ready(deployed) is True


@pytest.mark.slow
def test_the_wheel_ships_py_typed_and_the_docs_assets(tmp_path: Path) -> None:
    """Package data, as pip installs it: the py.typed marker and /docs's vendored assets with their licences."""
    import shutil
    import subprocess
    import sys
    import zipfile

    import aiaas

    root = Path(aiaas.__file__).parent.parent
    src = tmp_path / "src"  # a copy: an in-tree build/ left by an earlier build would hide missing package data
    shutil.copytree(root / "aiaas", src / "aiaas", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (root / name).exists():
            shutil.copy(root / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, timeout=600, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("aiaas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "aiaas/py.typed" in names
    for asset in ("swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css", "swagger-ui/LICENSE",
                  "redoc/redoc.standalone.js", "redoc/LICENSE", "VERSIONS"):
        assert f"aiaas/api/static/docs/{asset}" in names, asset
