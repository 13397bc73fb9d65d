"""Cross-tenant matrix: organisation B's key against every id-bearing route of organisation A's objects.

Every route with a path parameter, and every request body field that names an object, must answer B exactly
as it answers a missing id (404, same body up to the id itself), leak none of A's bytes, and list routes must
never show A's rows. A new id-bearing route or body field that this table does not cover makes the test fail.
"""

from __future__ import annotations

import json
import re

import pytest

from aiaas.core.ids import new_id
from aiaas.store import webhooks as webhook_store
from tests.helpers.datasets import toy_csv
from tests.helpers.deployed import export_tiny_classifier, register
from tests.helpers.tiny_bert import build_tiny_bert

MODEL = "ft:tiny-bert:org-a:matrix:ftjob-9"

# Path parameter name -> which of A's objects it names.
PATH_PARAMS = {
    "key_id": "key",
    "file_id": "file",
    "fine_tuning_job_id": "job",
    "model": "model",
    "name": "deployment",
    "model_name": "deployment",
    "model_version": "version",
    "registered_model": "registered_model",
    "version": "version",
    "alias": "alias",
    "webhook_id": "webhook",
    "batch_id": "batch",
}
# Request bodies that name objects: (method, path) -> body template, "{x}" filled with A's (or a missing) id.
BODY_REFS = {
    ("POST", "/v1/fine_tuning/jobs"): [
        {"model": "tiny-bert", "training_file": "{file}"},
        {"model": "tiny-bert", "training_file": "{file_b}", "validation_file": "{file}"},
    ],
    ("POST", "/v1/deployments"): [{"name": "stolen", "model": "{model}"}],
    ("POST", "/v1/embeddings"): [{"model": "{model}", "input": "x"}, {"model": "{deployment}", "input": "x"}],
    ("POST", "/v1/classifications"): [{"model": "{model}", "input": "x"}, {"model": "{deployment}", "input": "x"}],
    ("PATCH", "/v1/deployments/{name}"): [{"model": "{model}"}, {"traffic": [{"model": "{model}", "weight": 100}]}],
    ("POST", "/v1/batches"): [
        {"input_file_id": "{file}", "endpoint": "/v1/classifications"},
        {"input_file_id": "{batch_file_b}", "endpoint": "/v1/classifications", "text_column": "text",
         "model": "{model}"},
        {"input_file_id": "{batch_file_b}", "endpoint": "/v1/classifications", "text_column": "text",
         "deployment": "{deployment}"},
    ],
}
# Body fields that name objects; any request schema with one of these must appear in BODY_REFS.
REF_FIELDS = {"training_file", "validation_file", "model", "file_id", "deployment", "key_id", "input_file_id"}
# Bodies for routes with a path id that also need a body.
PATH_BODIES = {
    "/v1/deployments/{name}/predict": {"inputs": ["x"]},
    "/v2/models/{model_name}/infer": {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                                  "data": ["x"]}]},
    "/v2/models/{model_name}/versions/{model_version}/infer": {
        "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
    "/v1/registered_models/{registered_model}/aliases/{alias}": {"version": 1},
    "/v1/deployments/{name}": {"model": "x"},
    "/v1/registered_models/{registered_model}/versions": {"checkpoint": "ftckpt-0000000000000000000000000"},
}
MISSING = {"key": "key-0000000000000000000000000", "file": "file-0000000000000000000000000",
           "job": "ftjob-0000000000000000000000000", "model": "ft:tiny-bert:x::ftjob-0", "deployment": "nothing-here",
           "version": "1", "registered_model": "nothing-registered", "alias": "no-alias",
           "webhook": "wh-0000000000000000000000000", "batch": "batch-0000000000000000000000000"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("matrix"))


@pytest.fixture
async def objects_a(client, settings, db, org_a, org_b, artifact):
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    h = org_a.headers
    f = (await client.post("/v1/files", headers=h, files={"file": ("a.csv", toy_csv())},
                           data={"purpose": "fine-tune"})).json()
    job = (await client.post("/v1/fine_tuning/jobs", headers=h,
                             json={"model": "tiny-bert", "training_file": f["id"]})).json()
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    dep = (await client.post("/v1/deployments", headers=h, json={"name": "secret-dep", "model": MODEL})).json()
    key = (await client.post("/v1/api_keys", headers=h, json={"name": "a-key"})).json()
    await client.put("/v1/registered_models/matrix/aliases/production", headers=h, json={"version": 1})
    fb = (await client.post("/v1/files", headers=org_b.headers, files={"file": ("b.csv", toy_csv(seed=1))},
                            data={"purpose": "fine-tune"})).json()
    with db.session() as s:  # directly: creating one through the API needs a URL that resolves publicly
        hook = webhook_store.create_endpoint(s, org_a.id, endpoint_id=new_id("wh"), url="https://hooks.a.test/x",
                                             events=["deployment.drift"], description=None, sealed_secret=b"x").id
    bf = (await client.post("/v1/files", headers=h, files={"file": ("a.jsonl", b'{"custom_id": "x"}\n')},
                            data={"purpose": "batch"})).json()
    batch = (await client.post("/v1/batches", headers=h,
                               json={"input_file_id": bf["id"], "endpoint": "/v1/classifications"})).json()
    bfb = (await client.post("/v1/files", headers=org_b.headers, files={"file": ("b.csv", toy_csv(seed=2))},
                             data={"purpose": "batch"})).json()
    return {"key": key["id"], "file": f["id"], "job": job["id"], "model": MODEL, "deployment": dep["name"],
            "version": "1", "registered_model": "matrix", "alias": "production", "file_b": fb["id"], "webhook": hook,
            "batch": batch["id"], "batch_file_b": bfb["id"],
            "_secrets": [f["id"], job["id"], MODEL, "secret-dep", key["id"], "a.csv", hook, "hooks.a.test", batch["id"]]}


