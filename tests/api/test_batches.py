"""The Batch API in process: upload a JSONL or CSV, create a batch, a worker (in the test's process, as
`aiaas worker` runs it) answers it in chunks; output lines in OpenAI's format, CSV scored with escaping."""

from __future__ import annotations

import asyncio
import csv
import io
import json

import pytest
from sqlalchemy import select

from aiaas.jobs.worker import Worker
from aiaas.store.models import UsageEvent
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:batch:ftjob-1"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def model_id(settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    return MODEL


async def _upload(client, org, name: str, content: bytes) -> str:
    r = await client.post("/v1/files", headers=org.headers, files={"file": (name, content)},
                          data={"purpose": "batch"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


async def _run_worker(settings, batch_id: str) -> None:
    # In a thread: the worker runs its own event loop (it is a process of its own in production).
    await asyncio.to_thread(_work, settings)


def _work(settings) -> None:
    with Worker(settings.model_copy(update={"batch_chunk_lines": 4})) as w:
        claimed, status = w.run_batch_once()
    assert claimed and status == "completed", status


async def _content(client, org, file_id: str) -> str:
    r = await client.get(f"/v1/files/{file_id}/content", headers=org.headers)
    assert r.status_code == 200
    return r.text


async def test_jsonl_batch_answers_every_line_once(client, settings, db, org_a, org_b, model_id):
    lines = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/classifications",
              "body": {"model": model_id, "input": [f"text {i}", "more"] if i % 3 == 0 else f"text {i}"}}
             for i in range(10)]
    bad = [{"custom_id": "bad-url", "method": "POST", "url": "/v1/embeddings", "body": {"model": model_id}},
           {"custom_id": "no-model", "method": "POST", "url": "/v1/classifications", "body": {"input": "x"}}]
    raw = "\n".join(json.dumps(x) for x in [*lines[:5], *bad, *lines[5:]]) + "\n\nnot json\n"
    file_id = await _upload(client, org_a, "in.jsonl", raw.encode())
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/classifications", "completion_window": "24h",
        "metadata": {"run": "1"}})
    assert r.status_code == 200, r.text
    batch = r.json()
    assert batch["status"] == "validating" and batch["object"] == "batch" and batch["metadata"] == {"run": "1"}
    # Another organisation sees nothing of it.
    assert (await client.get(f"/v1/batches/{batch['id']}", headers=org_b.headers)).status_code == 404
    await _run_worker(settings, batch["id"])
    with db.session() as s:  # metered as online inference: one request per answered line, for the key
        rows = list(s.scalars(select(UsageEvent).where(UsageEvent.org_id == org_a.id)))
    assert sum(r.requests for r in rows if r.model == model_id) == 10
    assert all(r.kind == "inference" and r.key_id for r in rows) and sum(r.input_tokens for r in rows) > 0
    got = (await client.get(f"/v1/batches/{batch['id']}", headers=org_a.headers)).json()
    assert got["status"] == "completed" and got["completed_at"] and got["in_progress_at"]
    assert got["request_counts"] == {"total": 13, "completed": 10, "failed": 3}
    out = [json.loads(x) for x in (await _content(client, org_a, got["output_file_id"])).splitlines()]
    ids = [o["custom_id"] for o in out]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(10)) and len(set(ids)) == 10
    online = await client.post("/v1/classifications", headers=org_a.headers,
                               json={"model": model_id, "input": ["text 0", "more"]})
    first = next(o for o in out if o["custom_id"] == "req-0")
    assert first["error"] is None and first["response"]["status_code"] == 200
    body = first["response"]["body"]
    assert [d["label"] for d in body["data"]] == [d["label"] for d in online.json()["data"]]
    assert body["data"][0]["score"] == pytest.approx(online.json()["data"][0]["score"], abs=1e-5)
    errs = [json.loads(x) for x in (await _content(client, org_a, got["error_file_id"])).splitlines()]
    assert {e["custom_id"] for e in errs} == {"bad-url", "no-model", None}
    assert all(e["response"]["status_code"] == 400 and e["error"]["code"] == "invalid_request" for e in errs)
    listed = (await client.get("/v1/batches", headers=org_a.headers)).json()
    assert [b["id"] for b in listed["data"]] == [batch["id"]]


async def test_csv_scoring_adds_columns_and_escapes_formulas(client, settings, db, org_a, model_id):
    rows = [["id", "body"], *[[str(i), f"message number {i}"] for i in range(9)], ["9", "=HYPERLINK(\"x\")"]]
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    file_id = await _upload(client, org_a, "scores.csv", buf.getvalue().encode())
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/classifications", "completion_window": "24h",
        "text_column": "missing", "model": model_id})
    assert r.status_code == 400 and r.json()["error"]["param"] == "text_column"
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/classifications", "completion_window": "24h",
        "text_column": "body", "model": model_id, "top_k": 2})
    assert r.status_code == 200, r.text
    await _run_worker(settings, r.json()["id"])
    got = (await client.get(f"/v1/batches/{r.json()['id']}", headers=org_a.headers)).json()
    assert got["request_counts"] == {"total": 10, "completed": 10, "failed": 0}
    table = list(csv.reader(io.StringIO(await _content(client, org_a, got["output_file_id"]))))
    assert table[0] == ["id", "body", "label", "score", "label_1", "score_1", "label_2", "score_2", "error"]
    assert [row[0] for row in table[1:]] == [str(i) for i in range(10)]
    assert all(row[2] in ("negative", "positive") and 0 <= float(row[3]) <= 1 for row in table[1:])
    assert table[-1][1] == "'=HYPERLINK(\"x\")"  # a formula cell comes back escaped


async def test_create_checks_and_cancel(client, settings, db, org_a, model_id):
    file_id = await _upload(client, org_a, "in.jsonl", b'{"custom_id": "a"}\n')
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "endpoint"
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": "file-nope", "endpoint": "/v1/embeddings", "completion_window": "24h"})
    assert r.status_code == 404
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "1h"})
    assert r.status_code == 400
    r = await client.post("/v1/batches", headers=org_a.headers, json={
        "input_file_id": file_id, "endpoint": "/v1/embeddings", "completion_window": "24h"})
    bid = r.json()["id"]
    r = await client.post(f"/v1/batches/{bid}/cancel", headers=org_a.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await client.post(f"/v1/batches/{bid}/cancel", headers=org_a.headers)
    assert r.status_code == 400
    assert await asyncio.to_thread(_claim_nothing, settings)


def _claim_nothing(settings) -> bool:
    with Worker(settings) as w:
        return w.run_batch_once() == (False, None)
