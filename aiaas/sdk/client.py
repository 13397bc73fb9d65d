"""httpx clients (sync and async) with retries that honour Retry-After, and list pagination.

Resources are thin: each method builds one request; `_Transport` sends it. Both clients
share the resource classes through a `call` function, so sync and async never drift.

Every POST carries an `Idempotency-Key`, new for each call and the same on each of its retries, so
the server runs a retried POST once (it replays the first answer). That makes POSTs safe to retry
after a connection error too, and on 409 `idempotency_key_in_progress` (the first try still runs).

When it retries: 408, 429 and 503 (not run, or not yet: any method); 500, 502 and 504 and connection
errors for requests that are safe to repeat (GETs, DELETEs, and POSTs through their key; not a PATCH);
other 409s (a name taken, memory short) never, since sending the same request again cannot help. The
wait is the answer's Retry-After (seconds or an HTTP date) or Retry-After-Ms, else backoff with jitter;
`x-should-retry: false` (a quota) stops it.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import json
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from aiaas import __version__
from aiaas.sdk.batches import Batches
from aiaas.sdk.errors import APIConnectionError, APIError, error_from_response
from aiaas.sdk.resources import (
    ApiKeys,
    AuditLogs,
    Classifications,
    Deployments,
    Embeddings,
    Files,
    FineTuning,
    Models,
    Oip,
    Organizations,
    Request,
    Usage,
)
from aiaas.sdk.versions import RegisteredModels

# Not run by the server (or not finished): safe to send again whatever the method.
RETRY_STATUSES = frozenset({408, 429, 503})
# Failed on the way (a proxy's 502/504, a crash's 500): sent again only where repeating cannot do a thing
# twice (GET/DELETE-like requests, and POSTs, whose Idempotency-Key makes the server run them once).
RETRY_IF_SAFE = frozenset({500, 502, 504})
MAX_RETRY_AFTER_S = 60.0
IN_PROGRESS = "idempotency_key_in_progress"  # 409: the first try of this POST still runs; its answer will come
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _retry_delay(response: httpx.Response | None, attempt: int) -> float:
    """Retry-After (seconds or ms header) when sent, else exponential backoff with jitter."""
    if response is not None:
        ms = response.headers.get("retry-after-ms")
        if ms:
            try:
                return max(0.0, min(float(ms) / 1000, MAX_RETRY_AFTER_S))
            except ValueError:
                pass
        ra = response.headers.get("retry-after")
        if ra:
            seconds = _retry_after_seconds(ra)
            if seconds is not None:
                return seconds
    return min(0.5 * 2.0**attempt, 8.0) * (0.75 + random.random() / 2)


def _retry_after_seconds(value: str) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110), capped; None when unreadable."""
    try:
        return max(0.0, min(float(value), MAX_RETRY_AFTER_S))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, min((when - datetime.datetime.now(datetime.timezone.utc)).total_seconds(), MAX_RETRY_AFTER_S))


