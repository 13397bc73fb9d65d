"""Two apps on one database, one with the inference shortcut and one without, and how their answers compare
(tests/api/test_fastpath.py for predict, tests/api/test_fastpath_routes.py for the other inference routes)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx

from aiaas.api.app import create_app
from tests.helpers.deployed import register


@contextlib.asynccontextmanager
async def shortcut_pair(settings, db, org, artifact, *, model_id: str, deployment: str
                        ) -> AsyncIterator[list[httpx.AsyncClient]]:
    """(shortcut client, framework client), with `deployment` serving `model_id` (the tiny classifier)."""
    register(settings, db, org.id, artifact, model_id=model_id, task="single_label_classification",
             labels=["negative", "positive"])
    settings = settings.model_copy(update={"lookup_cache_seconds": 0})  # both apps read limits afresh
    apps = [
        create_app(settings, db=db, migrate_db=False),
        create_app(settings.model_copy(update={"fast_predict_route": False}), db=db, migrate_db=False),
    ]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a, raise_app_exceptions=False), base_url="http://t")
        for a in apps
    ]
    try:
        r = await clients[0].post("/v1/deployments", headers=org.headers, json={"name": deployment, "model": model_id})
        assert r.status_code == 201, r.text
        yield clients
    finally:
        for c in clients:
            await c.aclose()


def same_retry(r: httpx.Response, body: object, headers: dict) -> None:
    """A 429's seconds to wait depend on when each app answered (moments apart, so across a second boundary
    now and then): both must carry them; the number itself is not compared."""
    if r.status_code != 429:
        return
    assert r.headers["retry-after"].isdigit()
    headers["retry-after"] = "present"
    assert isinstance(body, dict)
    err = body["error"]  # OpenAI's envelope (a dict with the message) or OIP's (the message itself)
    message = err["message"] if isinstance(err, dict) else err
    assert "Retry after" in message, message
    message = re.sub(r"Retry after \d+s", "Retry after Ns", message)
    if isinstance(err, dict):
        err["message"] = message
    else:
        body["error"] = message
