"""Open Inference Protocol v2 in process: JSON, binary tensors, gzip, metadata and errors."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from aiaas.serving import oip_codec as codec
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:oip:ftjob-2"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("oip"))


@pytest.fixture
async def deployed(client, settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "sent", "model": MODEL})
    assert r.status_code == 201
    return "sent"


async def test_server_endpoints(client):
    assert (await client.get("/v2")).json()["extensions"] == ["binary_tensor_data"]
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).status_code == 200


async def test_metadata_and_listing(client, org_a, org_b, deployed):
    meta = (await client.get(f"/v2/models/{deployed}", headers=org_a.headers)).json()
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in meta["outputs"]] == ["label", "scores"] and meta["outputs"][1]["shape"] == [-1, 2]
    # Not loaded until its first request: not ready (503, as tritonclient's is_model_ready reads it).
    r = await client.get(f"/v2/models/{deployed}/versions/1/ready", headers=org_a.headers)
    assert r.status_code == 503 and r.json() == {"name": deployed, "ready": False}
    r = await client.get(f"/v2/models/{deployed}/versions/7", headers=org_a.headers)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    r = await client.get(f"/v2/models/{deployed}", headers=org_b.headers)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)
    names = [m["name"] for m in (await client.get("/v2/models", headers=org_a.headers)).json()["models"]]
    assert deployed in names and MODEL in names
    assert (await client.get("/v2/models", headers=org_b.headers)).json()["models"] == []


async def test_json_infer(client, org_a, deployed):
    body = {"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                    "data": ["great service", "app crashes"]}]}
    r = await client.post(f"/v2/models/{deployed}/infer", headers=org_a.headers, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == "r1" and out["model_name"] == deployed
    by = {o["name"]: o for o in out["outputs"]}
    assert by["label"]["shape"] == [2] and set(by["label"]["data"]) <= {"negative", "positive"}
    scores = np.array(by["scores"]["data"]).reshape(by["scores"]["shape"])
    assert scores.shape == (2, 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    # Loaded by that request: ready, under its deployment name and its model id alike.
    for name, path in ((deployed, "ready"), (deployed, "versions/1/ready"), (MODEL, "ready")):
        r = await client.get(f"/v2/models/{name}/{path}", headers=org_a.headers)
        assert r.status_code == 200 and r.json() == {"name": name, "ready": True}, (name, path)
    assert (await client.get(f"/v2/models/{deployed}/versions/2/ready", headers=org_a.headers)).status_code == 404
    assert (await client.get("/v2/models/nope/ready", headers=org_a.headers)).status_code == 404


async def test_binary_and_gzip_infer(client, org_a, deployed):
    texts = np.array([b"great service", "\u4e2d\u6587 text".encode()], dtype=object)
    req_body, hlen = codec.encode_request(
        [codec.Tensor("text", "BYTES", (2,), texts)],
        outputs=[codec.RequestedOutput("scores", {"binary_data": True}), codec.RequestedOutput("label")],
    )
    headers = org_a.headers | {codec.HEADER_LENGTH_HEADER: str(hlen), "content-type": "application/octet-stream"}
    r = await client.post(f"/v2/models/{deployed}/infer", headers=headers, content=req_body)
    assert r.status_code == 200, r.text
    header, tensors = codec.decode_response(r.content, r.headers[codec.HEADER_LENGTH_HEADER])
    by = {t.name: t for t in tensors}
    assert list(by) == ["scores", "label"] and by["scores"].data.shape == (2, 2)
    # The same request gzip-compressed answers the same.
    r2 = await client.post(f"/v2/models/{deployed}/infer", content=gzip.compress(req_body),
                           headers=headers | {"content-encoding": "gzip"})
    _, t2 = codec.decode_response(r2.content, r2.headers[codec.HEADER_LENGTH_HEADER])
    assert np.allclose(t2[0].data, by["scores"].data)


@pytest.mark.parametrize(
    ("body", "headers", "status", "fragment"),
    [
        (b"{not json", {}, 400, "json"),
        (json.dumps({"inputs": []}).encode(), {}, 400, "inputs"),
        (json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}).encode(), {},
         400, "text"),
        (json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode(), {},
         400, "BYTES"),
        (json.dumps({"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}).encode(), {},
         400, ""),
        (b'{"inputs": []}', {codec.HEADER_LENGTH_HEADER: "999"}, 400, "Inference-Header-Content-Length"),
        (b"\x1f\x8b garbage", {"content-encoding": "gzip"}, 400, "decompress"),
        (gzip.compress(b" " * 5_000_000), {"content-encoding": "gzip"}, 413, "limit"),
        (json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                     "outputs": [{"name": "nope"}]}).encode(), {}, 400, "nope"),
    ],
)
async def test_oip_errors(client, org_a, deployed, body, headers, status, fragment):
    r = await client.post(f"/v2/models/{deployed}/infer", content=body,
                          headers=org_a.headers | {"content-type": "application/json"} | headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert isinstance(err, str) and fragment.lower() in err.lower()
    assert (await client.get("/v2/health/live")).status_code == 200


async def test_oip_needs_key(client, deployed):
    r = await client.post(f"/v2/models/{deployed}/infer", json={"inputs": []})
    assert r.status_code == 401 and isinstance(r.json()["error"], str)
