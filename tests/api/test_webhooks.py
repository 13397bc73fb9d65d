"""Webhooks through the real app (in process) and a real HTTP receiver on 127.0.0.1: CRUD, private URLs
refused, signed deliveries retried with backoff and logged, job status events, drift events, restarts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from sqlalchemy import select

from aiaas.api.app import create_app
from aiaas.services import webhooks
from aiaas.store.models import FineTuningJob, WebhookDelivery, WebhookEndpoint
from tests.helpers.deployed import export_tiny_classifier, register


class Receiver:
    """A tiny HTTP server that records what it receives and answers the status codes it is given."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.codes: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.codes.pop(0) if receiver.codes else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        return [json.loads(body)["type"] for _, body in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def app(settings, db):
    settings = settings.model_copy(update={"webhook_allow_private": True, "webhook_retry_base_seconds": 0.0,
                                           "monitoring_min_samples": 20, "monitoring_check_seconds": 0})
    return create_app(settings, db=db, migrate_db=False)


async def deliver(app) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        return await app.state.aiaas.services.webhooks.run_once(http)


async def create(client, org, url: str, events: list[str]) -> dict:
    r = await client.post("/v1/webhooks", headers=org.headers, json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    return r.json()


async def test_crud_and_tenancy(client, db, org_a, org_b, receiver):
    hook = await create(client, org_a, receiver.url, ["fine_tuning.job.*", "deployment.drift"])
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["deployment.drift", "fine_tuning.job.*"]
    with db.session() as s:  # the secret is stored sealed with the organisation's key
        sealed = s.get(WebhookEndpoint, hook["id"]).sealed_secret
    assert hook["secret"].encode() not in sealed and hook["secret"][6:].encode() not in sealed
    listed = (await client.get("/v1/webhooks", headers=org_a.headers)).json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]] and "secret" not in listed["data"][0]
    assert (await client.get("/v1/webhooks", headers=org_b.headers)).json()["data"] == []
    assert (await client.get(f"/v1/webhooks/{hook['id']}", headers=org_b.headers)).status_code == 404
    assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=org_b.headers)).status_code == 404
    assert (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=org_b.headers)).status_code == 404
    r = await client.post("/v1/webhooks", headers=org_a.headers, json={"url": receiver.url, "events": ["model.x"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "events.0"
    assert (await client.delete(f"/v1/webhooks/{hook['id']}", headers=org_a.headers)).json()["deleted"] is True
    assert (await client.get(f"/v1/webhooks/{hook['id']}", headers=org_a.headers)).status_code == 404


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/x", "http://localhost/x", "http://10.1.2.3/x",
                                 "http://192.168.0.10/x", "http://169.254.169.254/latest/meta-data",
                                 "http://[::1]/x", "http://[::ffff:127.0.0.1]/x", "http://0.0.0.0/x",
                                 "ftp://example.com/x", "http://user:pw@127.0.0.1/x"])
async def test_private_and_odd_urls_are_refused_by_default(settings, db, org_a, url):
    app = create_app(settings, db=db, migrate_db=False)  # webhook_allow_private is off by default
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        r = await c.post("/v1/webhooks", headers=org_a.headers, json={"url": url, "events": ["batch.*"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "url"


async def test_signed_delivery_retried_with_backoff_and_logged(app, client, db, org_a, receiver):
    hook = await create(client, org_a, receiver.url, ["fine_tuning.job.*"])
    with db.session() as s:
        s.add(FineTuningJob(id="ftjob-hook", org_id=org_a.id, model="tiny-bert", training_file="file-x",
                            status="queued", seed=0, created_at=hook["created_at"] + 1))
    receiver.codes = [500]
    assert await deliver(app) == 1  # answered 500: kept for a retry
    log = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=org_a.headers)).json()["data"]
    assert [(d["status"], d["attempts"]) for d in log] == [("pending", 1)]
    assert log[0]["attempt_log"][0]["status_code"] == 500 and log[0]["attempt_log"][0]["error"] == "HTTP 500"
    assert await deliver(app) == 1  # retry base 0 s: due at once
    assert await deliver(app) == 0  # delivered: nothing left, and the job's status is not announced twice
    log = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=org_a.headers)).json()["data"]
    assert [(d["status"], d["attempts"]) for d in log] == [("delivered", 2)]
    assert [a["status_code"] for a in log[0]["attempt_log"]] == [500, 200]

    headers, body = receiver.received[-1]
    assert webhooks.verify(hook["secret"], headers, body)
    # Standard Webhooks, computed here independently: base64(HMAC-SHA256(key, "id.timestamp.body")).
    key = base64.b64decode(hook["secret"].removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    assert headers["webhook-signature"] == "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-id"] == log[0]["id"] and headers["webhook-signature"].startswith("v1,")
    event = json.loads(body)
    assert event["type"] == "fine_tuning.job.queued" and event["data"]["id"] == "ftjob-hook"
    assert receiver.received[0][0]["webhook-id"] == headers["webhook-id"]  # a retry is the same message

    with db.session() as s:
        s.get(FineTuningJob, "ftjob-hook").status = "succeeded"
    assert await deliver(app) == 1
    assert receiver.events() == ["fine_tuning.job.queued", "fine_tuning.job.queued", "fine_tuning.job.succeeded"]


