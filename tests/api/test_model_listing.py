"""GET /v1/models with many fine-tuned models: every model, in order, in the usual list envelope, and a
listing's memory that does not grow with the number of models (the soak's RSS growth: bench/README.md)."""

from __future__ import annotations

import asyncio
import json
import tracemalloc

import pytest
from sqlalchemy import event

from aiaas.protocol.models import model_public
from aiaas.registry import models as registry
from aiaas.store.models import Model
from aiaas.training.base_models import builtin_minilm_dir


def _card(i: int) -> dict:
    # Shaped like a real card (~4 KB of JSON, many small values): what makes loading every model costly.
    return {"model_id": f"m{i}", "labels": ["negative", "positive"], "description": "d" * 200,
            "metrics": {f"metric_{k}": k / 7 for k in range(120)},
            "training_data": {"rows": i, "columns": [f"col{k}" for k in range(40)]}}


def _add_models(db, org_id: str, n: int, *, start: int = 0, tag: str = "m") -> None:
    with db.session() as s:
        s.add_all(Model(id=f"ft:tiny-bert:org:{tag}:{start + i:05d}", org_id=org_id, job_id=None,
                        base_model="tiny-bert", task="single_label_classification", artifact_uri="file:///x",
                        created_at=1_700_000_000 + (start + i) // 3,  # ties: the id orders them
                        lineage={"family": "tfidf-linear"}, card=_card(start + i)) for i in range(n))


async def test_every_model_in_order_across_batches(client, db, org_a, org_b, monkeypatch):
    monkeypatch.setattr(registry, "LIST_BATCH", 7, raising=False)
    _add_models(db, org_a.id, 40)
    _add_models(db, org_b.id, 5, tag="other")
    r = await client.get("/v1/models", headers=org_a.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    with db.session() as s:
        own = sorted(s.query(Model).filter(Model.org_id == org_a.id), key=lambda m: (m.created_at, m.id),
                     reverse=True)
        expected_own = [model_public(m) for m in own]
    fine_tuned = [m for m in body["data"] if m["id"].startswith("ft:")]
    assert fine_tuned == expected_own  # all 40 (6 batches of 7), newest first, no other organisation's
    assert body["data"][0]["owned_by"] == "aiaas"  # base models and families first, as before
    assert body["has_more"] is False
    assert (body["first_id"], body["last_id"]) == (body["data"][0]["id"], body["data"][-1]["id"])
    # The bytes are those a returned dict would have been rendered as (starlette's JSONResponse).
    assert r.content == json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


async def test_a_listing_without_models_of_its_own(client, org_a):
    body = (await client.get("/v1/models", headers=org_a.headers)).json()
    assert body["data"] and not [m for m in body["data"] if m["id"].startswith("ft:")]
    assert body["last_id"] == body["data"][-1]["id"]


async def _listing_peak(app, org) -> tuple[int, int]:
    """(peak traced bytes while the app answers one GET /v1/models, body bytes): the body is counted and
    dropped as it is sent, so the peak is the app's own memory, not the client's copy of the answer."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/models", "raw_path": b"/v1/models", "root_path": "",
             "query_string": b"", "client": ("127.0.0.1", 1234), "server": ("test", 80),
             "headers": [(b"host", b"test"), (b"authorization", org.headers["Authorization"].encode())]}
    done = asyncio.Event()
    sent = {"status": 0, "bytes": 0}
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            sent["status"] = message["status"]
        elif message["type"] == "http.response.body":
            sent["bytes"] += len(message.get("body", b""))

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        await app(scope, receive, send)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        done.set()
        tracemalloc.stop()
    assert sent["status"] == 200
    return peak, sent["bytes"]


async def test_listing_memory_does_not_grow_with_the_number_of_models(app, db, org_a, monkeypatch):
    monkeypatch.setattr(registry, "LIST_BATCH", 50, raising=False)
    _add_models(db, org_a.id, 100)
    await _listing_peak(app, org_a)  # first-call costs (imports, caches) out of the way
    small, small_body = await _listing_peak(app, org_a)
    _add_models(db, org_a.id, 700, start=100)
    large, large_body = await _listing_peak(app, org_a)
    assert large_body > 7 * small_body  # the answer has every model ...
    # ... but the app holds one batch of them at a time: 8 times the models, the same peak (measured
    # 6.40 and 6.40 MB). Loading every model at once measured 7.2 and 19.8 MB: ~18 KB more per model.
    assert large - small < 2**20, (small, large, small_body, large_body)


async def test_a_listing_holds_one_batch_of_models(app, db, org_a, monkeypatch):
    # The soak (bench/README.md): concurrent listings' transient peaks left the API process's Python heap
    # larger after each burst. One batch held at a time: 50 models of this shape measured 1.57 MB; holding
    # the first batch for the whole listing plus the last two batches (rows and dicts) measured 3.4 MB.
    monkeypatch.setattr(registry, "LIST_BATCH", 50, raising=False)
    _add_models(db, org_a.id, 400)
    await _listing_peak(app, org_a)
    peak, body = await _listing_peak(app, org_a)
    assert body > 1.5 * 2**20 and peak < 2.3 * 2**20, (peak, body)


async def test_a_listing_does_not_read_the_base_models_again(app, org_a):
    # GET /v1/models lists the built-in MiniLM; reading its tokenizer.json (466 KB) for every listing was a
    # 5.2 MB peak per listing. Its facts are kept until its files change (base_models.inspect_model_dir).
    assert builtin_minilm_dir() is not None
    await _listing_peak(app, org_a)
    peak, _ = await _listing_peak(app, org_a)
    assert peak < 2**20, peak


def test_each_batch_is_a_range_of_the_index(db, org_a):
    # A batch's query walks the (org_id, created_at, id) index from where the last batch ended. Through the
    # org_id index alone, each query fetched every model of the organisation, cards included, and sorted them
    # in a temporary b-tree (~3 MB of SQLite memory per query with 600 models: the soak, bench/README.md).
    if not db.url.startswith("sqlite"):
        pytest.skip("the plan is read with SQLite's EXPLAIN QUERY PLAN")
    _add_models(db, org_a.id, 30)
    sent: list[tuple[str, tuple]] = []

    def capture(_conn, _cursor, statement, parameters, _context, _many) -> None:  # noqa: ANN001
        if "FROM models" in statement:
            sent.append((statement, tuple(parameters)))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        ids = [m.id for page in registry.model_pages(db, org_a.id, batch=8) for m in page]
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(ids) == len(set(ids)) == 30 and len(sent) == 4  # 8 + 8 + 8 + 6
    with db.engine.connect() as c:
        plans = [" / ".join(row[-1] for row in c.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
                 for statement, parameters in sent]
    for plan in plans:
        assert "ix_models_org_id_created_at_id" in plan and "TEMP B-TREE" not in plan, plan
    # After the first batch, the keyset bound is part of the index search, not a filter on every row.
    for plan in plans[1:]:
        assert "(created_at,id)<" in plan.replace(" ", ""), plan
