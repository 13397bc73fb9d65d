"""Sampled request/response logging per deployment: off by default, turned on by PATCH, stored encrypted
with the organisation's key (one blob per flush, no database write per request), exported as a JSONL
training file, and deleted after its retention period."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from aiaas.api.app import create_app
from aiaas.services import request_log
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.models import RequestLogChunk
from tests.helpers.deployed import export_tiny_classifier, register

pytestmark = pytest.mark.slow
MODEL = "ft:tiny-bert:org-a:logs:ftjob-logs"
LABELS = ["lbl-neg", "lbl-pos"]


@pytest.fixture
def app(settings, db):
    settings = settings.model_copy(update={"request_log_flush_seconds": 0, "monitoring_check_seconds": 0})
    return create_app(settings, db=db, migrate_db=False)


def _chunks(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(RequestLogChunk))


async def test_sampling_is_off_by_default_then_kept_encrypted_exported_and_swept(app, client, settings, db, org_a,
                                                                                org_b, tmp_path):
    artifact = export_tiny_classifier(tmp_path / "art", labels=tuple(LABELS))
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification", labels=LABELS)
    dep = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "logs", "model": MODEL})
    assert dep.status_code == 201 and dep.json()["request_logging"] == {"sample_rate": 0.0, "retention_days": 30}
    predict = "/v1/deployments/logs/predict"
    assert (await client.post(predict, headers=org_a.headers, json={"inputs": ["never kept"]})).status_code == 200
    log = app.state.aiaas.services.request_log
    assert log.flush() == 0 and _chunks(db) == 0  # off by default

    bad = await client.patch("/v1/deployments/logs", headers=org_a.headers,
                             json={"request_logging": {"sample_rate": 1.5}})
    assert bad.status_code == 400 and "sample_rate" in bad.json()["error"]["param"]
    r = await client.patch("/v1/deployments/logs", headers=org_a.headers,
                           json={"request_logging": {"sample_rate": 1.0, "retention_days": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["request_logging"] == {"sample_rate": 1.0, "retention_days": 2}
    assert r.json()["revision"] == 1  # traffic unchanged: no new revision
    secret = "quokka-sunrise-1234 where is my parcel"
    for texts in (["first text", secret], ["third text"]):
        assert (await client.post(predict, headers=org_a.headers, json={"inputs": texts})).status_code == 200
    assert _chunks(db) == 0  # buffered in memory: no database write per request
    assert log.flush() == 3 and _chunks(db) == 1  # one chunk per deployment per flush
    blobs_dir = settings.data_dir / "blobs"
    stored = b"".join(p.read_bytes() for p in blobs_dir.rglob("*") if p.is_file() and "request_logs" in str(p))
    assert stored and secret.encode() not in stored and b"quokka" not in stored  # encrypted at rest

    # The export is a training file of this organisation; another organisation sees no deployment.
    assert (await client.post("/v1/deployments/logs/request_logs/export", headers=org_b.headers)).status_code == 404
    r = await client.post("/v1/deployments/logs/request_logs/export", headers=org_a.headers)
    assert r.status_code == 201, r.text
    f = r.json()
    assert f["purpose"] == "fine-tune" and f["filename"] == "logs-requests.jsonl"
    content = (await client.get(f"/v1/files/{f['id']}/content", headers=org_a.headers)).content
    records = [json.loads(line) for line in content.decode().splitlines()]
    assert [x["text"] for x in records] == ["first text", secret, "third text"]
    assert all(x["label"] in LABELS and 0 <= x["score"] <= 1 and x["model"] == MODEL for x in records)

    # Retention: two days later the sweep deletes the records and their blob.
    log.clock = lambda: time.time() + 3 * 86400
    assert log.sweep() == 1 and _chunks(db) == 0
    assert not [p for p in blobs_dir.rglob("*") if p.is_file() and "request_logs" in str(p)]
    r = await client.post("/v1/deployments/logs/request_logs/export", headers=org_a.headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_request_logs"


def test_sampling_rate_is_respected_without_io(tmp_path, settings, db):
    log = request_log.RequestLog(db, create_blob_store(settings.blobs_url), flush_seconds=0)
    kept = sum(log.maybe_record(0.1, "org", "dep", "m", ["t"], [{"label": "a", "score": 0.9}]) for _ in range(5000))
    assert 350 < kept < 650  # 10% of 5,000, within ~4 standard deviations
    assert not log.maybe_record(0.0, "org", "dep", "m", ["t"], [{"label": "a"}])
    started = time.perf_counter()
    for _ in range(10000):
        log.maybe_record(0.0, "org", "dep", "m", ["t"], [{"label": "a"}])
    assert (time.perf_counter() - started) / 10000 < 50e-6  # off: a comparison, no work


class _FailingOnce:
    """A blob store whose first put fails (a full disk, an unreachable bucket), then works."""

    def __init__(self, inner):
        self.inner, self.failed = inner, False

    def put(self, key, src):
        if not self.failed:
            self.failed = True
            raise OSError("no space left on device")
        return self.inner.put(key, src)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_failed_flush_keeps_its_records_for_the_next_one(settings, db, org_a):
    blobs = _FailingOnce(create_blob_store(settings.blobs_url))
    log = request_log.RequestLog(db, blobs, flush_seconds=0)
    log.maybe_record(1.0, org_a.id, "dep-x", "m", ["a", "b"], [{"label": "p"}, {"label": "q"}])
    with pytest.raises(OSError):
        log.flush()
    assert log.buffered == 2 and _chunks(db) == 0
    log.maybe_record(1.0, org_a.id, "dep-x", "m", ["c"], None, source="embeddings")
    assert log.flush() == 3 and log.buffered == 0 and _chunks(db) == 1
    data, n = request_log.export(db, blobs, org_a.id, "dep-x")
    records = [json.loads(line) for line in data.decode().splitlines()]
    assert n == 3 and [r["text"] for r in records] == ["a", "b", "c"]  # in the order they were sampled
    assert records[2] == {"text": "c", "model": "m", "created_at": records[2]["created_at"], "source": "embeddings"}


def test_the_answer_is_made_only_for_a_sampled_request(settings, db):
    log = request_log.RequestLog(db, create_blob_store(settings.blobs_url), flush_seconds=0)
    calls = []

    def answers():
        calls.append(1)
        return [{"label": "p"}]

    assert not log.maybe_record(0.0, "o", "d", "m", ["t"], answers, source="oip")
    assert calls == []
    assert log.maybe_record(1.0, "o", "d", "m", ["t"], answers, source="oip") and calls == [1]
