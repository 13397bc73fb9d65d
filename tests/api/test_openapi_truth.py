"""The OpenAPI document tells the truth.

In process: every operation declares its success schema and its errors, each error status with the error
envelope and an example per code that the status really carries (the code -> status table). On a live
server (uvicorn on a socket, real objects behind it): every documented request example is sent and must
get the documented success status, and every answer the test provokes (the examples', and a GET of every
route it can fill the path of) must match the documented schema exactly: no field missing that the schema
requires, and no field the schema does not name.
"""

from __future__ import annotations

import copy
import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiaas.core.errors import HTTP_STATUS, type_for
from tests.api.conftest import make_org
from tests.helpers.datasets import toy_csv

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/v2"), ("GET", "/v2/health/live"),
          ("GET", "/v2/health/ready")}
# The documented examples name objects by these placeholders; the test puts its real ones in their place.
MODEL_ID = "ft:minilm-l6:acme:support:ftjob-abc123"
FILE_ID = "file-abc123"
# Examples that create what later ones use run first.
ORDER = ["/v1/api_keys", "/v1/fine_tuning/jobs", "/v1/deployments", "/v1/deployments/{name}/predict",
         "/v1/classifications"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method.upper(), path, op) for path, item in spec["paths"].items() for method, op in item.items()]


