"""Health, metrics, request ids, body limits, error shapes and the OpenAPI spec."""

from __future__ import annotations

import pytest


async def test_health_ready_metrics(client):
    assert (await client.get("/healthz")).json()["status"] == "ok"
    assert (await client.get("/readyz")).json() == {"status": "ready", "database": "ok"}
    await client.get("/v1/organizations/me")
    text = (await client.get("/metrics")).text
    assert 'aiaas_http_requests_total{method="GET",route="/v1/organizations/me",status="401"} 1.0' in text


async def test_request_id_generated_and_echoed(client):
    r = await client.get("/healthz")
    assert r.headers["x-request-id"].startswith("req_")
    r = await client.get("/healthz", headers={"X-Request-ID": "my-trace-123"})
    assert r.headers["x-request-id"] == "my-trace-123"
    # A hostile id is not echoed.
    r = await client.get("/healthz", headers={"X-Request-ID": "<script>" * 30})
    assert r.headers["x-request-id"].startswith("req_")
    r = await client.get("/v1/organizations/me")
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


async def test_generated_request_ids_are_distinct_and_fresh_after_a_fork():
    import os
    import re

    from aiaas.api import middleware

    ids = {middleware._new_request_id() for _ in range(5000)}
    assert len(ids) == 5000
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not replay the parent's sequence
        os.write(write, middleware._new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert child.startswith("req_") and child != middleware._new_request_id()


async def test_body_limit_by_content_length(client, settings, org_a):
    big = b"x" * (settings.max_request_bytes + 1)
    r = await client.post(
        "/v1/api_keys", content=big, headers=org_a.headers | {"content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"


async def test_body_limit_while_streaming(client, settings, org_a):
    """A chunked body with no Content-Length is cut off once it passes the limit."""
    sent = 0
    chunk = b"x" * 65536

    async def body():
        nonlocal sent
        while sent < settings.max_request_bytes * 4:
            sent += len(chunk)
            yield chunk

    r = await client.post(
        "/v1/api_keys", content=body(), headers=org_a.headers | {"content-type": "application/json"}
    )
    assert r.status_code == 413


async def test_unknown_route_and_method(client):
    r = await client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = await client.put("/healthz")
    assert r.status_code == 405 and "error" in r.json()


async def test_openapi_complete(client):
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert "/v1/api_keys" in paths and "/v1/api_keys/{key_id}" in paths and "/v1/organizations/me" in paths


def test_refuses_to_start_without_secret(tmp_path):
    from aiaas.api.app import create_app
    from aiaas.core.errors import ConfigurationError
    from aiaas.core.settings import Settings

    for secret in (None, "changeme", "short"):
        s = Settings(env="production", data_dir=tmp_path, secret_key=secret)
        with pytest.raises(ConfigurationError, match="aiaas init"):
            create_app(s)
    dev = Settings(env="development", data_dir=tmp_path)
    assert create_app(dev) is not None


async def test_no_internal_details_in_500(app, client, org_a):
    from aiaas.security import policy

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError("secret internal path /etc/shadow")

    policy.POLICY[("GET", "/v1/boom")] = None
    try:
        r = await client.get("/v1/boom")
    finally:
        del policy.POLICY[("GET", "/v1/boom")]
    assert r.status_code == 500
    assert "shadow" not in r.text and "Traceback" not in r.text
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


async def test_nul_characters_are_a_400_not_a_database_error(client, org_a):
    for url in ("/v1/files?purpose=a%00b", "/v1/files/file-%00x", "/v1/api_keys?after=%00"):
        r = await client.get(url, headers=org_a.headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", (url, r.text)
    r = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": "a\u0000b"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "x", "model": "ft:\u0000"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


async def test_server_freezes_startup_objects_and_shortens_gil_switches_while_it_runs(settings, db):
    """Full collections during serving skip the start-up objects (45-60 ms pauses -> 4-8 ms);
    stopping the app hands them back to the collector."""
    import gc
    import sys

    from aiaas.api.app import create_app

    app = create_app(settings, db=db, migrate_db=False)
    before = sys.getswitchinterval()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000
        assert "aiaas.serving.runtime" in sys.modules  # imported before freezing, not on first load
        # The inference threads get the GIL back within 0.1 ms, not Python's default 5 ms.
        assert sys.getswitchinterval() == pytest.approx(settings.gil_switch_interval_ms / 1000)
        assert settings.gil_switch_interval_ms == 0.1
    assert gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == before

    off = create_app(settings.model_copy(update={"gc_freeze": False}), db=db, migrate_db=False)
    async with off.router.lifespan_context(off):
        assert gc.get_freeze_count() == 0
