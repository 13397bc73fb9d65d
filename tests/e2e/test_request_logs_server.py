"""Sampled request logging against a real `aiaas serve --workers 2`: every inference route that names a
deployment is sampled (classifications, predict, embeddings, OIP v2 infer), and what the two API processes
sampled is written at their graceful shutdown (the flush interval is an hour: only the lifespan's end
writes), nothing answered is lost. Sampling is turned on, and the samples exported, with the CLI."""

from __future__ import annotations

import json
import random
import subprocess
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from aiaas.core.settings import Settings
from aiaas.services import authn, request_log
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.db import Database
from aiaas.store.encrypted import encrypted
from aiaas.store.models import Deployment, RequestLogChunk
from tests.e2e.server import AIAAS, base_env, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "ft:tiny-bert:default:rlog:ftjob-rlog"
LABELS = ["lbl-rl-neg", "lbl-rl-pos"]


def run_cli(env: dict[str, str], url: str, key: str, *args: str) -> str:
    out = subprocess.run(AIAAS + list(args), env=env | {"AIAAS_BASE_URL": url, "AIAAS_API_KEY": key},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def test_every_inference_route_is_sampled_and_kept_at_shutdown_with_two_workers(tmp_path):
    data = tmp_path / "data"
    env = base_env(data, AIAAS_REQUEST_LOG_FLUSH_SECONDS="3600", AIAAS_MONITORING_ENABLED="false")
    key = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, key).org_id
    artifact = export_tiny_classifier(tmp_path, labels=tuple(LABELS))
    register(settings, db, org_id, artifact, model_id=MODEL, task="single_label_classification", labels=LABELS)
    server = start_server(env, tmp_path, workers=2)

    def cli(*args: str) -> str:
        return run_cli(env, server.base_url, key, *args)

    rng = random.Random(16)
    sent: dict[str, list[str]] = {"classifications": [], "predict": [], "embeddings": [], "oip": []}
    h = {"Authorization": f"Bearer {key}", "Connection": "close"}  # a new connection each: both processes serve
    try:
        with httpx.Client(base_url=server.base_url, headers=h, timeout=30) as c:
            assert c.post("/v1/deployments", json={"name": "rlog", "model": MODEL}).status_code == 201
            out = cli("deployments", "update", "rlog", "--log-sample-rate", "1", "--log-retention-days", "7")
            assert "rlog request logging: 1 of requests sampled, kept 7 days" in out
            for i in range(6):
                texts = [f"text {i}-{j} {rng.random():.6f}" for j in range(2)]
                sent["classifications"] += texts
                r = c.post("/v1/classifications", json={"model": "rlog", "input": texts})
                assert r.status_code == 200, r.text
                sent["predict"].append(f"predict {i} {rng.random():.6f}")
                r = c.post("/v1/deployments/rlog/predict", json={"inputs": sent["predict"][-1:]})
                assert r.status_code == 200, r.text
                sent["embeddings"].append(f"embed {i} {rng.random():.6f}")
                r = c.post("/v1/embeddings", json={"model": "rlog", "input": sent["embeddings"][-1]})
                assert r.status_code == 200 and len(r.json()["data"]) == 1, r.text
                texts = [f"oip {i}-{j} {rng.random():.6f}" for j in range(2)]
                sent["oip"] += texts
                r = c.post("/v2/models/rlog/infer", json={
                    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": texts}],
                    "outputs": [{"name": "label"}]})  # the record has the whole answer all the same
                assert r.status_code == 200, r.text
            with db.session() as s:  # an hour's flush interval: nothing written while the server runs
                assert s.scalars(select(RequestLogChunk)).first() is None
    finally:
        server.stop()  # SIGINT: uvicorn's supervisor stops both API processes gracefully
    assert server.proc.returncode == 0, server.logs()

    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        dep_id = s.scalars(select(Deployment.id).where(Deployment.name == "rlog")).one()
        chunks = s.scalars(select(RequestLogChunk)).all()
    body, count = request_log.export(db, blobs, org_id, dep_id)
    records = [json.loads(line) for line in body.decode().splitlines()]
    db.dispose()
    assert count == len(records) == sum(len(v) for v in sent.values()) == 36
    assert 1 <= len(chunks) <= 2 and sum(c.records for c in chunks) == 36  # one chunk per process that sampled
    by_source: dict[str, list[dict]] = {}
    for rec in records:
        by_source.setdefault(rec["source"], []).append(rec)
    for source, texts in sent.items():
        assert Counter(r["text"] for r in by_source[source]) == Counter(texts), source
    assert all(r["model"] == MODEL for r in records)
    for source in ("classifications", "predict", "oip"):
        for rec in by_source[source]:
            assert rec["label"] in LABELS and 0 <= rec["score"] <= 1, rec
    # A vector is no label: an embeddings record is the text to label (see services/request_log.py).
    assert all(set(r) == {"text", "model", "created_at", "source"} for r in by_source["embeddings"])

    # After a restart: the export as a training file, from the CLI; a retention change keeps the rate.
    server = start_server(env, tmp_path)
    try:
        out = cli("deployments", "update", "rlog", "--log-retention-days", "3")
        assert "1 of requests sampled, kept 3 days" in out
        cli("deployments", "logs", "export", "rlog", "-o", str(tmp_path / "logs.jsonl"))
        file_id = cli("deployments", "logs", "export", "rlog", "-q").strip()
        assert file_id.startswith("file-")
    finally:
        server.stop()
    exported = [json.loads(line) for line in (tmp_path / "logs.jsonl").read_text().splitlines()]
    assert sorted(map(json.dumps, exported)) == sorted(map(json.dumps, records))
