"""schemathesis over the whole OpenAPI document, in process (`schemathesis.openapi.from_asgi`).

Every operation gets a capped, seeded (hypothesis.seed) number of schema-valid and
schema-violating cases, all sent with an admin key. Path parameters and a few body
fields are sometimes swapped for the ids of real objects (a file, a cancelled job, a
registered model, a deployment), so the fuzzer reaches past the 404s into the code
that handles real rows. Destructive operations only ever get generated ids.

Two properties, asserted by two tests over one run per backend: no response is a
5xx (and no request crashes the transport); every response conforms to the schema
(status code declared, content type declared, body and headers valid).
"""

from __future__ import annotations

import collections
import io
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.datasets import toy_csv
from tests.hostile.conftest import SQLITE_ONLY, Admin, make_admin

pytestmark = pytest.mark.slow

SEED = 6_10_11
MAX_EXAMPLES = {"sqlite": (16, 8), "postgres": (6, 3)}  # (positive, negative) per operation
REQUEST_TIMEOUT_S = 30
OIP_CASES = 400


@dataclass
class Fuzz:
    cases: int = 0
    by_mode: collections.Counter = field(default_factory=collections.Counter)
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_operation: collections.Counter = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    nonconforming: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    rule_checked: bool = False  # _nothing_to_negate was tried on one operation
    rule_broken: list[str] = field(default_factory=list)  # ...and that operation had negative cases after all

    def conformance_report(self) -> str:
        lines = [f"{sum(self.nonconforming.values())} nonconforming responses in {self.cases} cases:"]
        for (check, method, path, status), n in sorted(self.nonconforming.items()):
            lines.append(f"  {check:28s} {method.upper():6s} {path} -> {status} x{n}: "
                         f"{self.examples[(check, method, path, status)]}")
        return "\n".join(lines)


@dataclass
class Objects:
    """Real rows the fuzzer may aim at."""

    file_id: str
    job_id: str
    model_id: str
    deployment: str
    key_id: str


def _seed_objects(settings, db, admin: Admin, tmp_path: Path) -> Objects:
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service
    from aiaas.store import deployments as dep_store
    from aiaas.store import jobs as job_store
    from aiaas.store import tenancy
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.helpers.deployed import export_tiny_classifier, register
    from tests.helpers.tiny_bert import build_tiny_bert

    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    model_id = "ft:tiny-bert:hostile:fuzz:ftjob-fuzz"
    register(settings, db, admin.org_id, export_tiny_classifier(tmp_path), model_id=model_id,
             task="single_label_classification", labels=["negative", "positive"])
    with db.session() as s:
        f = file_service.upload(s, blobs, org_id=admin.org_id, src=io.BytesIO(toy_csv()), filename="train.csv",
                                purpose="fine-tune", max_bytes=10**8)
        job = job_service.create_job(s, settings, org_id=admin.org_id,
                                     body=JobCreate(model="tiny-bert", training_file=f.id))
        job_store.request_cancel(s, admin.org_id, job.id)  # terminal: its event stream ends
        dep = dep_store.create_deployment(s, admin.org_id, name="fuzz-dep", model=model_id, min_replicas=0)
        key_id = tenancy.list_keys(s, admin.org_id, after=None, limit=1, order="asc")[0][0].id
        return Objects(f.id, job.id, model_id, dep.name, key_id)


def _aim(case, objects: Objects, method: str) -> None:
    """Point the case at real objects (never for DELETE: the fuzzer must not remove its own targets)."""
    if method == "delete":
        return
    real = {"file_id": objects.file_id, "fine_tuning_job_id": objects.job_id, "model": objects.model_id,
            "name": objects.deployment, "model_name": objects.deployment, "model_version": "1"}
    params = case.path_parameters
    if params:
        for name in list(params):
            if name in real:
                params[name] = real[name]
    body = case.body
    if isinstance(body, dict):
        if "training_file" in body:
            body["training_file"] = objects.file_id
            body["model"] = "tiny-bert"
        elif "model" in body:
            body["model"] = objects.model_id


