"""The shortcut (aiaas/api/fastpath.py) on /v1/classifications, /v1/embeddings and OIP v2 infer answers
byte for byte as the framework routes do: the same requests, good and bad, go to an app with the shortcut
and one without it (AIAAS_FAST_PREDICT_ROUTE=false) on one database, and their answers are compared."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from fastapi.routing import APIRoute

from aiaas.serving import oip_codec as codec
from tests.api.fastpath_pair import same_retry, shortcut_pair
from tests.api.test_ratelimit import set_limits
from tests.helpers.deployed import export_tiny_classifier

MODEL = "ft:tiny-bert:org-a:fastr:ftjob-fastr"
DEPLOYMENT = "fastr"
# Headers that must agree (x-request-id differs by design; rate-limit counters by each app's history).
COMPARED_HEADERS = ("content-type", "content-length", "content-encoding", "x-aiaas-model", "retry-after",
                    "x-should-retry", "www-authenticate", "idempotent-replayed",
                    codec.HEADER_LENGTH_HEADER.lower())
SHORTCUT_PATHS = ("/v1/classifications", "/v1/embeddings", "/infer")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("fastr-art"))


@pytest.fixture
async def pair(settings, db, org_a, artifact):
    """(shortcut client, framework client): two apps on one database, one with the shortcut off."""
    async with shortcut_pair(settings, db, org_a, artifact, model_id=MODEL, deployment=DEPLOYMENT) as clients:
        yield clients


@pytest.fixture
def framework_calls(monkeypatch):
    """Requests to the shortcut's routes that reached FastAPI's route handling."""
    calls: list[str] = []
    original = APIRoute.handle

    async def counting(self, scope, receive, send):
        if scope["path"].endswith(SHORTCUT_PATHS):
            calls.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counting)
    return calls


def _comparable(r: httpx.Response) -> tuple:
    if r.status_code == 200:
        body: object = r.content  # byte for byte (floats included)
    else:
        body = r.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body["error"].pop("request_id", None)  # differs per request by design
    headers = {k: r.headers.get(k) for k in COMPARED_HEADERS}
    headers |= {k: r.headers[k] if "-limit-" in k else "present" for k in r.headers if k.startswith("x-ratelimit")}
    same_retry(r, body, headers)
    return r.status_code, body, headers


async def _both(pair, request: dict) -> tuple:
    fast, framework = pair
    a = await fast.request("POST", **request)
    b = await framework.request("POST", **request)
    assert a.headers["x-request-id"].startswith("req_") and b.headers["x-request-id"].startswith("req_")
    return _comparable(a), _comparable(b)


def _binary(texts: list[bytes], outputs: list[codec.RequestedOutput]) -> tuple[bytes, int]:
    import numpy as np

    return codec.encode_request([codec.Tensor("text", "BYTES", (len(texts),), np.array(texts, dtype=object))],
                                outputs=outputs)


def _cases(h: dict, scoped: dict, limit: int) -> list[tuple[dict, str]]:
    """(request, kind): kind "fast" is answered by the shortcut; "framework" goes on to the framework
    (a body FastAPI rejects, another content type); "edge" is answered before either (401, 413)."""
    json_h = h | {"content-type": "application/json"}
    oip = f"/v2/models/{DEPLOYMENT}/infer"
    oip_v = f"/v2/models/{DEPLOYMENT}/versions/1/infer"
    one = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["great", "awful day"]}]}
    binary, hlen = _binary([b"great service", "\u4e2d\u6587 text".encode()],
                           [codec.RequestedOutput("scores", {"binary_data": True}), codec.RequestedOutput("label")])
    bin_h = h | {codec.HEADER_LENGTH_HEADER: str(hlen), "content-type": "application/octet-stream"}
    cases: list[tuple[dict, str]] = []
    for path, field in (("/v1/classifications", "input"), ("/v1/embeddings", "input")):
        cases += [
            ({"url": path, "headers": h, "json": {"model": DEPLOYMENT, field: ["great service", "terrible"]}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: "one string"}}, "fast"),
            ({"url": path, "headers": json_h, "content": b"{"}, "framework"),
            ({"url": path, "headers": json_h, "content": b""}, "framework"),
            ({"url": path, "headers": h | {"content-type": "text/plain"},
              "content": json.dumps({"model": MODEL, field: "a"}).encode()}, "framework"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: "a", "extra": 1}}, "framework"),
            ({"url": path, "headers": h, "json": {"model": "", field: "a"}}, "framework"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: "a\u0000"}}, "framework"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: []}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: [1, 2]}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: [[1, 2]]}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: ["x" * 20001]}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": MODEL, field: ["a"] * 257}}, "fast"),
            ({"url": path, "headers": h, "json": {"model": "ft:nope", field: "a"}}, "fast"),
            ({"url": path, "json": {"model": MODEL, field: "a"}}, "edge"),
            ({"url": path, "headers": {"Authorization": "Bearer aiaas_sk_nope"}, "json": {"model": MODEL, field: "a"}},
             "edge"),
            ({"url": path, "headers": scoped, "json": {"model": MODEL, field: "a"}}, "fast"),
            ({"url": path, "headers": json_h, "content": b"x" * (limit + 1)}, "edge"),
        ]
    cases += [
        ({"url": "/v1/classifications", "headers": h, "json": {"model": MODEL, "input": ["ok", "bad"], "top_k": 1}},
         "fast"),
        ({"url": "/v1/classifications", "headers": h, "json": {"model": MODEL, "input": "ok", "top_k": 0}},
         "framework"),
        ({"url": "/v1/embeddings", "headers": h,
          "json": {"model": MODEL, "input": ["a b", "c"], "encoding_format": "base64", "dimensions": 8}}, "fast"),
        ({"url": "/v1/embeddings", "headers": h, "json": {"model": MODEL, "input": "a", "encoding_format": "hex"}},
         "framework"),
        ({"url": oip, "headers": h, "json": one}, "fast"),
        ({"url": oip_v, "headers": h, "json": one | {"id": "r7", "outputs": [{"name": "label"}]}}, "fast"),
        ({"url": f"/v2/models/{MODEL}/infer", "headers": h, "json": one}, "fast"),
        ({"url": oip, "headers": bin_h, "content": binary}, "fast"),
        ({"url": oip, "headers": bin_h | {"content-encoding": "gzip"}, "content": gzip.compress(binary)}, "fast"),
        ({"url": oip, "headers": bin_h | {codec.HEADER_LENGTH_HEADER: "99999"}, "content": binary}, "fast"),
        ({"url": oip, "headers": json_h, "content": b"{not json"}, "fast"),
        ({"url": oip, "headers": json_h | {"content-encoding": "gzip"}, "content": b"\x1f\x8b garbage"}, "fast"),
        ({"url": oip, "headers": json_h | {"content-encoding": "br"}, "content": b"{}"}, "fast"),
        ({"url": oip, "headers": h, "json": {"inputs": []}}, "fast"),
        ({"url": oip, "headers": h, "json": {**one, "outputs": [{"name": "nope"}]}}, "fast"),
        ({"url": "/v2/models/nope/infer", "headers": h, "json": one}, "fast"),
        ({"url": f"/v2/models/{DEPLOYMENT}/versions/7/infer", "headers": h, "json": one}, "fast"),
        ({"url": oip, "headers": scoped, "json": one}, "fast"),
        ({"url": oip, "json": one}, "edge"),
        ({"url": oip, "headers": json_h, "content": b" " * (limit + 1)}, "edge"),
    ]
    return cases


async def test_every_answer_matches_the_framework_routes(pair, settings, org_a, framework_calls):
    fast, _ = pair
    r = await fast.post("/v1/api_keys", headers=org_a.headers, json={"name": "reader", "scopes": ["read"]})
    scoped = {"Authorization": f"Bearer {r.json()['key']}"}
    statuses: dict[str, set[int]] = {}
    for case, kind in _cases(org_a.headers, scoped, settings.max_request_bytes):
        before = len(framework_calls)
        got, want = await _both(pair, case)
        assert got == want, case
        statuses.setdefault("oip" if case["url"].startswith("/v2") else case["url"], set()).add(got[0])
        took = len(framework_calls) - before
        # The framework app's request always reaches a route, unless the edge answered it; the shortcut
        # app's only when the shortcut handed it on.
        assert took == {"fast": 1, "framework": 2, "edge": 0}[kind], (case, took)
    assert {200, 400, 401, 403, 404, 413} <= statuses["/v1/classifications"]
    assert {200, 400, 401, 403, 404, 413} <= statuses["/v1/embeddings"]
    assert {200, 400, 401, 403, 404, 413} <= statuses["oip"]


async def test_idempotent_replays_match(pair, org_a, framework_calls):
    """Each app gets its own key (one database: the same key would replay the other app's answer)."""
    binary, hlen = _binary([b"fine"], [codec.RequestedOutput("scores", {"binary_data": True})])
    requests = [
        {"url": "/v1/classifications", "json": {"model": DEPLOYMENT, "input": ["fine", "bad"]}},
        {"url": "/v1/embeddings", "json": {"model": DEPLOYMENT, "input": "fine"}},
        {"url": f"/v2/models/{DEPLOYMENT}/infer", "content": binary,
         "headers": {codec.HEADER_LENGTH_HEADER: str(hlen), "content-type": "application/octet-stream"}},
    ]
    for i, request in enumerate(requests):
        answers = []
        for j, client in enumerate(pair):
            headers = org_a.headers | request.get("headers", {}) | {"Idempotency-Key": f"k{i}-{j}"}
            sent = request | {"headers": headers}
            first, again = await client.post(**sent), await client.post(**sent)
            assert first.status_code == 200, first.text
            assert again.content == first.content and again.headers["idempotent-replayed"] == "true"
            answers.append((_comparable(first), _comparable(again)))
        assert answers[0] == answers[1], request["url"]
    assert len(framework_calls) == 3  # the framework app's first requests only: replays run no route


async def test_counted_metered_and_limited_alike(pair, db, org_a, framework_calls):
    binary, hlen = _binary([b"fine"], [codec.RequestedOutput("label")])
    requests = [
        {"url": "/v1/classifications", "headers": org_a.headers, "json": {"model": DEPLOYMENT, "input": "ok"}},
        {"url": "/v1/embeddings", "headers": org_a.headers, "json": {"model": DEPLOYMENT, "input": "ok"}},
        {"url": f"/v2/models/{DEPLOYMENT}/versions/1/infer", "content": binary,
         "headers": org_a.headers | {codec.HEADER_LENGTH_HEADER: str(hlen)}},
    ]
    for request in requests:
        got, want = await _both(pair, request)
        assert got == want and got[0] == 200
    assert len(framework_calls) == 3  # the framework app's only

    def counted(text: str) -> list[str]:  # (the deployment was created through the shortcut app)
        return sorted(line for line in text.splitlines() if 'route="/v1/deployments"' not in line
                      and line.startswith(("aiaas_http_requests_total", "aiaas_deployment_requests_total",
                                          "aiaas_deployment_texts_total", "aiaas_deployment_tokens_total",
                                          "aiaas_deployment_request_duration_seconds_count")))

    fast_metrics, framework_metrics = [counted((await c.get("/metrics")).text) for c in pair]
    assert fast_metrics == framework_metrics
    for route in ("/v1/classifications", "/v1/embeddings", "/v2/models/{model_name}/versions/{model_version}/infer"):
        assert any(f'route="{route}",status="200"' in line for line in fast_metrics), route

    # Rate limits: the same refusals, in the same place, on every route.
    set_limits(db, org_a.id, rate_limit_requests_per_minute=2, rate_limit_tokens_per_minute=100000)
    for request in requests:
        seen = []
        for _ in range(3):
            got, want = await _both(pair, request)
            assert got == want, request["url"]
            seen.append(got[0])
        assert seen[-1] == 429
