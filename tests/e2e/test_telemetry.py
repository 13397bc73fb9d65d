"""A real server with AIAAS_LOG_FORMAT=json: one JSON access line per request that never carries the texts,
labels or secrets it saw; drift raised from live traffic and delivered by the server's own webhook loop."""

from __future__ import annotations

import json
import random
import time

import httpx
import pytest

from aiaas.core.settings import Settings
from aiaas.services import webhooks
from aiaas.services import authn
from aiaas.store.db import Database
from tests.api.test_webhooks import Receiver
from tests.e2e.server import base_env, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register
from tests.services.test_monitoring import english, russian, store_training_reference

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "ft:tiny-bert:default:tele:ftjob-tele"
LABELS = ["lbl-quux-neg", "lbl-quux-pos"]  # distinctive, so a leak is found by grep
SECRET_TEXT = "zebra-kumquat-7731 my card number is 4111 1111 1111 1111"


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_json_access_lines_leak_nothing_and_drift_reaches_a_webhook(tmp_path, receiver):
    data = tmp_path / "data"
    env = base_env(data, AIAAS_LOG_FORMAT="json", AIAAS_LOG_LEVEL="INFO", AIAAS_WEBHOOK_ALLOW_PRIVATE="true",
                   AIAAS_MONITORING_MIN_SAMPLES="20", AIAAS_MONITORING_CHECK_SECONDS="0.5",
                   AIAAS_WEBHOOK_POLL_SECONDS="0.2")
    key = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, key).org_id
    artifact = export_tiny_classifier(tmp_path, labels=tuple(LABELS))
    register(settings, db, org_id, artifact, model_id=MODEL, task="single_label_classification", labels=LABELS)
    store_training_reference(db, org_id, artifact, random.Random(5), model_id=MODEL, labels=LABELS)
    db.dispose()
    server = start_server(env, tmp_path)
    try:
        h = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base_url, headers=h, timeout=30) as c:
            hook = c.post("/v1/webhooks", json={"url": receiver.url, "events": ["deployment.drift"]}).json()
            assert c.post("/v1/deployments", json={"name": "tele", "model": MODEL}).status_code == 201
            rng = random.Random(6)
            sent = json.dumps({"inputs": [SECRET_TEXT]}).encode()
            r = c.post("/v1/deployments/tele/predict", content=sent, headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.json()["data"][0]["label"] in LABELS
            predict_id = r.headers["x-request-id"]
            for i in range(10):
                c.post("/v1/deployments/tele/predict", json={"inputs": english(rng, 3)}).raise_for_status()
            report = c.get("/v1/deployments/tele/monitoring").json()
            assert report["drifted"] is False, report["windows"]["last_1000_requests"]["psi"]
            for i in range(10):
                c.post("/v1/deployments/tele/predict", json={"inputs": russian(rng, 3)}).raise_for_status()
            deadline = time.monotonic() + 20  # the server's own check (0.5 s) and delivery loop (0.2 s)
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.2)
            assert c.get("/v1/deployments/tele/monitoring").json()["drifted"] is True
            c.get("/metrics")  # starts the jobs count in the background
            time.sleep(1.0)
            metrics = c.get("/metrics").text
    finally:
        server.stop()

    labels = f'deployment="tele",model="{MODEL}"'
    assert f"aiaas_deployment_requests_total{{{labels}}} 21.0" in metrics
    assert f"aiaas_deployment_texts_total{{{labels}}} 61.0" in metrics
    assert f'aiaas_deployment_drift{{deployment="tele",feature="script",model="{MODEL}"}} 1.0' in metrics
    assert f'aiaas_deployment_drift{{deployment="tele",feature="top_score",model="{MODEL}"}} 0.0' in metrics
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
              if line.startswith("aiaas_model_cache_")}
    assert values["aiaas_model_cache_misses_total"] == 1 and values["aiaas_model_cache_hits_total"] >= 20
    assert values["aiaas_model_cache_resident_bytes"] > 0 and values["aiaas_model_cache_models"] == 1
    assert 'aiaas_jobs{status="succeeded"} 1.0' in metrics  # the job row store_training_reference wrote
    assert 'aiaas_job_leases{state="live"} 0.0' in metrics

    assert receiver.received, "no deployment.drift webhook arrived"
    headers, body = receiver.received[0]
    assert webhooks.verify(hook["secret"], headers, body) and json.loads(body)["type"] == "deployment.drift"

    logs = server.logs()
    for secret in (SECRET_TEXT, "zebra-kumquat", "4111 1111", key, key[-12:], hook["secret"], *LABELS,
                   "привет"):
        assert secret not in logs, f"{secret!r} leaked into the server log"
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    access = [e for e in lines if e["logger"] == "aiaas.access"]
    predict = [e for e in access if e["request_id"] == predict_id]
    assert len(predict) == 1, access[:3]
    line = predict[0]
    assert line["route"] == "/v1/deployments/{name}/predict" and line["status"] == 200
    assert line["org_id"] == org_id and line["key_id"] and line["key_id"] not in key and line["latency_ms"] > 0
    assert line["bytes_in"] == len(sent) and line["bytes_out"] == int(r.headers["content-length"])
    assert len([e for e in access if e["route"] == "/v1/deployments/{name}/predict"]) == 21