async def test_backoff_grows_and_gives_up(settings, db, org_a, receiver):
    app = create_app(settings.model_copy(update={"webhook_allow_private": True, "webhook_max_attempts": 2,
                                                 "webhook_retry_base_seconds": 60.0}), db=db, migrate_db=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        hook = await create(c, org_a, receiver.url, ["batch.*"])
    with db.session() as s:
        webhooks.emit(s, org_a.id, "batch.completed", {"id": "batch_1"})
    receiver.codes = [503, 503]
    assert await deliver(app) == 1
    assert await deliver(app) == 0  # not due for a minute
    with db.session() as s:
        d = s.scalar(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == hook["id"]))
        d.next_attempt_at = 0.0  # the minute has passed
    assert await deliver(app) == 1
    with db.session() as s:
        d = s.scalar(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == hook["id"]))
        assert (d.state, d.attempts) == ("failed", 2)
    assert await deliver(app) == 0


async def test_outbox_survives_a_restart(settings, db, org_a, receiver, app, client):
    hook = await create(client, org_a, receiver.url, ["batch.*"])
    with db.session() as s:
        webhooks.emit(s, org_a.id, "batch.completed", {"id": "batch_2"})
    # The first process stops before delivering; a new one (same database) delivers.
    restarted = create_app(settings.model_copy(update={"webhook_allow_private": True}), db=db, migrate_db=False)
    assert await deliver(restarted) == 1
    headers, body = receiver.received[0]
    assert webhooks.verify(hook["secret"], headers, body) and json.loads(body)["data"] == {"id": "batch_2"}


async def test_the_dispatcher_refuses_an_address_that_became_private(settings, db, org_a, receiver, client):
    hook = await create(client, org_a, receiver.url, ["batch.*"])  # allowed when created (the fixture's app)
    strict = create_app(settings, db=db, migrate_db=False)  # an operator who does not allow private addresses
    with db.session() as s:
        webhooks.emit(s, org_a.id, "batch.failed", {"id": "batch_3"})
    assert await deliver(strict) == 1
    assert receiver.received == []
    log = (await client.get(f"/v1/webhooks/{hook['id']}/deliveries", headers=org_a.headers)).json()["data"]
    assert "private address" in log[0]["attempt_log"][0]["error"]


async def test_drift_seen_on_the_monitoring_route_is_delivered(app, client, db, settings, org_a, receiver,
                                                               tmp_path):
    from tests.services.test_monitoring import LABELS, english, russian, store_training_reference

    artifact = export_tiny_classifier(tmp_path / "art")
    model = "ft:tiny-bert:org-a:svc:ftjob-svc"
    register(settings, db, org_a.id, artifact, model_id=model, task="single_label_classification", labels=LABELS)
    store_training_reference(db, org_a.id, artifact, random.Random(3), model_id=model)
    hook = await create(client, org_a, receiver.url, ["deployment.drift"])
    assert (await client.post("/v1/deployments", headers=org_a.headers,
                              json={"name": "svc", "model": model})).status_code == 201
    rng = random.Random(4)
    for texts in (english(rng, 30), russian(rng, 30)):
        for i in range(0, 30, 3):
            r = await client.post("/v1/deployments/svc/predict", headers=org_a.headers, json={"inputs": texts[i:i+3]})
            assert r.status_code == 200
        report = (await client.get("/v1/deployments/svc/monitoring", headers=org_a.headers)).json()
        if texts[0][0].isascii():
            assert report["drifted"] is False, json.dumps(report, indent=1)
    assert report["drifted"] is True and "script" in report["drift"]
    assert (await client.get("/v1/deployments/svc/monitoring", headers=org_a.headers)).status_code == 200
    assert await deliver(app) == 1
    headers, body = receiver.received[0]
    event = json.loads(body)
    assert webhooks.verify(hook["secret"], headers, body)
    assert event["type"] == "deployment.drift" and event["data"]["deployment"] == "svc"
    assert "script" in event["data"]["features"]
    audit = (await client.get("/v1/audit_logs", headers=org_a.headers, params={"action": "deployment.drift"})).json()
    assert len(audit["data"]) == 1


def test_verify_detects_tampering_and_the_wrong_secret():
    secret = webhooks.new_secret()
    body = b'{"type":"deployment.drift"}'
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts),
               "webhook-signature": webhooks.sign(secret, "msg_1", ts, body)}
    assert webhooks.verify(secret, headers, body)
    assert not webhooks.verify(secret, headers, body + b" ")
    assert not webhooks.verify(webhooks.new_secret(), headers, body)
    assert not webhooks.verify(secret, headers | {"webhook-timestamp": str(ts - 3600)}, body)