def _send(fuzz: Fuzz, case, op, label: str, headers: dict[str, str]) -> None:
    """One case: call the app, then judge the answer twice (server error; schema conformance)."""
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    fuzz.cases += 1
    try:
        response = case.call(headers=headers, timeout=REQUEST_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - an app crash surfaces here; so does an unsendable request
        fuzz.transport_errors.append(f"{label}: {type(exc).__name__}: {str(exc)[:200]}")
        return
    fuzz.statuses[response.status_code] += 1
    fuzz.by_operation[(op.method.upper(), op.path, response.status_code)] += 1
    try:
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
    except FailureGroup:
        fuzz.server_errors.append(f"{label} -> {response.status_code}: {case.as_curl_command(headers=headers)[:400]}"
                                  f"\n    {response.content[:300]!r}")
    conformance = [status_code_conformance, content_type_conformance, response_schema_conformance,
                   response_headers_conformance]
    try:
        case.validate_response(response, checks=conformance, headers=headers)
    except FailureGroup as group:
        for failure in group.exceptions:
            key = (type(failure).__name__, op.method, op.path, response.status_code)
            fuzz.nonconforming[key] += 1
            fuzz.examples.setdefault(key, f"{failure.title}; body {response.content[:160]!r}")


def _nothing_to_negate(raw: dict) -> bool:
    """No body, and no parameter but plain-string path segments (or none): every schema-violating draw is
    rejected (a URL segment is a string whatever is drawn), so hypothesis gives up as Unsatisfiable after
    ~460 rejected draws: 37 of 128 runs, 61% of the run's seconds, and not one case sent."""
    params = raw.get("parameters") or []
    plain = all(p.get("in") == "path" and {k: v for k, v in (p.get("schema") or {}).items() if k != "title"}
                == {"type": "string"} for p in params)
    return plain and "requestBody" not in raw


def _fuzz_operation(fuzz: Fuzz, op, mode, examples: int, objects: Objects, headers: dict[str, str]) -> None:
    """`examples` derandomized cases for one operation in one generation mode."""
    from hypothesis import HealthCheck, Phase, given, seed
    from hypothesis import settings as hyp_settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    label = f"{op.method.upper()} {op.path} [{mode.value}]"
    checked_rule = False
    if mode.value == "negative" and _nothing_to_negate(op.definition.raw):
        if fuzz.rule_checked:
            fuzz.skipped.append(label)  # what Unsatisfiable below would say, minus ~460 rejected draws
            return
        fuzz.rule_checked = checked_rule = True  # the first such operation still runs: the rule must hold

    @seed(SEED)  # the same draws every run, whatever else changes in this file
    @hyp_settings(max_examples=examples, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode), aim=st.booleans())
    def one(case, aim: bool) -> None:
        if aim:
            _aim(case, objects, op.method)
        fuzz.by_mode[mode.value] += 1
        _send(fuzz, case, op, label, headers)

    try:
        one()
    except Unsatisfiable:
        fuzz.skipped.append(label)  # nothing to make invalid (e.g. only string path parameters)
    else:
        if checked_rule:
            fuzz.rule_broken.append(label)


def run_fuzz(app, admin: Admin, objects: Objects, backend: str, scratch: Path) -> Fuzz:
    import schemathesis
    from hypothesis.configuration import set_hypothesis_home_dir
    from schemathesis import GenerationMode

    set_hypothesis_home_dir(scratch)  # hypothesis caches under ./.hypothesis otherwise: keep the checkout clean
    positive, negative = MAX_EXAMPLES[backend]
    fuzz = Fuzz()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        op = result.ok()
        _fuzz_operation(fuzz, op, GenerationMode.POSITIVE, positive, objects, admin.headers)
        _fuzz_operation(fuzz, op, GenerationMode.NEGATIVE, negative, objects, admin.headers)
    return fuzz


