"""Metering: inference counted in memory and flushed in the background, training usage from the worker,
and GET /v1/usage with costs from the price sheet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event, func, select

from aiaas.services import authn
from aiaas.services.usage import UsageRecorder
from aiaas.store import tenancy
from aiaas.store.models import FineTuningJob, UsageEvent
from tests.api.conftest import make_org
from tests.helpers.datasets import toy_csv
from tests.helpers.deployed import export_tiny_classifier, register
from tests.helpers.tiny_bert import build_tiny_bert

MODEL = "ft:tiny-bert:org-a:usage:ftjob-usage"
TEXTS = [["great service thank you"], ["terrible experience", "where is my package it is late"],
         ["x"], ["my card was charged twice please refund", "login fails", "cancel my subscription today"]]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("usage-art"))


@pytest.fixture
async def deployed(client, settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "metered", "model": MODEL})
    assert r.status_code == 201, r.text
    return "metered"


@contextlib.contextmanager
def usage_inserts(db) -> Iterator[list[str]]:
    seen: list[str] = []

    def listener(conn, cursor, statement, *args):  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO USAGE_EVENTS"):
            seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)


async def test_predict_usage_counts_match_exactly(client, app, settings, db, org_a, org_b, deployed):
    settings.price_per_million_input_tokens = 2000.0  # big enough to see in six decimals
    recorder = app.state.aiaas.services.usage
    recorder.flush_seconds = 3600  # nothing is written behind the test's back
    with usage_inserts(db) as inserts:
        tokens = 0
        for _ in range(3):
            for texts in TEXTS:
                r = await client.post(f"/v1/deployments/{deployed}/predict", headers=org_a.headers,
                                      json={"inputs": texts})
                assert r.status_code == 200, r.text
                tokens += r.json()["usage"]["prompt_tokens"]
        assert inserts == []  # twelve requests, not one write to the usage table
        r = await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "model"})
        assert r.status_code == 200, r.text
        assert len(inserts) == 1  # the report flushed the pending counts: one row for (key, model)
    report = r.json()
    assert report["object"] == "usage" and report["group_by"] == "model"
    [bucket] = report["data"]
    assert bucket["model"] == MODEL and bucket["requests"] == 12 and bucket["input_tokens"] == tokens
    assert bucket["cost"]["inference"] == round(tokens / 1e6 * 2000.0, 6) == report["total"]["cost"]["total"]
    assert report["prices"]["per_million_input_tokens"] == 2000.0
    by_key = (await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "key"})).json()
    [key_bucket] = by_key["data"]
    with db.session() as s:
        admin_key = authn.authenticate(s, org_a.key).key_id
    assert key_bucket["key_id"] == admin_key and key_bucket["key_name"] == "admin"
    by_day = (await client.get("/v1/usage", headers=org_a.headers)).json()
    assert [d["day"] for d in by_day["data"]] == [time.strftime("%Y-%m-%d", time.gmtime())]
    assert by_day["total"]["requests"] == 12
    # Another organisation sees none of it.
    other = (await client.get("/v1/usage", headers=org_b.headers)).json()
    assert other["data"] == [] and other["total"]["requests"] == 0


async def test_usage_range_and_scopes(client, org_a):
    now = int(time.time())
    r = await client.get("/v1/usage", headers=org_a.headers, params={"start": now, "end": now - 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "start"
    r = await client.get("/v1/usage", headers=org_a.headers, params={"start": 0, "end": now})
    assert r.status_code == 400 and "366 days" in r.json()["error"]["message"]
    r = await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "hour"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "group_by"
    for scopes, status in ((["read"], 200), (["infer"], 403)):
        created = (await client.post("/v1/api_keys", headers=org_a.headers,
                                     json={"name": "u", "scopes": scopes})).json()
        r = await client.get("/v1/usage", headers={"Authorization": f"Bearer {created['key']}"})
        assert r.status_code == status


def test_recorder_aggregates_concurrent_records_exactly(db):
    org = make_org(db, "rec")
    recorder = UsageRecorder(db, flush_seconds=0.05)

    def hammer(i: int) -> None:
        for _ in range(500):
            recorder.record_inference(org.id, f"key-{i % 2}", "m", 1, 7)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    asyncio.run(recorder.aclose())  # writes whatever the background thread has not
    with db.session() as s:
        sums = (UsageEvent.key_id, func.sum(UsageEvent.requests), func.sum(UsageEvent.input_tokens))
        rows = s.execute(select(*sums).group_by(UsageEvent.key_id).order_by(UsageEvent.key_id)).all()
    assert [tuple(r) for r in rows] == [("key-0", 2000, 14000), ("key-1", 2000, 14000)]
    assert recorder._thread is None


def test_recorder_drops_rows_of_a_deleted_organisation_only(db):
    keep, gone = make_org(db, "keep"), make_org(db, "gone")
    recorder = UsageRecorder(db, flush_seconds=3600)
    recorder.record_inference(keep.id, None, "m", 2, 3)
    recorder.record_inference(gone.id, None, "m", 5, 5)
    with db.session() as s:
        tenancy.delete_organization(s, gone.id)
    assert recorder.flush() == 1
    with db.session() as s:
        assert [(r.org_id, r.requests) for r in s.scalars(select(UsageEvent))] == [(keep.id, 2)]
    asyncio.run(recorder.aclose())


@pytest.mark.slow
async def test_training_usage_is_written_by_the_worker(client, settings, db, org_a):
    from aiaas.jobs.worker import Worker

    settings.price_per_million_trained_tokens = 1000.0
    settings.price_per_cpu_hour = 3600.0  # one unit per CPU second
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    trainer = (await client.post("/v1/api_keys", headers=org_a.headers,
                                 json={"name": "trainer", "scopes": ["write"]})).json()
    auth = {"Authorization": f"Bearer {trainer['key']}"}
    f = (await client.post("/v1/files", headers=auth, files={"file": ("t.csv", toy_csv())},
                           data={"purpose": "fine-tune"})).json()
    job = (await client.post("/v1/fine_tuning/jobs", headers=auth,
                             json={"model": "tiny-bert", "training_file": f["id"],
                                   "hyperparameters": {"n_epochs": 1}})).json()
    with Worker(settings) as w:
        assert await asyncio.to_thread(w.run_once) == "succeeded"
    with db.session() as s:
        trained = s.get(FineTuningJob, job["id"]).trained_tokens
        [row] = s.scalars(select(UsageEvent).where(UsageEvent.kind == "training")).all()
    assert row.key_id == trainer["id"] and row.model == "tiny-bert" and row.org_id == org_a.id
    assert row.trained_tokens == trained > 0 and row.cpu_seconds > 0
    report = (await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "key"})).json()
    [bucket] = [b for b in report["data"] if b["key_id"] == trainer["id"]]
    assert bucket["key_name"] == "trainer" and bucket["trained_tokens"] == trained
    expected = round(trained / 1e6 * 1000.0 + row.cpu_seconds, 6)
    assert bucket["cost"]["training"] == pytest.approx(expected, abs=2e-6)


@pytest.mark.e2e
@pytest.mark.slow
def test_usage_cli_through_the_sdk(tmp_path):
    """`aiaas usage` against a real server: the CLI → SDK → API → database path."""
    from aiaas.core.settings import Settings
    from aiaas.store.db import Database
    from tests.e2e.server import AIAAS, base_env, init, start_server

    env = base_env(tmp_path / "data", AIAAS_PRICE_PER_MILLION_INPUT_TOKENS="500")
    key = init(env)
    db = Database(Settings(data_dir=tmp_path / "data").sqlalchemy_url)
    with db.session() as s:
        principal = authn.authenticate(s, key)
        for model, n, tokens in (("ft:a", 3, 30), ("ft:b", 1, 70), ("ft:a", 2, 20)):
            s.add(UsageEvent(id=f"usage-{model}-{n}", org_id=principal.org_id, key_id=principal.key_id,
                             kind="inference", model=model, requests=n, input_tokens=tokens, trained_tokens=0,
                             cpu_seconds=0.0, created_at=int(time.time())))
    db.dispose()
    server = start_server(env, tmp_path)
    try:
        cli_env = env | {"AIAAS_API_KEY": key, "AIAAS_BASE_URL": server.base_url}
        out = subprocess.run(AIAAS + ["usage", "--group-by", "model", "--json"], env=cli_env,
                             capture_output=True, text=True, timeout=60, check=True)
        report = json.loads(out.stdout)
        assert [(b["model"], b["requests"], b["input_tokens"]) for b in report["data"]] == [
            ("ft:a", 5, 50), ("ft:b", 1, 70)]
        assert report["total"]["cost"]["total"] == round(120 / 1e6 * 500, 6)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        out = subprocess.run(AIAAS + ["usage", "--start", today, "--end", today], env=cli_env,
                             capture_output=True, text=True, timeout=60, check=True)
        assert today in out.stdout and "120" in out.stdout and "total" in out.stdout
    finally:
        server.stop()
