"""Deployments, native predict and OpenAI-style inference on an exported tiny model, in process."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:toy:ftjob-1"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def model_id(settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    return MODEL


async def test_deploy_and_predict(client, org_a, org_b, model_id):
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "toy", "model": model_id})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "toy", "model": model_id})
    assert r.status_code == 409
    r = await client.post("/v1/deployments", headers=org_b.headers, json={"name": "toy", "model": model_id})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = await client.post("/v1/deployments/toy/predict", headers=org_a.headers,
                          json={"inputs": ["great service", "terrible experience", "x"], "top_k": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model_id and [d["index"] for d in body["data"]] == [0, 1, 2]
    assert all(len(d["scores"]) == 1 and d["label"] in ("negative", "positive") for d in body["data"])
    assert body["usage"]["prompt_tokens"] >= 3 * 3
    assert (await client.post("/v1/deployments/toy/predict", headers=org_b.headers,
                              json={"inputs": ["a"]})).status_code == 404


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"inputs": []}, "inputs"),
        ({"inputs": "not a list"}, "inputs"),
        ({"inputs": [1, 2]}, "inputs.0"),
        ({"inputs": ["ok"], "extra": 1}, "extra"),
        ({"inputs": ["x" * 20001]}, "inputs.0"),
        ({"inputs": ["a"] * 257}, "inputs"),
    ],
)
async def test_hostile_predict_input(client, org_a, model_id, payload, param):
    await client.post("/v1/deployments", headers=org_a.headers, json={"name": "toy", "model": model_id})
    r = await client.post("/v1/deployments/toy/predict", headers=org_a.headers, json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


async def test_classifications_and_embeddings(client, org_a, model_id):
    r = await client.post("/v1/classifications", headers=org_a.headers, json={"model": model_id, "input": "hello"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["object"] == "classification"
    r = await client.post("/v1/embeddings", headers=org_a.headers, json={"model": model_id, "input": ["a", "b c"]})
    assert r.status_code == 200, r.text
    vecs = np.array([d["embedding"] for d in r.json()["data"]])
    assert vecs.shape == (2, 32) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-4)
    r = await client.post("/v1/embeddings", headers=org_a.headers,
                          json={"model": model_id, "input": ["a", "b c"], "encoding_format": "base64"})
    decoded = np.array([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in r.json()["data"]])
    assert np.allclose(decoded, vecs, atol=1e-6)
    r = await client.post("/v1/embeddings", headers=org_a.headers, json={"model": model_id, "input": [[1, 2]]})
    assert r.status_code == 400
    r = await client.post("/v1/embeddings", headers=org_a.headers, json={"model": "ft:nope", "input": "a"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"


async def test_infer_scope_only_for_inference(client, org_a, model_id):
    r = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "app", "scopes": ["infer"]})
    infer = {"Authorization": f"Bearer {r.json()['key']}"}
    assert (await client.post("/v1/classifications", headers=infer, json={"model": model_id, "input": "a"})
            ).status_code == 200
    assert (await client.get("/v1/files", headers=infer)).status_code == 403
    assert (await client.post("/v1/deployments", headers=infer, json={"name": "x", "model": model_id})
            ).status_code == 403


async def test_min_replicas_one_is_preloaded_on_start_and_unpinned_on_delete(client, settings, db, org_a, model_id):
    import asyncio

    from aiaas.api.app import create_app
    from aiaas.registry import models as registry

    r = await client.post("/v1/deployments", headers=org_a.headers,
                          json={"name": "warm", "model": model_id, "min_replicas": 1})
    assert r.status_code == 201
    with db.session() as s:
        uri = registry.get_model(s, org_a.id, model_id).artifact_uri
    restarted = create_app(settings, db=db, migrate_db=False)  # as after a server restart
    async with restarted.router.lifespan_context(restarted):
        cache = restarted.state.aiaas.services.inference.local.cache
        for _ in range(200):
            if uri in cache:
                break
            await asyncio.sleep(0.05)
        assert uri in cache and uri in cache.stats()["pinned"]
    r = await client.delete("/v1/deployments/warm", headers=org_a.headers)
    assert r.status_code == 200
    assert uri not in client._transport.app.state.aiaas.services.inference.local.cache.stats()["pinned"]


async def test_the_limiter_holds_the_tokens_each_route_read(app, client, db, org_a, model_id):
    """Every inference route charges an estimate first and settles it on the model's real count."""
    from aiaas.serving import oip_codec as codec
    from aiaas.services.inference import estimate_tokens
    from tests.api.test_ratelimit import set_limits

    set_limits(db, org_a.id, rate_limit_tokens_per_minute=10_000)
    limiter = app.state.aiaas.services.ratelimit
    limiter._clock = lambda: 1000.0  # frozen: the bucket does not refill between readings

    def level() -> float:
        return next(v[1] for k, v in limiter._buckets.items() if k.startswith("t:"))

    texts = ["我的包裹还没有到，请帮我查一下!!", "great service... thank you (really)", "x"]
    await client.post("/v1/deployments", headers=org_a.headers, json={"name": "toy", "model": model_id})
    oip, hlen = codec.encode_request([codec.Tensor("text", "BYTES", (3,), np.array([t.encode() for t in texts],
                                                                                     dtype=object))])
    calls = [
        ("/v1/deployments/toy/predict", {"json": {"inputs": texts}}),
        ("/v1/classifications", {"json": {"model": model_id, "input": texts}}),
        ("/v1/embeddings", {"json": {"model": model_id, "input": texts}}),
        ("/v2/models/toy/infer", {"content": oip, "headers": org_a.headers | {
            codec.HEADER_LENGTH_HEADER: str(hlen), "content-type": "application/octet-stream"}}),
    ]
    read = 0
    for url, request in calls:
        before = level() if any(k.startswith("t:") for k in limiter._buckets) else 10_000
        r = await client.post(url, **({"headers": org_a.headers} | request))
        assert r.status_code == 200, (url, r.text)
        if url.startswith("/v1"):  # OIP answers carry no usage: the same texts read the same tokens
            read = r.json()["usage"]["prompt_tokens"]
        assert read != estimate_tokens(texts)  # the estimate was corrected, not merely right
        assert before - level() == read, url
        assert r.headers["x-ratelimit-remaining-tokens"] == str(int(level()))
