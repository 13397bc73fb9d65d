"""Quotas per organisation: concurrent fine-tuning jobs, stored bytes, deployments."""

from __future__ import annotations

import asyncio

import pytest

from aiaas.registry import models as registry
from aiaas.store import tenancy
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert


def set_limits(db, org_id: str, **limits: int) -> None:
    with db.session() as s:
        tenancy.update_organization_settings(s, org_id, limits)


async def upload(client, org, content: bytes = b""):
    return await client.post("/v1/files", headers=org.headers, data={"purpose": "fine-tune"},
                             files={"file": ("t.csv", content or toy_csv())})


def assert_quota_error(r, *fragments: str) -> None:
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "quota_exceeded", err
    for fragment in fragments:
        assert fragment in err["message"], err["message"]
    assert r.headers["x-should-retry"] == "false" and "retry-after" not in r.headers


async def test_concurrent_jobs_quota(client, settings, db, org_a, org_b):
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    set_limits(db, org_a.id, quota_concurrent_jobs=2)
    f = (await upload(client, org_a)).json()
    body = {"model": "tiny-bert", "training_file": f["id"]}
    jobs = [(await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=body)).json()
            for _ in range(2)]
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=body)
    assert_quota_error(r, "concurrent fine-tuning jobs", "limit 2", "in use 2", "quota_concurrent_jobs")
    # Finished jobs free their slot; other organisations have their own.
    await client.post(f"/v1/fine_tuning/jobs/{jobs[0]['id']}/cancel", headers=org_a.headers)
    assert (await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=body)).status_code == 200
    fb = (await upload(client, org_b)).json()
    r = await client.post("/v1/fine_tuning/jobs", headers=org_b.headers,
                          json={"model": "tiny-bert", "training_file": fb["id"]})
    assert r.status_code == 200


async def test_storage_quota_counts_plaintext_bytes_and_keeps_nothing_over(client, settings, db, org_a):
    size = len(toy_csv())
    set_limits(db, org_a.id, quota_stored_bytes=size + 10)
    assert (await upload(client, org_a)).status_code == 200
    r = await upload(client, org_a)
    assert_quota_error(r, "stored bytes", f"limit {size + 10}", f"in use {size}", f"this file {size}")
    assert r.json()["error"]["param"] == "file"
    assert len((await client.get("/v1/files", headers=org_a.headers)).json()["data"]) == 1
    blob_dir = settings.data_dir / "blobs" / org_a.id / "files"
    assert len(list(blob_dir.iterdir())) == 1  # the refused upload left no blob behind


async def test_deployment_quota_from_server_default(client, settings, db, org_a):
    settings.quota_deployments = 1
    with db.session() as s:
        registry.register_model(s, model_id="ft:x:org-a::ftjob-q", org_id=org_a.id, job_id="ftjob-q",
                                base_model="x", task="single_label_classification",
                                artifact_uri="file:///nowhere", lineage={}, card={})
    one, two = ({"name": n, "model": "ft:x:org-a::ftjob-q"} for n in ("one", "two"))
    assert (await client.post("/v1/deployments", headers=org_a.headers, json=one)).status_code == 201
    r = await client.post("/v1/deployments", headers=org_a.headers, json=two)
    assert_quota_error(r, "deployments", "limit 1", "in use 1")
    # An organisation override wins over the default (0 = unlimited).
    set_limits(db, org_a.id, quota_deployments=0)
    r = await client.post("/v1/deployments", headers=org_a.headers, json=two)
    assert r.status_code == 201


async def test_concurrent_creations_cannot_both_take_the_last_slot(client, db, org_a):
    set_limits(db, org_a.id, quota_deployments=3)
    with db.session() as s:
        registry.register_model(s, model_id="ft:x:org-a::ftjob-c", org_id=org_a.id, job_id="ftjob-c",
                                base_model="x", task="single_label_classification",
                                artifact_uri="file:///nowhere", lineage={}, card={})
    results = await asyncio.gather(*(
        client.post("/v1/deployments", headers=org_a.headers,
                    json={"name": f"d{i}", "model": "ft:x:org-a::ftjob-c"})
        for i in range(8)))
    assert sorted(r.status_code for r in results) == [201] * 3 + [429] * 5


@pytest.mark.parametrize("pairs", [["quota_deployments=x"], ["nope=1"], ["quota_deployments"]])
def test_operator_overrides_are_checked(pairs):
    from aiaas.core.errors import InvalidRequest
    from aiaas.services.quotas import parse_overrides

    with pytest.raises(InvalidRequest):
        parse_overrides(pairs)


def test_operator_overrides_parse():
    from aiaas.services.quotas import parse_overrides

    assert parse_overrides(["quota_stored_bytes=1_000", "quota_deployments=default"]) == {
        "quota_stored_bytes": 1000, "quota_deployments": None}