def _prepare(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    base = (base_url or os.environ.get("AIAAS_BASE_URL") or "http://127.0.0.1:8000").rstrip("/")
    key = api_key or os.environ.get("AIAAS_API_KEY")
    headers = {"User-Agent": f"aiaas-sdk/{__version__}"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return base, headers


class _Base(ABC):
    """What both clients share: configuration, the httpx client, the resources, and when to retry.

    The resources call back `call`, `iterate` and `stream_events`, which each client defines: the sync
    one returns results, the async one awaitables, so one resource class serves both.
    """

    _http_class: type[httpx.Client] | type[httpx.AsyncClient]
    _http: Any  # each client narrows it to its own httpx client class

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        http_client: Any = None,
    ) -> None:
        self.base_url, headers = _prepare(base_url, api_key)
        self.max_retries = max_retries
        self._http = http_client or self._http_class(base_url=self.base_url, headers=headers, timeout=timeout)
        if http_client is not None:
            self._http.headers.update(headers)
        self.organizations = Organizations(self)
        self.api_keys = ApiKeys(self)
        self.files = Files(self)
        self.fine_tuning = FineTuning(self)
        self.models = Models(self)
        self.deployments = Deployments(self)
        self.embeddings = Embeddings(self)
        self.usage = Usage(self)
        self.audit_logs = AuditLogs(self)
        self.classifications = Classifications(self)
        self.oip = Oip(self)
        self.registered_models = RegisteredModels(self)  # aiaas/sdk/versions.py
        self.batches = Batches(self)  # aiaas/sdk/batches.py

    @abstractmethod
    def call(self, req: Request) -> Any:
        """Send one request with retries; the decoded body."""

    @abstractmethod
    def iterate(self, path: str, *, limit: int = 20, **params: Any) -> Any:
        """Every item of a list endpoint, fetching pages as needed."""

    @abstractmethod
    def stream_events(self, req: Request) -> Any:
        """Server-sent events as dicts, until the server says [DONE]."""

    def _retry_after(self, req: Request, attempt: int, resp: httpx.Response | None,
                     exc: httpx.TransportError | None) -> float | None:
        """Seconds to wait before the next attempt, or None to stop (raising for transport errors)."""
        if exc is not None:
            # A POST is safe to send again: its Idempotency-Key makes the server run it once.
            if attempt >= self.max_retries or not (req.idempotent or req.method == "POST"):
                raise APIConnectionError(f"Could not reach {self.base_url}: {exc}") from exc
            return _retry_delay(None, attempt)
        assert resp is not None
        if resp.headers.get("x-should-retry", "").lower() == "false":
            return None  # e.g. a quota, or a request larger than the whole limit: waiting cannot help
        safe = req.idempotent or req.method == "POST"
        retry = (resp.status_code in RETRY_STATUSES or (resp.status_code in RETRY_IF_SAFE and safe)
                 or (resp.status_code == 409 and _code(resp) == IN_PROGRESS))
        if retry and attempt < self.max_retries:
            return _retry_delay(resp, attempt)
        return None

    def _send_args(self, req: Request) -> dict[str, Any]:
        """The arguments for every attempt of one call: a POST's Idempotency-Key is drawn once here."""
        args = {"json": req.json, "params": req.params, "files": req.files, "data": req.data}
        if req.method == "POST":
            args["headers"] = {"Idempotency-Key": req.idempotency_key or f"aiaas-sdk-{uuid.uuid4()}"}
        return args


class Client(_Base):
    """Synchronous client. `Client(base_url, api_key)`; env AIAAS_BASE_URL / AIAAS_API_KEY as defaults."""

    _http_class = httpx.Client
    _http: httpx.Client

    def iterate(self, path: str, *, limit: int = 20, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a list endpoint, fetching pages as needed."""
        after = None
        while True:
            page = self.call(
                Request("GET", path, params={"limit": limit, **params} | ({"after": after} if after else {}))
            )
            yield from page["data"]
            if not page.get("has_more") or not page["data"]:
                return
            after = page["data"][-1]["id"]

    def call(self, req: Request) -> Any:
        args = self._send_args(req)
        for attempt in range(self.max_retries + 1):
            resp, exc = None, None
            try:
                resp = self._http.request(req.method, req.path, **args)
            except httpx.TransportError as e:
                exc = e
            delay = self._retry_after(req, attempt, resp, exc)
            if delay is None:
                break
            time.sleep(delay)
        assert resp is not None
        return _decode(resp, req)

    def stream_events(self, req: Request) -> Iterator[dict[str, Any]]:
        """Server-sent events as dicts, until the server says [DONE]."""
        with self._http.stream(req.method, req.path, params=req.params, timeout=None) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise error_from_response(resp)
            for line in resp.iter_lines():
                event = _sse_data(line)
                if event is _DONE:
                    return
                if event is not None:
                    yield event

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client with the same resources as `Client`, each method awaitable."""

    _http_class = httpx.AsyncClient
    _http: httpx.AsyncClient

    async def iterate(self, path: str, *, limit: int = 20, **params: Any) -> AsyncIterator[dict[str, Any]]:
        """Every item of a list endpoint, fetching pages as needed."""
        after = None
        while True:
            page = await self.call(
                Request("GET", path, params={"limit": limit, **params} | ({"after": after} if after else {}))
            )
            for item in page["data"]:
                yield item
            if not page.get("has_more") or not page["data"]:
                return
            after = page["data"][-1]["id"]

    async def call(self, req: Request) -> Any:
        args = self._send_args(req)
        for attempt in range(self.max_retries + 1):
            resp, exc = None, None
            try:
                resp = await self._http.request(req.method, req.path, **args)
            except httpx.TransportError as e:
                exc = e
            delay = self._retry_after(req, attempt, resp, exc)
            if delay is None:
                break
            await asyncio.sleep(delay)
        assert resp is not None
        return _decode(resp, req)

    async def stream_events(self, req: Request) -> AsyncIterator[dict[str, Any]]:
        """Server-sent events as dicts, until the server says [DONE]."""
        async with self._http.stream(req.method, req.path, params=req.params, timeout=None) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise error_from_response(resp)
            async for line in resp.aiter_lines():
                event = _sse_data(line)
                if event is _DONE:
                    return
                if event is not None:
                    yield event

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


_DONE = object()


def _sse_data(line: str) -> Any:
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return _DONE
    return json.loads(payload)


def _code(resp: httpx.Response) -> str | None:
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None


def _decode(resp: httpx.Response, req: Request) -> Any:
    if resp.status_code >= 400:
        raise error_from_response(resp)
    if req.raw:
        return resp.content
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError as exc:
        raise APIError("The server answered with a body that is not JSON.", status=resp.status_code) from exc
