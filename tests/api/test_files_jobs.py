"""Files and fine-tuning jobs through the API, in process (the worker side is in tests/jobs)."""

from __future__ import annotations

import pytest

from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert


@pytest.fixture
def tiny_base(settings):
    return build_tiny_bert(settings.base_models_dir / "tiny-bert")


async def upload(client, org, content: bytes, name: str = "train.csv", purpose: str = "fine-tune"):
    return await client.post("/v1/files", headers=org.headers, files={"file": (name, content)},
                             data={"purpose": purpose})


async def test_file_lifecycle(client, org_a, org_b):
    r = await upload(client, org_a, toy_csv())
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["object"] == "file" and f["bytes"] == len(toy_csv()) and f["purpose"] == "fine-tune"
    assert f["summary"]["columns"] == ["text", "label"] and f["summary"]["rows"] == 40
    assert (await client.get(f"/v1/files/{f['id']}", headers=org_a.headers)).json()["id"] == f["id"]
    content = await client.get(f"/v1/files/{f['id']}/content", headers=org_a.headers)
    assert content.content == toy_csv()
    listed = (await client.get("/v1/files", headers=org_a.headers)).json()
    assert [x["id"] for x in listed["data"]] == [f["id"]]
    # Organisation B sees nothing of it.
    assert (await client.get("/v1/files", headers=org_b.headers)).json()["data"] == []
    for method, path in (("GET", f"/v1/files/{f['id']}"), ("GET", f"/v1/files/{f['id']}/content"),
                         ("DELETE", f"/v1/files/{f['id']}")):
        assert (await client.request(method, path, headers=org_b.headers)).status_code == 404
    r = await client.delete(f"/v1/files/{f['id']}", headers=org_a.headers)
    assert r.json() == {"id": f["id"], "object": "file", "deleted": True}
    assert (await client.get(f"/v1/files/{f['id']}", headers=org_a.headers)).status_code == 404


@pytest.mark.parametrize(
    ("content", "name", "fragment"),
    [
        (b"", "empty.csv", "empty"),
        (b"\x00\x01\x02\xff\xfe" * 200, "garbage.csv", "CSV"),
        (b"text,label\n", "header.csv", ""),
        ("text,label\n\xe4\xb8\xad,1\n".encode("latin-1", "ignore") + b"\xff\xfe\xfa\n", "bad.csv", ""),
    ],
)
async def test_hostile_uploads_are_clear_4xx(client, org_a, content, name, fragment):
    r = await upload(client, org_a, content, name)
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert err["code"] in ("invalid_file", "unsupported_file") and err["message"]
    assert fragment.lower() in err["message"].lower()
    assert (await client.get("/v1/files", headers=org_a.headers)).json()["data"] == []
    assert (await client.get("/healthz")).status_code == 200


async def test_upload_over_limit_is_413(client, org_a, settings):
    settings.max_upload_bytes = 1000
    r = await upload(client, org_a, b"text,label\n" + b"a,b\n" * 1000)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_bad_purpose(client, org_a):
    r = await upload(client, org_a, toy_csv(), purpose="assistants")
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"


async def test_job_create_checks_references(client, org_a, org_b, tiny_base):
    f = (await upload(client, org_a, toy_csv())).json()
    base = {"model": "tiny-bert", "training_file": f["id"]}

    r = await client.post("/v1/fine_tuning/jobs", headers=org_b.headers, json=base)
    assert r.status_code == 404 and r.json()["error"]["param"] == "training_file"
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=base | {"model": "nobody/nothing"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "base_model_unavailable"
    assert r.json()["error"]["param"] == "model"
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=base | {"label_column": "intent"})
    assert r.status_code == 400 and "'text', 'label'" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "label_column"
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers,
                          json=base | {"hyperparameters": {"n_epochs": 0}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "hyperparameters.n_epochs"
    for field, bad in (("layerwise_lr_decay", 0), ("layerwise_lr_decay", "x"), ("reinit_layers", 99),
                       ("reinit_pooler", "sometimes"), ("freeze_layers", 49), ("freeze_layers", "half")):
        r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers,
                              json=base | {"hyperparameters": {field: bad}})
        assert r.status_code == 400 and r.json()["error"]["param"] == f"hyperparameters.{field}", r.text

    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers,
                          json=base | {"suffix": "toy", "seed": 7, "metadata": {"team": "x"}})
    assert r.status_code == 200, r.text
    job = r.json()
    assert job["object"] == "fine_tuning.job" and job["status"] == "validating_files" and job["seed"] == 7
    assert job["hyperparameters"] == {
        "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto",
        "layerwise_lr_decay": "auto", "reinit_layers": "auto", "reinit_pooler": "auto", "freeze_layers": "auto",
    }  # fmt: skip
    assert (await client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=org_b.headers)).status_code == 404
    events = (await client.get(f"/v1/fine_tuning/jobs/{job['id']}/events", headers=org_a.headers)).json()
    assert events["data"][0]["object"] == "fine_tuning.job.event"

    # Cancel a queued job: ends at once.
    r = await client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=org_a.headers)
    assert r.json()["status"] == "cancelled"
    r = await client.post(f"/v1/fine_tuning/jobs/{job['id']}/cancel", headers=org_a.headers)
    assert r.status_code == 400


async def test_models_list_has_base_models(client, org_a, tiny_base):
    ids = [m["id"] for m in (await client.get("/v1/models", headers=org_a.headers)).json()["data"]]
    assert "minilm-l6" in ids and "tiny-bert" in ids
    r = await client.get("/v1/models/ft:nope", headers=org_a.headers)
    assert r.status_code == 404
    r = await client.delete("/v1/models/minilm-l6", headers=org_a.headers)
    assert r.status_code == 400