def strict(schema: Any) -> Any:
    """The schema with every object that names its properties closed to others (additionalProperties
    false where the document leaves it open by default): answers must carry only documented fields."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def problems_of(spec: dict, schema: dict, body: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    root = {**copy.deepcopy(schema), "components": strict(spec["components"])}
    return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
            for e in Draft202012Validator(strict(root)).iter_errors(body)]


# ---- in process: what every operation declares ------------------------------------------------------

def test_every_operation_declares_its_answer_and_its_error_codes(app):
    spec = app.openapi()
    envelopes = {"#/components/schemas/ErrorResponse", "#/components/schemas/OipErrorResponse"}
    checked_examples = 0
    for method, path, op in operations(spec):
        where = f"{method} {path}"
        responses = op["responses"]
        ok = [s for s in responses if s.startswith("2")]
        assert ok, f"{where} declares no success answer"
        for status in ok:
            content = responses[status].get("content") or {}
            assert content and all(m.get("schema") for m in content.values()), f"{where} {status}: no schema"
        errors = {s: r for s, r in responses.items() if s[0] in "45" and r["content"]["application/json"]
                  ["schema"].get("$ref") in envelopes}
        assert "500" in errors and "400" in errors, f"{where} declares no 400/500 error envelope"
        if (method, path) not in PUBLIC:
            assert {"401", "403"} <= set(errors), f"{where} does not declare its key and scope errors"
        if method == "POST" and (method, path) not in PUBLIC:
            assert {"409", "422"} <= set(errors), f"{where} does not declare the Idempotency-Key errors"
        for status, response in errors.items():
            media = response["content"]["application/json"]
            examples = media.get("examples") or {}
            assert examples, f"{where} {status}: no example of its codes"
            for code, example in examples.items():
                assert HTTP_STATUS[code] == int(status), f"{where}: {code} is documented under {status}"
                assert f"`{code}`" in response["description"]
                assert not problems_of(spec, media["schema"], example["value"]), (where, code)
                if path.startswith("/v1"):
                    assert example["value"]["error"]["code"] == code
                    assert example["value"]["error"]["type"] == type_for(int(status))
                checked_examples += 1
    print(f"{len(operations(spec))} operations, {checked_examples} error examples checked")
    assert checked_examples > 300


def test_the_document_has_no_generic_answers_left(app):
    """No success answer is an untyped object (FastAPI's default for a route returning a dict)."""
    spec = json.dumps(app.openapi())
    assert '"title": "Response ' not in spec


# ---- on a live server ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live(app):
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def seeded(settings, db, tmp_path: Path) -> dict[str, str]:
    """An organisation with a training file, a registered fine-tuned model and a job."""
    from aiaas.services import files as file_service
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.helpers.deployed import export_tiny_classifier, register
    from tests.helpers.tiny_bert import build_tiny_bert

    org = make_org(db, "acme")
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    model_id = "ft:tiny-bert:acme:support:ftjob-truth"
    register(settings, db, org.id, export_tiny_classifier(tmp_path), model_id=model_id,
             task="single_label_classification", labels=["negative", "positive"])
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        f = file_service.upload(s, blobs, org_id=org.id, src=io.BytesIO(toy_csv()), filename="train.csv",
                                purpose="fine-tune", max_bytes=10**8)
        file_id = f.id
        scored = file_service.upload(s, blobs, org_id=org.id, src=io.BytesIO(toy_csv()), filename="score.csv",
                                     purpose="batch", max_bytes=10**8)
    return {"key": org.key, "model": model_id, "file": file_id, "batch_file": scored.id}


def request_examples(spec: dict) -> list[tuple[str, str, Any, str]]:
    """(method, path, example body, documented success status) for every documented request example."""
    out = []
    for method, path, op in operations(spec):
        media = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
        if not media:
            continue
        values = [e["value"] for e in (media.get("examples") or {}).values()]
        ref = media["schema"].get("$ref", "")
        if ref:
            values += spec["components"]["schemas"][ref.rsplit("/", 1)[-1]].get("examples") or []
        status = min(s for s in op["responses"] if s.startswith("2"))
        out += [(method, path, v, status) for v in values]
    return sorted(out, key=lambda e: ORDER.index(e[1]) if e[1] in ORDER else len(ORDER))


def _check(spec: dict, method: str, path: str, resp: httpx.Response, status: str) -> list[str]:
    op = spec["paths"][path][method.lower()]
    documented = op["responses"].get(str(resp.status_code))
    if documented is None:
        return [f"{method} {path} answered {resp.status_code}, which it does not document: {resp.text[:300]}"]
    media = resp.headers["content-type"].split(";")[0]
    if media != "application/json":
        return [] if media in (documented.get("content") or {}) else [f"{method} {path}: undocumented {media}"]
    schema = documented["content"]["application/json"]["schema"]
    return [f"{method} {path} -> {resp.status_code}: {p}" for p in problems_of(spec, schema, resp.json())]


@pytest.mark.slow
def test_documented_examples_and_answers_hold_on_the_live_server(app, live, seeded):
    spec = httpx.get(f"{live}/openapi.json", timeout=120).json()
    headers = {"Authorization": f"Bearer {seeded['key']}"}
    problems: list[str] = []
    sent = 0
    with httpx.Client(base_url=live, headers=headers, timeout=60) as client:
        for method, path, example, status in request_examples(spec):
            body = json.loads(json.dumps(example).replace(MODEL_ID, seeded["model"]).replace(FILE_ID, seeded["file"]))
            resp = client.request(method, path.format(name="support"), json=body)
            sent += 1
            if str(resp.status_code) != status:
                problems.append(f"example {method} {path} {example} -> {resp.status_code} (documented {status}): "
                                f"{resp.text[:300]}")
            problems += _check(spec, method, path, resp, status)
        ids = _real_ids(client, seeded)
        gets = 0
        for method, path, op in operations(spec):
            if method != "GET" or "stream" in path:
                continue
            try:
                url = path.format(**ids)
            except KeyError:
                continue
            resp = client.get(url)
            gets += 1
            problems += _check(spec, method, path, resp, "200")
            if 400 <= resp.status_code < 500:
                problems.append(f"GET {url} -> {resp.status_code}: the test should reach a real object")
    print(f"{sent} documented request examples sent, {gets} GET routes read, all checked against the document")
    assert sent >= 5 and gets >= 30
    assert not problems, "\n".join(problems)


def _real_ids(client: httpx.Client, seeded: dict[str, str]) -> dict[str, str]:
    job = client.get("/v1/fine_tuning/jobs").json()["data"][0]["id"]
    registered = client.get("/v1/registered_models").json()["data"][0]["name"]
    hook = client.post("/v1/webhooks", json={"url": "https://93.184.215.14/hook", "events": ["fine_tuning.job.*"]})
    assert hook.status_code == 201, hook.text
    batch = client.post("/v1/batches", json={"input_file_id": seeded["batch_file"], "endpoint": "/v1/classifications",
                                             "deployment": "support", "text_column": "text"})
    ids = {"file_id": seeded["file"], "fine_tuning_job_id": job, "model": seeded["model"], "name": "support",
           "model_name": "support", "model_version": "1", "registered_model": registered, "version": "1",
           "webhook_id": hook.json()["id"]}
    if batch.status_code == 200:
        ids["batch_id"] = batch.json()["id"]
    else:
        print(f"no batch to read (GET /v1/batches/{{batch_id}} not checked): {batch.text[:200]}")
    return ids
