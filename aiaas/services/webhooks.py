"""Webhooks: organisations' endpoints for `fine_tuning.job.*`, `batch.*` and `deployment.drift` events,
signed as Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`,
HMAC-SHA256 over "id.timestamp.body" with the endpoint's `whsec_` secret), delivered off the request path.

An event becomes one `webhook_deliveries` row per subscribed endpoint (`emit`, inside the caller's
transaction: the outbox), so a restart loses nothing. The API process's `WebhookDispatcher` sends due rows,
retries failures with exponential backoff up to `max_attempts`, and logs each attempt on the row (the
delivery log). Job status changes are not pushed by the job code: the dispatcher polls jobs of
organisations that have endpoints and enqueues `fine_tuning.job.<status>` once per (job, status).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidRequest
from aiaas.core.ids import new_id
from aiaas.store import webhooks as store
from aiaas.store.db import Database
from aiaas.store.encrypted import Keyring
from aiaas.store.models import FineTuningJob, WebhookDelivery, WebhookEndpoint
from aiaas.core.clock import now

log = logging.getLogger(__name__)

EVENT_TYPES = ("fine_tuning.job.*", "batch.*", "deployment.drift")
SECRET_PREFIX = "whsec_"  # nosec B105 - the display prefix of generated secrets, not a secret
MAX_LOGGED_ATTEMPTS = 20
JOB_LOOKBACK_S = 86_400  # job status changes older than this are not announced


# ---- signing -------------------------------------------------------------------------------------
def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: int = 300) -> bool:
    """What a receiver does (used by tests and documented for users)."""
    ts = int(headers["webhook-timestamp"])
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, headers["webhook-id"], ts, body).split(",", 1)[1]
    return any(hmac.compare_digest(expected, s.split(",", 1)[1])
               for s in headers["webhook-signature"].split() if s.startswith("v1,"))


def _aad(org_id: str, endpoint_id: str) -> bytes:
    return f"aiaas-webhook:{org_id}:{endpoint_id}".encode()


def seal(data_key: bytes, org_id: str, endpoint_id: str, secret: str) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(data_key).encrypt(nonce, secret.encode(), _aad(org_id, endpoint_id))


def unseal(data_key: bytes, org_id: str, endpoint_id: str, sealed: bytes) -> str:
    return AESGCM(data_key).decrypt(sealed[:12], sealed[12:], _aad(org_id, endpoint_id)).decode()


# ---- URLs ----------------------------------------------------------------------------------------
def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved
            or ip.is_unspecified)


def check_url(url: str, *, allow_private: bool) -> str:
    """An http(s) URL whose host resolves only to public addresses (unless the operator allows private
    ones). Blocking (DNS); checked at creation and again before every delivery."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequest("'url' must be an http:// or https:// URL with a host.", param="url")
    if parts.username or parts.password:
        raise InvalidRequest("'url' must not carry credentials; the signature authenticates deliveries.",
                             param="url")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidRequest(f"The host of 'url' ({parts.hostname}) does not resolve: {exc}.", param="url") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not allow_private and any(_private(a) for a in addresses):
        raise InvalidRequest(
            f"'url' resolves to a loopback, link-local or private address ({', '.join(sorted(addresses))}); "
            "webhooks go to public hosts only (an operator may allow private ones: AIAAS_WEBHOOK_ALLOW_PRIVATE).",
            param="url")
    return url


def check_events(events: list[str]) -> list[str]:
    if not events:
        raise InvalidRequest(f"'events' must list at least one of {', '.join(EVENT_TYPES)}.", param="events")
    for i, e in enumerate(events):
        known = e in EVENT_TYPES or any(e.startswith(p[:-1]) and len(e) > len(p) - 1
                                        for p in EVENT_TYPES if p.endswith(".*"))
        if not known:
            raise InvalidRequest(f"'events[{i}]' ({e[:80]}) is not one of {', '.join(EVENT_TYPES)} "
                                 "(or a type under a '.*' family).", param=f"events.{i}")
    return sorted(set(events))


# ---- the outbox ------------------------------------------------------------------------------------
def emit(session: Session, org_id: str, event_type: str, data: dict[str, Any], *, event_key: str | None = None,
         created_at: int | None = None) -> int:
    """Write `event_type` for every endpoint of `org_id` that wants it, in the caller's transaction.
    `event_key` (default: a new event id) makes an event at most one delivery per endpoint.
    Returns the deliveries added."""
    endpoints = store.subscribed(session, org_id, event_type)
    if not endpoints:
        return 0
    event_id = new_id("evt")
    payload = {"id": event_id, "object": "event", "type": event_type, "created_at": created_at or now(),
               "data": data}
    return sum(store.enqueue(session, ep, event_type=event_type, event_key=event_key or event_id, payload=payload)
               for ep in endpoints)


def job_data(job: FineTuningJob) -> dict[str, Any]:
    return {"id": job.id, "object": "fine_tuning.job", "status": job.status, "model": job.model,
            "fine_tuned_model": job.fine_tuned_model, "created_at": job.created_at,
            "finished_at": job.finished_at, "error": job.error}