def _spec_routes(app) -> list[tuple[str, str, dict]]:
    spec = app.openapi()
    return [(m.upper(), p, op) for p, ops in spec["paths"].items() for m, op in ops.items()]


def _fill(path: str, ids: dict) -> str:
    def sub(m: re.Match) -> str:
        name = m.group(1)
        assert name in PATH_PARAMS, f"path parameter {{{name}}} in {path} is not covered by the tenant matrix"
        return ids[PATH_PARAMS[name]]

    return re.sub(r"\{([^}]+)\}", sub, path)


def _normalise(resp, ids: dict) -> tuple[int, str]:
    text = resp.text
    for v in sorted((v for k, v in ids.items() if not k.startswith("_") and isinstance(v, str)), key=len,
                    reverse=True):
        text = text.replace(v, "<ID>")
    try:
        body = json.loads(text)
    except ValueError:
        return resp.status_code, text
    if isinstance(body.get("error"), dict):
        body["error"].pop("request_id", None)
    return resp.status_code, json.dumps(body, sort_keys=True)


async def test_every_id_route_answers_foreign_ids_like_missing_ones(app, client, org_a, org_b, objects_a):
    covered = 0
    for method, path, _op in _spec_routes(app):
        if "{" not in path:
            continue
        body = PATH_BODIES.get(path)
        kwargs = {"json": body} if body is not None else {}
        foreign = await client.request(method, _fill(path, objects_a), headers=org_b.headers, **kwargs)
        missing = await client.request(method, _fill(path, MISSING), headers=org_b.headers, **kwargs)
        assert foreign.status_code == 404, (method, path, foreign.status_code, foreign.text)
        assert _normalise(foreign, objects_a) == _normalise(missing, MISSING), (method, path)
        for secret in objects_a["_secrets"]:
            if secret not in _fill(path, objects_a):
                assert secret not in foreign.text, (method, path, secret)
        covered += 1
    assert covered >= 19, covered  # every id-bearing route at the time of writing
    # A's objects are untouched (B's DELETEs and cancels did nothing).
    h = org_a.headers
    assert (await client.get(f"/v1/files/{objects_a['file']}", headers=h)).status_code == 200
    assert (await client.get(f"/v1/deployments/{objects_a['deployment']}", headers=h)).status_code == 200
    assert (await client.get(f"/v1/models/{MODEL}", headers=h)).status_code == 200
    job = (await client.get(f"/v1/fine_tuning/jobs/{objects_a['job']}", headers=h)).json()
    assert job["status"] != "cancelled"
    batch = (await client.get(f"/v1/batches/{objects_a['batch']}", headers=h)).json()
    assert batch["status"] == "validating"
    keys = (await client.get("/v1/api_keys", headers=h)).json()["data"]
    assert next(k for k in keys if k["id"] == objects_a["key"])["revoked_at"] is None
    assert (await client.get(f"/v1/webhooks/{objects_a['webhook']}", headers=h)).status_code == 200


async def test_body_references_to_foreign_objects_are_404(app, client, org_a, org_b, objects_a):
    # Every request body that names an object is in the table.
    spec = app.openapi()
    schemas = spec.get("components", {}).get("schemas", {})
    for method, path, op in _spec_routes(app):
        ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
               .get("$ref", ""))
        fields = set(schemas.get(ref.rsplit("/", 1)[-1], {}).get("properties", {})) if ref else set()
        if fields & REF_FIELDS:
            assert (method, path) in BODY_REFS, f"{method} {path} names objects in its body but is not covered"
    for (method, path), templates in BODY_REFS.items():
        for template in templates:
            def fill(ids: dict, t: dict = template) -> dict:
                return {k: v.format(**ids) if isinstance(v, str) else v for k, v in t.items()}

            foreign = await client.request(method, path, headers=org_b.headers,
                                           json=fill({k: v for k, v in objects_a.items() if k != "_secrets"}))
            missing = await client.request(method, path, headers=org_b.headers,
                                           json=fill(MISSING | {"file_b": objects_a["file_b"],
                                                                  "batch_file_b": objects_a["batch_file_b"]}))
            assert foreign.status_code == 404, (path, template, foreign.text)
            assert _normalise(foreign, objects_a) == _normalise(missing, MISSING), (path, template)


async def test_lists_never_show_foreign_rows(app, client, org_b, objects_a):
    for method, path, _op in _spec_routes(app):
        if method != "GET" or "{" in path or path in ("/healthz", "/readyz", "/metrics", "/v2", "/v2/health/live",
                                                      "/v2/health/ready", "/openapi.json"):
            continue
        r = await client.get(path, headers=org_b.headers)
        assert r.status_code in (200, 403), (path, r.status_code)
        for secret in objects_a["_secrets"]:
            assert secret not in r.text, (path, secret)