_RUNS: dict[str, Fuzz] = {}


@pytest.fixture
def fuzz(settings, db, database_url: str, tmp_path: Path) -> Fuzz:
    """One fuzzing run per backend, shared by the tests below."""
    backend = "sqlite" if database_url.startswith("sqlite") else "postgres"
    if backend not in _RUNS:
        from aiaas.api.app import create_app

        admin = make_admin(db, "hostile")
        objects = _seed_objects(settings, db, admin, tmp_path)
        app = create_app(settings, db=db, migrate_db=False)
        try:
            _RUNS[backend] = run_fuzz(app, admin, objects, backend, tmp_path / "hypothesis")
        finally:
            from schemathesis.python import asgi

            asgi.shutdown_lifespans()  # the app's lifespan ends with the test, not at interpreter exit
    return _RUNS[backend]


def test_fuzzed_api_never_answers_5xx(fuzz: Fuzz) -> None:
    print(f"schemathesis: {fuzz.cases} cases {dict(fuzz.by_mode)}, statuses {dict(fuzz.statuses)}, "
          f"no negative cases possible for {len(fuzz.skipped)} operations")
    reached = sorted({f"{m} {p}" for (m, p, status), _ in fuzz.by_operation.items() if status < 300})
    print(f"operations answered 2xx at least once: {len(reached)}: {reached}")
    assert fuzz.cases >= 200
    assert fuzz.rule_checked, "no operation tried _nothing_to_negate"
    assert not fuzz.rule_broken, f"{fuzz.rule_broken} had negative cases: fix _nothing_to_negate"
    assert not fuzz.server_errors, f"{len(fuzz.server_errors)} server errors:\n" + "\n".join(fuzz.server_errors[:20])
    # A request the transport could not even send is the fuzzer's problem; one the app crashed on is ours.
    crashes = [t for t in fuzz.transport_errors if "InvalidHeader" not in t and "InvalidURL" not in t]
    assert not crashes, "\n".join(crashes[:20])


def test_fuzzed_responses_conform_to_the_schema(fuzz: Fuzz) -> None:
    assert not fuzz.nonconforming, fuzz.conformance_report()


EDGE_INTEGERS = [2**63, 2**64, -(2**63) - 1, 10**30, 2**31, -1, 0]


async def test_integer_query_parameters_at_their_edges(app, client, settings, db, admin) -> None:
    """Every integer query parameter of every GET, one at a time, at 64-bit edges and beyond: a value the
    database cannot hold must be refused (4xx), not overflow into a 500. Pinned cases: the fuzzer's draws
    move whenever this file changes, these do not."""
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service
    from aiaas.store import jobs as job_store
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.helpers.tiny_bert import build_tiny_bert

    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        f = file_service.upload(s, blobs, org_id=admin.org_id, src=io.BytesIO(toy_csv()), filename="t.csv",
                                purpose="fine-tune", max_bytes=10**8)
        job = job_service.create_job(s, settings, org_id=admin.org_id,
                                     body=JobCreate(model="tiny-bert", training_file=f.id))
        job_store.request_cancel(s, admin.org_id, job.id)
        ids = {"file_id": f.id, "fine_tuning_job_id": job.id}
    problems, sent = [], 0
    for path, item in app.openapi()["paths"].items():
        op = item.get("get")
        if not op or any(p["in"] == "path" and p["name"] not in ids for p in op.get("parameters", [])):
            continue
        url = path.format(**ids)
        for param in op.get("parameters", []):
            types = {param["schema"].get("type")} | {s.get("type") for s in param["schema"].get("anyOf", [])}
            if param["in"] != "query" or "integer" not in types:
                continue
            for value in EDGE_INTEGERS:
                sent += 1
                resp = await client.get(url, params={param["name"]: str(value)})
                if resp.status_code >= 500:
                    problems.append(f"GET {url}?{param['name']}={value} -> {resp.status_code}")
    assert sent > 20
    assert not problems, "\n".join(problems)


