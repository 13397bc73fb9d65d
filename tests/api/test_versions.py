"""Registered models, versions, aliases, deployment updates, traffic splits, revisions and rollback,
in process over the real app (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.helpers.deployed import export_tiny_classifier, register

V1 = "ft:tiny-bert:org-a:support:ftjob-1"
V2 = "ft:tiny-bert:org-a:support:ftjob-2"
TEXTS = {"inputs": ["great service"]}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def two_versions(settings, db, org_a, artifact):
    for model_id in (V1, V2):
        register(settings, db, org_a.id, artifact, model_id=model_id, task="single_label_classification",
                 labels=["negative", "positive"])
    return V1, V2


async def test_each_registration_adds_the_next_version_with_lineage(client, org_a, org_b, two_versions):
    r = await client.get("/v1/registered_models", headers=org_a.headers)
    assert r.status_code == 200, r.text
    assert [m["name"] for m in r.json()["data"]] == ["support"]
    assert r.json()["data"][0]["latest_version"] == 2
    r = await client.get("/v1/registered_models/support/versions", headers=org_a.headers)
    vs = r.json()["data"]
    assert [(v["version"], v["model"]) for v in vs] == [(2, V2), (1, V1)]
    assert vs[0]["lineage"]["parent_version"] == 1 and vs[0]["previous"]["version"] == 1
    assert vs[0]["lineage"]["base_model"] == "tiny-bert"
    r = await client.get("/v1/registered_models/support/versions/1", headers=org_a.headers)
    assert r.json()["model"] == V1 and r.json()["previous"] is None
    assert (await client.get("/v1/registered_models/support", headers=org_b.headers)).status_code == 404
    assert (await client.get("/v1/registered_models/support/versions/9", headers=org_a.headers)).status_code == 404


async def test_versions_and_aliases_name_models_everywhere(client, org_a, org_b, two_versions):
    for name, expect in (("support/1", V1), ("support/2", V2), (V1, V1), ("support", V2)):
        r = await client.post("/v1/classifications", headers=org_a.headers, json={"model": name, "input": "hi"})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == expect and r.headers["x-aiaas-model"] == expect
    r = await client.post("/v1/classifications", headers=org_a.headers,
                          json={"model": "support@production", "input": "hi"})
    assert r.status_code == 404
    r = await client.put("/v1/registered_models/support/aliases/production", headers=org_a.headers,
                         json={"version": 1})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/classifications", headers=org_a.headers,
                          json={"model": "support@production", "input": "hi"})
    assert r.json()["model"] == V1
    # another organisation cannot name it
    r = await client.post("/v1/classifications", headers=org_b.headers,
                          json={"model": "support@production", "input": "hi"})
    assert r.status_code == 404
    r = await client.put("/v1/registered_models/support/aliases/7", headers=org_a.headers, json={"version": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "alias"
    # OIP: the version routes serve that version; metadata lists versions
    r = await client.get("/v2/models/support", headers=org_a.headers)
    assert r.json()["versions"] == ["2", "1"] and r.json()["parameters"]["model"] == V2
    r = await client.get("/v2/models/support/versions/1", headers=org_a.headers)
    assert r.json()["parameters"]["model"] == V1
    assert (await client.get("/v2/models/support/versions/3", headers=org_a.headers)).status_code == 404
    infer = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    r = await client.post("/v2/models/support/versions/1/infer", headers=org_a.headers, json=infer)
    assert r.status_code == 200 and r.headers["x-aiaas-model"] == V1 and r.json()["model_version"] == "1"


async def test_alias_moves_are_audited_and_deployments_follow_them(client, org_a, two_versions):
    await client.put("/v1/registered_models/support/aliases/production", headers=org_a.headers, json={"version": 1})
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "sup", "model": "support@production"})
    assert r.status_code == 201, r.text
    assert r.json()["model"] == V1 and r.json()["revision"] == 1
    r = await client.post("/v1/deployments/sup/predict", headers=org_a.headers, json=TEXTS)
    assert r.json()["model"] == V1 and r.headers["x-aiaas-model"] == V1
    r = await client.put("/v1/registered_models/support/aliases/production", headers=org_a.headers,
                         json={"version": 2})
    assert r.json()["previous_version"] == 1 and r.json()["deployments"] == ["sup"]
    r = await client.post("/v1/deployments/sup/predict", headers=org_a.headers, json=TEXTS)
    assert r.json()["model"] == V2
    logs = (await client.get("/v1/audit_logs", headers=org_a.headers,
                             params={"action": "model.alias.set"})).json()["data"]
    assert [(x["details"]["version"], x["details"]["previous_version"]) for x in logs] == [(2, 1), (1, None)]
    # an alias a deployment follows cannot be deleted; a version a deployment serves neither
    r = await client.delete("/v1/registered_models/support/aliases/production", headers=org_a.headers)
    assert r.status_code == 409
    r = await client.delete("/v1/registered_models/support/versions/2", headers=org_a.headers)
    assert r.status_code == 409 and "sup" in r.json()["error"]["message"]
    r = await client.delete(f"/v1/models/{V2}", headers=org_a.headers)
    assert r.status_code == 409
    r = await client.delete("/v1/registered_models/support/versions/1", headers=org_a.headers)
    assert r.status_code == 200, r.text
    assert (await client.get(f"/v1/models/{V1}", headers=org_a.headers)).status_code == 404


async def test_patch_traffic_revisions_and_rollback(client, org_a, two_versions):
    await client.post("/v1/deployments", headers=org_a.headers, json={"name": "sup", "model": "support/1"})
    ready = "/v2/models/support/versions/{}/ready"
    assert (await client.get(ready.format(2), headers=org_a.headers)).status_code == 503  # not loaded yet
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers,
                           json={"traffic": [{"model": "support/1", "weight": 60},
                                             {"model": "support/2", "weight": 50}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "traffic"
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers,
                           json={"traffic": [{"model": "support/1", "weight": 50},
                                             {"model": "support/9", "weight": 50}]})
    assert r.status_code == 404 and r.json()["error"]["param"] == "traffic.1.model"
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers,
                           json={"traffic": [{"model": "support/1", "weight": 50},
                                             {"model": "support/2", "weight": 50}], "sticky_header": "X-User"})
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2 and r.json()["sticky_header"] == "x-user"
    # the new version was loaded and warmed before the PATCH answered, before any request reached it
    assert (await client.get(ready.format(2), headers=org_a.headers)).status_code == 200
    seen: dict[str, int] = {}
    for _ in range(40):
        r = await client.post("/v1/deployments/sup/predict", headers=org_a.headers, json=TEXTS)
        assert r.json()["model"] == r.headers["x-aiaas-model"]
        seen[r.json()["model"]] = seen.get(r.json()["model"], 0) + 1
    assert set(seen) == {V1, V2}
    # usage is metered per version: each bucket counts exactly the requests that version answered
    usage = (await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "model"})).json()["data"]
    assert {b["model"]: b["requests"] for b in usage} == seen
    for user in ("alice", "bob", "carol"):  # sticky: one user, one version
        got = {(await client.post("/v1/deployments/sup/predict", headers={**org_a.headers, "x-user": user},
                                  json=TEXTS)).json()["model"] for _ in range(8)}
        assert len(got) == 1
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers, json={"model": "support/2"})
    assert r.json()["revision"] == 3 and r.json()["model"] == V2
    # support/1 serves no deployment now: unloaded (no request was holding it)
    assert (await client.get(ready.format(1), headers=org_a.headers)).status_code == 503
    for _ in range(5):
        assert (await client.post("/v1/deployments/sup/predict", headers=org_a.headers,
                                  json=TEXTS)).json()["model"] == V2
    r = await client.post("/v1/deployments/sup/rollback", headers=org_a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 4 and len(r.json()["traffic"]) == 2
    r = await client.post("/v1/deployments/sup/rollback", headers=org_a.headers, json={"revision": 1})
    assert r.json()["revision"] == 5 and r.json()["model"] == V1
    assert (await client.post("/v1/deployments/sup/predict", headers=org_a.headers,
                              json=TEXTS)).json()["model"] == V1
    revs = (await client.get("/v1/deployments/sup/revisions", headers=org_a.headers)).json()["data"]
    assert [(x["revision"], x["reason"]) for x in revs] == [
        (5, "rollback"), (4, "rollback"), (3, "updated"), (2, "updated"), (1, "created")]
    assert all(x["actor"] for x in revs)
    r = await client.post("/v1/deployments/nope/rollback", headers=org_a.headers)
    assert r.status_code == 404


async def test_shadow_mirrors_requests_and_records_agreement(client, org_a, two_versions):
    await client.post("/v1/deployments", headers=org_a.headers, json={"name": "sup", "model": "support/1"})
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers,
                           json={"shadow": {"model": "support/2", "percent": 100}})
    assert r.status_code == 200, r.text
    assert r.json()["shadow"] == {"model": "support/2", "percent": 100} and r.json()["model"] == V1
    for _ in range(10):
        r = await client.post("/v1/deployments/sup/predict", headers=org_a.headers, json={"inputs": ["a", "b c"]})
        assert r.json()["model"] == V1  # callers only see the primary
    import asyncio

    for _ in range(100):  # the mirrored calls finish after the answers
        stats = (await client.get("/v1/deployments/sup/shadow", headers=org_a.headers)).json()["stats"]
        if stats["compared_requests"] == 10:
            break
        await asyncio.sleep(0.05)
    assert stats["candidate"] == V2 and stats["mirrored_requests"] == 10 and stats["compared_texts"] == 20
    assert stats["agreement_rate"] == 1.0 and stats["max_abs_score_delta"] < 1e-5  # same weights
    assert stats["candidate_latency_ms"]["p50"] > 0 and stats["errors"] == 0
    r = await client.delete("/v1/registered_models/support/versions/2", headers=org_a.headers)
    assert r.status_code == 409  # the shadow candidate is in use
    r = await client.patch("/v1/deployments/sup", headers=org_a.headers, json={"shadow": None})
    assert r.json()["shadow"] is None


async def test_max_replicas_is_validated_shown_changed_and_rolled_back(client, org_a, two_versions):
    h = org_a.headers
    r = await client.post("/v1/deployments", headers=h, json={"name": "sup", "model": "support/1", "max_replicas": 0})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_replicas", r.text
    r = await client.post("/v1/deployments", headers=h, json={"name": "sup", "model": "support/1", "max_replicas": 65})
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_replicas", r.text
    r = await client.post("/v1/deployments", headers=h, json={"name": "sup", "model": "support/1", "max_replicas": 2})
    assert r.status_code == 201 and r.json()["max_replicas"] == 2, r.text
    r = await client.patch("/v1/deployments/sup", headers=h, json={"max_replicas": 1})
    assert r.status_code == 200 and r.json()["max_replicas"] == 1 and r.json()["revision"] == 2, r.text
    r = await client.post("/v1/deployments/sup/predict", headers=h, json=TEXTS)
    assert r.status_code == 200, r.text  # served through the bounded batcher
    r = await client.post("/v1/deployments/sup/rollback", headers=h, json={})
    assert r.status_code == 200 and r.json()["max_replicas"] == 2, r.text
    revs = (await client.get("/v1/deployments/sup/revisions", headers=h)).json()["data"]
    assert [x["spec"]["max_replicas"] for x in revs] == [2, 1, 2]
    r = await client.get("/v1/deployments", headers=h)
    assert r.json()["data"][0]["max_replicas"] == 2
