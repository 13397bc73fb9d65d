"""Idempotency-Key on POSTs, in process on SQLite and PostgreSQL: replay, mismatch, scope, expiry.

The concurrent case (100 identical POSTs at once against a real server) is tests/e2e/test_chaos_idempotency.py.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from aiaas.store import idempotency as store
from aiaas.store.models import File, FineTuningJob, IdempotencyKey
from tests.api.conftest import make_org
from tests.helpers.datasets import toy_csv


def _count(db, model, org_id: str) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(model.org_id == org_id))


async def _file(client, org) -> str:
    r = await client.post("/v1/files", headers=org.headers, files={"file": ("t.csv", toy_csv())},
                          data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _job_body(file_id: str, **extra) -> dict:
    return {"model": "tfidf-linear", "training_file": file_id, "text_column": "text", "label_column": "label"} | extra


async def test_same_key_same_body_replays_without_running_again(client, db, org_a):
    file_id = await _file(client, org_a)
    headers = org_a.headers | {"Idempotency-Key": "job-1"}
    first = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id))
    again = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id))
    assert first.status_code == 200, first.text
    assert again.status_code == first.status_code and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["content-type"] == first.headers["content-type"]
    assert _count(db, FineTuningJob, org_a.id) == 1  # the work ran once
    # A new key is a new request.
    other = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers | {"Idempotency-Key": "job-2"},
                              json=_job_body(file_id))
    assert other.status_code == 200 and other.json()["id"] != first.json()["id"]
    assert _count(db, FineTuningJob, org_a.id) == 2


async def test_same_key_different_body_is_422(client, db, org_a):
    file_id = await _file(client, org_a)
    headers = org_a.headers | {"Idempotency-Key": "job-1"}
    assert (await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id))).status_code == 200
    r = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id, suffix="other"))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "idempotency_key_reused" and err["param"] == "Idempotency-Key"
    # Same body, another route: also a different request.
    r = await client.post("/v1/deployments", headers=headers, json=_job_body(file_id))
    assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_key_reused"
    assert _count(db, FineTuningJob, org_a.id) == 1


async def test_upload_replays_though_each_try_has_a_new_multipart_boundary(client, db, org_a):
    def attempt(boundary: str, content: bytes = toy_csv()):
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n"
                f"Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        headers = org_a.headers | {"Idempotency-Key": "upload-1",
                                   "Content-Type": f"multipart/form-data; boundary={boundary}"}
        return client.post("/v1/files", headers=headers, content=body)

    first = await attempt("aaaa1111")
    again = await attempt("bbbb2222")
    assert first.status_code == 200, first.text
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert _count(db, File, org_a.id) == 1
    changed = await attempt("cccc3333", toy_csv() + b"extra row,1\n")
    assert changed.status_code == 422 and changed.json()["error"]["code"] == "idempotency_key_reused"


async def test_keys_are_per_organisation(client, db, org_a, org_b):
    files = {org.id: await _file(client, org) for org in (org_a, org_b)}
    answers = {}
    for org in (org_a, org_b):
        r = await client.post("/v1/fine_tuning/jobs", headers=org.headers | {"Idempotency-Key": "shared"},
                              json=_job_body(files[org.id]))
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers
        answers[org.id] = r.json()
    assert answers[org_a.id]["id"] != answers[org_b.id]["id"]
    assert _count(db, FineTuningJob, org_a.id) == 1 and _count(db, FineTuningJob, org_b.id) == 1


async def test_errors_are_not_kept_so_a_fixed_retry_runs(client, db, org_a):
    headers = org_a.headers | {"Idempotency-Key": "retry-me"}
    bad = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body("file-nope"))
    assert bad.status_code == 404
    file_id = await _file(client, org_a)
    good = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id))
    assert good.status_code == 200 and "idempotent-replayed" not in good.headers
    assert _count(db, FineTuningJob, org_a.id) == 1


async def test_a_replay_needs_the_routes_scope(client, db, org_a):
    """A read-only key of the same organisation must not replay an admin's POST /v1/api_keys (the secret)."""
    headers = org_a.headers | {"Idempotency-Key": "new-key"}
    created = await client.post("/v1/api_keys", headers=headers, json={"name": "reader", "scopes": ["read"]})
    assert created.status_code == 201, created.text
    reader = {"Authorization": f"Bearer {created.json()['key']}", "Idempotency-Key": "new-key"}
    r = await client.post("/v1/api_keys", headers=reader, json={"name": "reader", "scopes": ["read"]})
    assert r.status_code == 403 and created.json()["key"] not in r.text


async def test_expired_keys_run_again(client, db, org_a, settings):
    file_id = await _file(client, org_a)
    headers = org_a.headers | {"Idempotency-Key": "old"}
    assert (await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id))).status_code == 200
    with db.session() as s:  # the record is now older than the 24 h time to live
        s.execute(update(IdempotencyKey).values(created_at=IdempotencyKey.created_at
                                                 - int(settings.idempotency_ttl_seconds) - 1))
    r = await client.post("/v1/fine_tuning/jobs", headers=headers, json=_job_body(file_id, suffix="new"))
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    assert _count(db, FineTuningJob, org_a.id) == 2


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9"])
async def test_malformed_keys_are_400(client, org_a, key):
    headers = org_a.headers | {"Idempotency-Key": key.encode()}
    r = await client.post("/v1/api_keys", headers=headers, json={"name": "k"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"


def test_store_claims_once_and_takes_over_a_dead_claim(db):
    org = make_org(db, "org-store")
    args = {"org_id": org.id, "key": "k", "method": "POST", "path": "/v1/x", "ttl_seconds": 3600}
    with db.session() as s:
        first = store.claim(s, lock_seconds=30, **args)
    with db.session() as s:
        second = store.claim(s, lock_seconds=30, **args)
    assert first.owner and second.owner is None and second.state == store.IN_PROGRESS
    with db.session() as s:  # the first claim's process died: its lock runs out
        s.execute(update(IdempotencyKey).values(locked_until=0))
    with db.session() as s:
        third = store.claim(s, lock_seconds=30, **args)
    assert third.owner and third.owner != first.owner
    with db.session() as s:  # the dead claim cannot complete over the live one
        assert not store.complete(s, org_id=org.id, key="k", owner=first.owner, request_hash="h", status=200,
                                  headers=[], body=b"late")
        assert store.complete(s, org_id=org.id, key="k", owner=third.owner, request_hash="h", status=200,
                              headers=[["content-type", "application/json"]], body=b"{}")
    with db.session() as s:
        done = store.claim(s, lock_seconds=30, **args)
    assert done.owner is None and done.state == store.COMPLETED and done.body == b"{}" and done.status == 200


async def test_kept_responses_are_encrypted_at_rest(client, db, org_a):
    r = await client.post("/v1/api_keys", headers=org_a.headers | {"Idempotency-Key": "secret"},
                          json={"name": "ci", "scopes": ["read"]})
    assert r.status_code == 201
    with db.session() as s:
        kept = s.scalar(select(IdempotencyKey.response_body))
    assert kept and r.json()["key"].encode() not in kept and b"api_key" not in kept
