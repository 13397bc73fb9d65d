"""The audit log: every change with actor key, target, request id and client address; failed
authentications; admin-only listing with pagination."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from aiaas.registry import models as registry
from aiaas.security.keys import generate_key
from aiaas.services import audit, authn
from aiaas.store.models import ApiKey, AuditLog
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert


def key_id(db, plaintext: str) -> str:
    with db.session() as s:
        return authn.authenticate(s, plaintext).key_id


async def all_logs(client, org) -> list[dict]:
    out, after = [], None
    while True:
        params = {"limit": 3} | ({"after": after} if after else {})
        page = (await client.get("/v1/audit_logs", headers=org.headers, params=params)).json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["last_id"]


async def test_changes_are_audited_with_actor_target_and_request(client, settings, db, org_a, org_b):
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    admin = key_id(db, org_a.key)
    h = org_a.headers
    created = await client.post("/v1/api_keys", headers=h, json={"name": "ci", "scopes": ["read"]})
    new_key = created.json()
    request_ids = {"api_key.created": created.headers["x-request-id"]}
    r = await client.delete(f"/v1/api_keys/{new_key['id']}", headers=h | {"X-Request-ID": "trace-revoke-1"})
    request_ids["api_key.revoked"] = "trace-revoke-1"
    f = (await client.post("/v1/files", headers=h, files={"file": ("t.csv", toy_csv())},
                           data={"purpose": "fine-tune"})).json()
    job = (await client.post("/v1/fine_tuning/jobs", headers=h,
                             json={"model": "tiny-bert", "training_file": f["id"]})).json()
    await client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=h)
    model_id = "ft:tiny-bert:org-a::ftjob-audit"
    with db.session() as s:
        artifact = settings.data_dir / "blobs" / org_a.id / "models" / "x"
        registry.register_model(s, model_id=model_id, org_id=org_a.id, job_id="ftjob-audit",
                                base_model="tiny-bert", task="single_label_classification",
                                artifact_uri=f"file://{artifact}", lineage={}, card={})
    dep = (await client.post("/v1/deployments", headers=h, json={"name": "aud", "model": model_id})).json()
    await client.delete("/v1/deployments/aud", headers=h)
    await client.delete(f"/v1/models/{model_id}", headers=h)
    r = await client.delete(f"/v1/files/{f['id']}", headers=h)
    assert r.status_code == 200
    # A failed change leaves no record: a 404 delete, a refused upload.
    assert (await client.delete("/v1/files/file-nope", headers=h)).status_code == 404
    assert (await client.post("/v1/files", headers=h, files={"file": ("e.csv", b"")},
                              data={"purpose": "fine-tune"})).status_code == 400

    logs = await all_logs(client, org_a)
    assert [e["action"] for e in logs] == [
        "file.deleted", "model.deleted", "deployment.deleted", "deployment.created",
        "fine_tuning.job.cancelled", "fine_tuning.job.created", "file.uploaded", "api_key.revoked",
        "api_key.created"]
    by_action = {e["action"]: e for e in logs}
    assert all(e["actor"] == {"type": "api_key", "id": admin} and e["client_ip"] == "127.0.0.1" for e in logs)
    assert all(e["object"] == "audit_log" and e["request_id"] for e in logs)
    for action, rid in request_ids.items():
        assert by_action[action]["request_id"] == rid
    assert by_action["api_key.created"]["target"] == {"type": "api_key", "id": new_key["id"]}
    assert by_action["api_key.created"]["details"] == {"name": "ci", "scopes": ["read"], "expires_at": None}
    assert by_action["file.uploaded"]["target"] == {"type": "file", "id": f["id"]}
    assert by_action["file.uploaded"]["details"]["bytes"] == len(toy_csv())
    assert by_action["fine_tuning.job.created"]["target"]["id"] == job["id"]
    assert by_action["deployment.created"]["target"] == {"type": "deployment", "id": dep["id"]}
    assert by_action["model.deleted"]["target"] == {"type": "model", "id": model_id}
    # Filter by action; another organisation sees none of it.
    only = (await client.get("/v1/audit_logs", headers=h, params={"action": "file.uploaded"})).json()["data"]
    assert [e["id"] for e in only] == [by_action["file.uploaded"]["id"]]
    assert (await client.get("/v1/audit_logs", headers=org_b.headers)).json()["data"] == []


async def test_listing_needs_admin(client, org_a):
    created = (await client.post("/v1/api_keys", headers=org_a.headers,
                                 json={"name": "w", "scopes": ["write"]})).json()
    r = await client.get("/v1/audit_logs", headers={"Authorization": f"Bearer {created['key']}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


async def test_authentication_failures(client, db, org_a):
    created = (await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "old"})).json()
    expiring = (await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "exp"})).json()
    await client.delete(f"/v1/api_keys/{created['id']}", headers=org_a.headers)
    with db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.id == expiring["id"]).values(expires_at=int(time.time()) - 1))
    for plaintext in (created["key"], expiring["key"]):
        r = await client.get("/v1/files", headers={"Authorization": f"Bearer {plaintext}",
                                                   "X-Request-ID": "trace-fail"})
        assert r.status_code == 401
    unknown = generate_key()
    assert (await client.get("/v1/files", headers={"Authorization": f"Bearer {unknown}"})).status_code == 401
    # Malformed keys are refused before any database work, so they are not recorded either.
    assert (await client.get("/v1/files", headers={"Authorization": "Bearer nonsense"})).status_code == 401

    failures = (await client.get("/v1/audit_logs", headers=org_a.headers,
                                 params={"action": "auth.failed"})).json()["data"]
    assert [(e["actor"]["id"], e["details"]["code"]) for e in failures] == [
        (expiring["id"], "expired_api_key"), (created["id"], "revoked_api_key")]
    assert all(e["request_id"] == "trace-fail" and e["target"]["id"] == e["actor"]["id"] for e in failures)
    # The unknown key belongs to no organisation: only the operator sees it.
    with db.session() as s:
        rows, _ = audit.list_logs(s, None, after=None, limit=10)
        assert [(r.action, r.actor_key_id, r.details) for r in rows] == [
            ("auth.failed", None, {"code": "invalid_api_key"})]


async def test_auth_failure_records_are_throttled_per_client(client, settings, db):
    settings.auth_failure_audits_per_minute = 3
    for _ in range(10):
        r = await client.get("/v1/files", headers={"Authorization": f"Bearer {generate_key()}"})
        assert r.status_code == 401
    with db.session() as s:
        assert len(s.scalars(select(AuditLog).where(AuditLog.action == "auth.failed")).all()) == 3
