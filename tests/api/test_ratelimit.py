"""Rate limits per key: requests/min on every route, tokens/min on inference; 429 with Retry-After and
x-ratelimit-* headers; Redis shares limits between API processes; the openai SDK backs off as told."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from aiaas.api.app import create_app
from aiaas.store import tenancy
from tests.conftest import REDIS_URL
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:rl:ftjob-rl"
TRIOS = [f"x-ratelimit-{k}-{d}" for d in ("requests", "tokens") for k in ("limit", "remaining", "reset")]


def set_limits(db, org_id: str, **limits: int) -> None:
    with db.session() as s:
        tenancy.update_organization_settings(s, org_id, limits)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("rl-art"))


@pytest.fixture
async def deployed(client, settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "rl", "model": MODEL})
    assert r.status_code == 201, r.text
    return "rl"


async def test_requests_limit_answers_429_with_headers(client, db, org_a, org_b):
    set_limits(db, org_a.id, rate_limit_requests_per_minute=3, rate_limit_tokens_per_minute=1000)
    for remaining in (2, 1, 0):
        r = await client.get("/v1/organizations/me", headers=org_a.headers)
        assert r.status_code == 200
        assert all(h in r.headers for h in TRIOS), r.headers
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert r.headers["x-ratelimit-limit-tokens"] == "1000"
        assert r.headers["x-ratelimit-remaining-tokens"] == "1000"
    r = await client.get("/v1/organizations/me", headers=org_a.headers)
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and err["type"] == "rate_limit_error"
    assert "requests per minute" in err["message"]
    assert int(r.headers["retry-after"]) == 20  # one request per 20 s at 3/min
    assert all(h in r.headers for h in TRIOS) and r.headers["x-ratelimit-remaining-requests"] == "0"
    # Any route counts, errors included; another organisation's key is not affected.
    assert (await client.get("/v1/files/file-nope", headers=org_a.headers)).status_code == 429
    assert (await client.get("/v1/organizations/me", headers=org_b.headers)).status_code == 200


async def test_limits_are_per_key(client, db, org_a):
    set_limits(db, org_a.id, rate_limit_requests_per_minute=2)
    r = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "second", "scopes": ["read"]})
    second = {"Authorization": f"Bearer {r.json()['key']}"}
    await client.get("/v1/organizations/me", headers=org_a.headers)
    assert (await client.get("/v1/organizations/me", headers=org_a.headers)).status_code == 429
    assert (await client.get("/v1/organizations/me", headers=second)).status_code == 200


async def test_zero_means_unlimited(client, db, settings, org_a):
    set_limits(db, org_a.id, rate_limit_requests_per_minute=0, rate_limit_tokens_per_minute=0)
    for _ in range(5):
        r = await client.get("/v1/organizations/me", headers=org_a.headers)
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers


async def test_server_defaults_apply_without_overrides(client, settings, org_a):
    settings.rate_limit_requests_per_minute = 1
    assert (await client.get("/v1/organizations/me", headers=org_a.headers)).status_code == 200
    assert (await client.get("/v1/organizations/me", headers=org_a.headers)).status_code == 429


async def test_tokens_limit_on_predict(app, client, db, org_a, deployed):
    set_limits(db, org_a.id, rate_limit_tokens_per_minute=30)
    # Limits changed behind the server's back (as `aiaas orgs limits` does from another process) apply once
    # the cached authentication expires; expire it now rather than wait.
    app.state.aiaas.services.auth_cache.clear()
    # Charged 7 before the model runs (a 7-letter word counts 2), corrected to the 6 it reads.
    body = {"inputs": ["great service thank you"]}
    for remaining in (24, 18, 12, 6):
        r = await client.post(f"/v1/deployments/{deployed}/predict", headers=org_a.headers, json=body)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-remaining-tokens"] == str(remaining)
        assert r.headers["x-ratelimit-limit-requests"]  # the requests trio rides along
    r = await client.post(f"/v1/deployments/{deployed}/predict", headers=org_a.headers, json=body)
    assert r.status_code == 429 and "tokens per minute" in r.json()["error"]["message"]
    assert int(r.headers["retry-after"]) == 2  # the estimate is 1 token short at 30/min: 2 s
    assert all(h in r.headers for h in TRIOS)
    # A request bigger than the whole limit can never pass: no Retry-After, and told not to retry.
    r = await client.post(f"/v1/deployments/{deployed}/predict", headers=org_a.headers,
                          json={"inputs": ["x" * 400]})
    assert r.status_code == 429 and "retry-after" not in r.headers
    assert r.headers["x-should-retry"] == "false" and "send less" in r.json()["error"]["message"]


@pytest.mark.skipif(not REDIS_URL, reason="AIAAS_TEST_REDIS_URL is not set")
async def test_redis_limits_are_shared_between_app_instances(settings, db, org_a):
    shared = settings.model_copy(update={"rate_limit_url": REDIS_URL})
    apps = [create_app(shared, db=db, migrate_db=False) for _ in range(2)]
    set_limits(db, org_a.id, rate_limit_requests_per_minute=4)
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://test") for a in apps]
    try:
        statuses = []
        for i in range(6):  # alternate between the two "processes"
            r = await clients[i % 2].get("/v1/organizations/me", headers=org_a.headers)
            statuses.append(r.status_code)
        assert statuses == [200, 200, 200, 200, 429, 429]
    finally:
        for c, a in zip(clients, apps, strict=True):
            await c.aclose()
            await a.state.aiaas.services.ratelimit.aclose()


async def test_concurrent_requests_never_exceed_the_limit(client, db, org_a):
    set_limits(db, org_a.id, rate_limit_requests_per_minute=5)
    results = await asyncio.gather(*(client.get("/v1/organizations/me", headers=org_a.headers)
                                     for _ in range(12)))
    assert sorted(r.status_code for r in results) == [200] * 5 + [429] * 7


@pytest.mark.e2e
@pytest.mark.slow
def test_openai_sdk_retries_after_retry_after_and_succeeds(tmp_path):
    """A real server at 12 requests/min: the official SDK waits the Retry-After it is sent, then succeeds."""
    openai = pytest.importorskip("openai")
    from tests.e2e.server import base_env, init, start_server

    env = base_env(tmp_path / "data", AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE="12")  # one more every 5 s
    key = init(env)
    server = start_server(env, tmp_path)
    try:
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base_url, headers=auth) as http:
            codes = []
            while 429 not in codes and len(codes) < 40:
                codes.append(http.get("/v1/models").status_code)
        assert codes[-1] == 429 and codes[:12] == [200] * 12
        impatient = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            impatient.models.list()
        assert 1 <= int(info.value.response.headers["retry-after"]) <= 5
        assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        patient = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=2)
        t0 = time.monotonic()
        models = patient.models.list()
        assert time.monotonic() - t0 >= 0.5  # it waited for the bucket to refill
        assert any(m.id == "minilm-l6" for m in models.data)
    finally:
        server.stop()


def test_serve_warns_when_several_processes_would_each_count_their_own_limits(settings):
    from aiaas.cli.admin import shared_limits_warning

    assert shared_limits_warning(1, settings) is None
    warning = shared_limits_warning(3, settings)
    assert warning is not None and "3x" in warning and "AIAAS_RATE_LIMIT_URL=redis://" in warning
    shared = settings.model_copy(update={"rate_limit_url": "redis://127.0.0.1:6379/0"})
    assert shared_limits_warning(3, shared) is None