# --- OIP v2 inference bodies: the one body the OpenAPI document cannot describe ------------------

OIP_DATATYPES = ["BYTES", "FP32", "INT64", "BOOL", "UINT8", "FP16", "XX", "", None, 7, [], {}, ["BYTES"]]
OIP_SHAPES = [[1], [2], [0], [-1], [2, 1], [1, 2], [2**40], [3, 3], [], [1, 1, 1], "2", [1.5], [True], None]
OIP_DATA = [["hello"], ["a", "b"], [1, 2], [[1]], [], None, [None], ["x" * 100], [1.5], [True], "str", [{"a": 1}],
            [[["deep"]]], [2**70], ["\u202e\u0000"]]


def oip_body(rng) -> tuple[bytes, dict[str, str]]:
    """A seeded, mostly well-formed OIP v2 request with one or two things wrong."""
    import json

    def tensor() -> dict:
        texts = rng.choice([["great service thank you"], ["login fails", "refund my money"], ["", "\u202e"]])
        t: dict = {"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}
        for _ in range(rng.choice([0, 0, 1, 1, 2])):  # a third of the tensors stay valid
            field_name = rng.choice(["name", "datatype", "shape", "data", "parameters", "drop"])
            if field_name == "drop":
                t.pop(rng.choice(["name", "datatype", "shape", "data"]), None)
            elif field_name == "parameters":
                t["parameters"] = rng.choice([{"binary_data_size": v} for v in (0, 4, 8, -1, 2**40, "x", None)]
                                             + [[], "p", {"binary_data": True}])
            else:
                t[field_name] = rng.choice({"name": ["x", "", None, 5], "datatype": OIP_DATATYPES,
                                            "shape": OIP_SHAPES, "data": OIP_DATA}[field_name])
        return t

    body: dict = {"inputs": [tensor() for _ in range(rng.choice([1, 1, 1, 2]))]}
    if rng.random() < 0.3:
        body["outputs"] = rng.choice([[{"name": "label"}], [{"name": "nope"}], [{}], {}, "x", [{"name": 1}],
                                      [{"name": "scores", "parameters": {"binary_data": True}}]])
    if rng.random() < 0.3:
        body["parameters"] = rng.choice([{"binary_data_output": True}, [], "x", {"binary_data_output": "yes"}])
    if rng.random() < 0.1:
        body["inputs"] = rng.choice([[], {}, "text", None])
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if rng.random() < 0.3:  # the binary extension: a header length and trailing bytes that may not add up
        extra = rng.randbytes(rng.randint(0, 40))
        headers["Inference-Header-Content-Length"] = str(rng.choice([len(raw), len(raw) - 1, 0, -1, "x",
                                                                     len(raw) + len(extra), 2**70]))
        raw += extra
    return raw, headers


@SQLITE_ONLY
async def test_oip_infer_bodies_never_answer_5xx(client, settings, db, admin, tmp_path: Path) -> None:
    import random

    objects = _seed_objects(settings, db, admin, tmp_path)
    rng = random.Random(SEED)
    problems, statuses = [], collections.Counter()
    for _ in range(OIP_CASES):
        raw, headers = oip_body(rng)
        name = rng.choice([objects.deployment, objects.model_id])
        resp = await client.post(f"/v2/models/{name}/infer", content=raw, headers=headers)
        statuses[resp.status_code] += 1
        if resp.status_code >= 500:
            problems.append(f"POST /v2/models/{name}/infer -> {resp.status_code}: {raw[:240]!r} {headers}")
        elif resp.status_code >= 400 and not isinstance(resp.json().get("error"), str):
            problems.append(f"OIP error body is not {{'error': str}}: {resp.text[:200]}")
    print(f"OIP v2 infer: {OIP_CASES} bodies, statuses {dict(statuses)}")
    assert statuses[200] > 0, "no case reached the model: the generator is too hostile to test anything deep"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:15])