def poll_jobs(session: Session, *, at: int) -> int:
    """Enqueue `fine_tuning.job.<status>` for job statuses not announced yet, in organisations with an
    endpoint for them. Returns the deliveries added."""
    endpoints = [e for e in session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)))
                 if any(p in ("*", "fine_tuning.job.*") or p.startswith("fine_tuning.job.") for p in e.events)]
    if not endpoints:
        return 0
    since = at - JOB_LOOKBACK_S
    orgs = {e.org_id for e in endpoints}
    jobs = session.scalars(select(FineTuningJob).where(
        FineTuningJob.org_id.in_(orgs),
        or_(FineTuningJob.created_at >= since, FineTuningJob.started_at >= since, FineTuningJob.finished_at >= since)))
    announced = select(WebhookDelivery.endpoint_id, WebhookDelivery.event_key).where(
        WebhookDelivery.endpoint_id.in_([e.id for e in endpoints]),
        WebhookDelivery.event_type.like("fine_tuning.job.%"),
        WebhookDelivery.created_at >= since - JOB_LOOKBACK_S)
    seen = {tuple(r) for r in session.execute(announced)}
    added = 0
    for job in jobs:
        key = f"{job.id}:{job.status}"
        event_type = f"fine_tuning.job.{job.status}"
        changed_at = job.finished_at or job.started_at or job.created_at
        for ep in endpoints:
            if (ep.org_id != job.org_id or (ep.id, key) in seen or changed_at < ep.created_at
                    or not store.matches(ep.events, event_type)):
                continue
            payload = {"id": new_id("evt"), "object": "event", "type": event_type, "created_at": at,
                       "data": job_data(job)}
            added += store.enqueue(session, ep, event_type=event_type, event_key=key, payload=payload, at=at)
    return added


# ---- delivery -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Send:
    delivery_id: str
    url: str
    body: bytes
    headers: dict[str, str]
    attempts: int


class WebhookDispatcher:
    """state.services.webhooks: the background loop that sends due deliveries."""

    def __init__(self, db: Database, keyring: Keyring, *, allow_private: bool = False, poll_seconds: float = 1.0,
                 timeout_seconds: float = 5.0, max_attempts: int = 8, retry_base_seconds: float = 5.0) -> None:
        self.db = db
        self.keyring = keyring
        self.allow_private = allow_private
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        async with httpx.AsyncClient(timeout=self.timeout_seconds, follow_redirects=False) as client:
            while True:
                try:
                    await self.run_once(client)
                except Exception:  # noqa: BLE001 - a broken round must not end the loop
                    log.exception("webhook delivery round failed")
                try:
                    await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
                self._wake.clear()

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Poll job statuses, then send every due delivery once. Returns the deliveries attempted."""
        sends = await asyncio.to_thread(self._prepare)
        if not sends:
            return 0
        results = await asyncio.gather(*(self._post(client, s) for s in sends))
        await asyncio.to_thread(self._record, list(zip(sends, results, strict=True)))
        return len(sends)

    def _prepare(self) -> list[_Send]:
        at = time.time()
        with self.db.session() as s:
            poll_jobs(s, at=int(at))
        sends: list[_Send] = []
        with self.db.session() as s:
            for d in store.due(s, at=at, limit=50):
                if not store.claim(s, d, until=at + 2 * self.timeout_seconds + 5):
                    continue  # another process took it
                ep = s.get(WebhookEndpoint, d.endpoint_id)
                if ep is None:
                    continue
                secret = unseal(self.keyring.data_key(d.org_id), d.org_id, ep.id, ep.sealed_secret)
                body = json.dumps(d.payload, separators=(",", ":")).encode()
                ts = int(at)
                headers = {"content-type": "application/json", "user-agent": "aiaas-webhooks/1",
                           "webhook-id": d.id, "webhook-timestamp": str(ts),
                           "webhook-signature": sign(secret, d.id, ts, body)}
                sends.append(_Send(d.id, ep.url, body, headers, d.attempts))
        return sends

    async def _post(self, client: httpx.AsyncClient, send: _Send) -> dict[str, Any]:
        started = time.perf_counter()
        entry: dict[str, Any] = {"at": now(), "status_code": None, "error": None}
        try:
            await asyncio.to_thread(check_url, send.url, allow_private=self.allow_private)  # DNS may have changed
            response = await client.post(send.url, content=send.body, headers=send.headers)
            entry["status_code"] = response.status_code
            if not 200 <= response.status_code < 300:
                entry["error"] = f"HTTP {response.status_code}"
        except InvalidRequest as exc:
            entry["error"] = exc.message
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
        entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return entry

    def _record(self, results: list[tuple[_Send, dict[str, Any]]]) -> None:
        with self.db.session() as s:
            for send, entry in results:
                d = s.get(WebhookDelivery, send.delivery_id)
                if d is None:
                    continue
                d.attempts = send.attempts + 1
                d.attempt_log = [*(d.attempt_log or []), entry][-MAX_LOGGED_ATTEMPTS:]
                if entry["error"] is None:
                    d.state, d.delivered_at = store.DELIVERED, now()
                elif d.attempts >= self.max_attempts:
                    d.state = store.FAILED
                else:  # 5 s, 10 s, 20 s, ... at most an hour
                    d.next_attempt_at = time.time() + min(self.retry_base_seconds * 2 ** (d.attempts - 1), 3600.0)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None


def webhook_dispatcher(settings: Any, db: Database, keyring: Keyring) -> WebhookDispatcher:
    return WebhookDispatcher(db, keyring, allow_private=settings.webhook_allow_private,
                             poll_seconds=settings.webhook_poll_seconds,
                             timeout_seconds=settings.webhook_timeout_seconds,
                             max_attempts=settings.webhook_max_attempts,
                             retry_base_seconds=settings.webhook_retry_base_seconds)
