"""Idempotency keys on every POST, with Stripe's semantics, as a pure ASGI middleware.

A POST that carries `Idempotency-Key` (1-255 printable ASCII characters) is tied to that key within
its organisation (two organisations may use the same key):

- the first request claims the key (aiaas/store/idempotency.py) and runs; a 2xx/3xx answer is kept
  with a hash of the request (method, path and query, content type, body) for
  `idempotency_ttl_seconds` (24 h). An error answer is not kept (no work was committed): the key is
  released and a retry runs afresh, as is a response over `idempotency_max_response_bytes`;
- the same key with the same request replays the kept answer (status, content type, body) with
  `Idempotent-Replayed: true`, without running the route again;
- the same key with a different request: 422 `idempotency_key_reused`;
- while the first request runs, the same key gets 409 `idempotency_key_in_progress` with
  Retry-After (as Stripe answers); the SDK retries it.

A kept body is encrypted with the organisation's data key (it may hold a secret: POST /v1/api_keys
answers the new key). The body is hashed as it streams past, never buffered. A multipart body is hashed by its parts
(headers and data), not its bytes: clients draw a new boundary for every attempt, so a retried upload
has different bytes but the same parts. A replay needs the caller's key to hold the route's scope, as
the route itself would (it is not counted against the key's requests per minute: it runs nothing). The edge middleware has already checked the key (a request with an
Idempotency-Key is authenticated before its body); without a principal the request passes through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.api.deps import VERIFIED_KEY
from aiaas.api.middleware import error_body, scope_header
from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.core.settings import Settings
from aiaas.security.keys import Principal
from aiaas.security.policy import POLICY
from aiaas.store import idempotency as store
from aiaas.store.db import Database

log = logging.getLogger(__name__)
HEADER = b"idempotency-key"
REPLAYED = b"idempotent-replayed"
KEPT_HEADERS = (b"content-type", b"location")
PURGE_EVERY_S = 300.0
# Every POST route of the policy table as its path segments ("{name}" matches any one segment), with the
# scope it needs. Compared segment by segment: linear in the path, no pattern built from the table.
POST_ROUTES = [(tuple(path.split("/")), scope) for (method, path), scope in POLICY.items() if method == "POST"]


def _matches(template: tuple[str, ...], parts: list[str]) -> bool:
    return len(template) == len(parts) and all(
        t == p or (t.startswith("{") and t.endswith("}") and p != "") for t, p in zip(template, parts, strict=True))


class BodyHasher:
    """sha256 of what a request asks: method, path and query, content type (without a multipart
    boundary) and body; a multipart body by its parts, so a new boundary gives the same hash."""

    def __init__(self, scope: Scope) -> None:
        self.h = hashlib.sha256()
        query = scope.get("query_string", b"").decode("latin-1")
        self.h.update(f"{scope['method']} {scope['path']}?{query}\n".encode())
        content_type = (scope_header(scope, b"content-type") or "").strip()
        kind, _, params = content_type.partition(";")
        self.parser: Any = None
        boundary = _boundary(params) if kind.strip().lower() == "multipart/form-data" else None
        if boundary:
            self.h.update(b"multipart/form-data\n")
            self.parser = self._multipart(boundary)
        else:
            self.h.update(content_type.encode("latin-1") + b"\n")

    def _multipart(self, boundary: bytes) -> Any:
        from python_multipart.multipart import MultipartParser

        h, header = self.h, bytearray()
        size, in_value = 0, False

        def part_begin() -> None:
            nonlocal size
            size = 0
            h.update(b"\x00part\x00")

        def header_field(data: bytes, start: int, end: int) -> None:
            header.extend(data[start:end])

        def header_value(data: bytes, start: int, end: int) -> None:
            nonlocal in_value
            if not in_value:  # a value may come in pieces: one separator between field and value
                in_value = True
                header.extend(b"\x00")
            header.extend(data[start:end])

        def header_end() -> None:
            nonlocal in_value
            in_value = False
            h.update(len(header).to_bytes(8, "big") + bytes(header))
            header.clear()

        def part_data(data: bytes, start: int, end: int) -> None:
            nonlocal size
            size += end - start
            h.update(memoryview(data)[start:end])

        def part_end() -> None:
            h.update(b"\x00end\x00" + size.to_bytes(8, "big"))

        callbacks = {"on_part_begin": part_begin, "on_header_field": header_field, "on_header_value": header_value,
                     "on_header_end": header_end, "on_part_data": part_data, "on_part_end": part_end}
        # python-multipart types the callbacks as its MultipartCallbacks TypedDict; this dict has those keys.
        return MultipartParser(boundary, callbacks)  # type: ignore[arg-type]

    def update(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.parser is not None:
            try:
                self.parser.write(chunk)
                return
            except Exception:  # noqa: BLE001 - malformed multipart: hash the rest as bytes (the route answers 400)
                self.parser = None
                self.h.update(b"\x00malformed\x00")
        self.h.update(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


def _aad(org_id: str, key: str) -> bytes:
    return b"aiaas-idempotency\x00" + org_id.encode() + b"\x00" + key.encode()


def _boundary(params: str) -> bytes | None:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("latin-1")
    return None


async def _drain(receive: Receive, hasher: BodyHasher, done: bool) -> bool:
    """Read (and hash) what is left of the body; False when the client went away first."""
    while not done:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        hasher.update(message.get("body", b""))
        done = not message.get("more_body", False)
    return True


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp, *, db: Database, settings: Settings,
                 data_key: Callable[[str], bytes]) -> None:
        """`data_key(org_id)`: the organisation's data key, which encrypts the kept responses."""
        self.app = app
        self.db = db
        self.settings = settings
        self.data_key = data_key
        self._next_purge = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        key = scope_header(scope, HEADER)
        verified = scope.get("state", {}).get(VERIFIED_KEY)
        if key is None or verified is None:
            await self.app(scope, receive, send)
            return
        if not (0 < len(key) <= 255 and key.isprintable() and key.isascii()):
            await self._error(scope, send, InvalidRequest(
                "Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID is a good choice).",
                param="Idempotency-Key"))
            return
        principal: Principal = verified[0]
        path, root = scope["path"], scope.get("root_path", "")
        path = path[len(root):] if root and path.startswith(root) else path
        parts = path.split("/")
        scopes = [needed for template, needed in POST_ROUTES if _matches(template, parts)]
        if not scopes or (scopes[0] is not None and not principal.allows(scopes[0])):
            await self.app(scope, receive, send)  # no such route, or the route's own 403: nothing to keep
            return
        await self._keyed(scope, receive, send, principal.org_id, key)

    async def _keyed(self, scope: Scope, receive: Receive, send: Send, org_id: str, key: str) -> None:
        settings = self.settings
        query = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"] + (f"?{query}" if query else "")
        claim = await run_in_threadpool(self._claim, org_id, key, path)
        hasher = BodyHasher(scope)
        if claim.owner is None:
            if claim.state != store.COMPLETED:
                # A small body is read (and dropped) first: closing a socket with unread bytes in it resets the
                # connection, and the client may lose this answer. A large one is not read: the connection closes.
                declared = scope_header(scope, b"content-length")
                small = declared is not None and declared.isdigit() and int(declared) <= settings.max_request_bytes
                if small and not await _drain(receive, hasher, False):
                    return
                await self._error(scope, send, AiaasError(
                    "A request with this Idempotency-Key is still running; retry after the Retry-After "
                    "seconds to get its result.", code="idempotency_key_in_progress",
                    param="Idempotency-Key",
                    headers={"Retry-After": "1"} if small else {"Retry-After": "1", "Connection": "close"}))
                return
            if not await _drain(receive, hasher, False):
                return
            if hasher.hexdigest() != claim.request_hash:
                await self._error(scope, send, AiaasError(
                    "This Idempotency-Key was used with a different request (method, path or body) in the "
                    f"last {settings.idempotency_ttl_seconds / 3600:g} hours; use a new key for a new request.",
                    code="idempotency_key_reused",
                    param="Idempotency-Key"))
                return
            headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in claim.headers or []]
            await send({"type": "http.response.start", "status": claim.status,
                        "headers": [*headers, (REPLAYED, b"true")]})
            await send({"type": "http.response.body", "body": claim.body or b""})
            return

        owner = claim.owner
        body_done = False
        status: int | None = None
        kept: list[tuple[str, str]] = []
        chunks: list[bytes] = []
        size, complete = 0, False

        async def hashing_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not body_done:
                hasher.update(message.get("body", b""))
                body_done = not message.get("more_body", False)
            return message

        async def capturing_send(message: Message) -> None:
            nonlocal status, size, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                kept.extend((k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])
                            if k.lower() in KEPT_HEADERS)
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                size += len(body)
                if size <= settings.idempotency_max_response_bytes:
                    chunks.append(body)
                complete = not message.get("more_body", False)
            await send(message)

        refresher = asyncio.create_task(self._keep_lock(org_id, key, owner))
        saved = False
        try:
            await self.app(scope, hashing_receive, capturing_send)
            keep = complete and size <= settings.idempotency_max_response_bytes
            if keep and status is not None and status < 400 and await _drain(receive, hasher, body_done):
                saved = await run_in_threadpool(self._complete, org_id, key, owner, hasher.hexdigest(),
                                                status, kept, b"".join(chunks))
                if not saved:
                    log.warning("idempotency key %r of %s: the claim was lost before its response was kept",
                                key, org_id)
        finally:
            refresher.cancel()
            if not saved:
                # An error, a cut connection or an oversized answer: nothing kept, a retry runs afresh.
                await asyncio.shield(run_in_threadpool(self._release, org_id, key, owner))

    async def _keep_lock(self, org_id: str, key: str, owner: str) -> None:
        lock = self.settings.idempotency_lock_seconds
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(lock / 3)
                try:
                    await run_in_threadpool(self._refresh, org_id, key, owner)
                except Exception:  # noqa: BLE001 - the next refresh may succeed; the lock is generous
                    log.warning("could not refresh idempotency key %r of %s", key, org_id, exc_info=True)

    # ---- database work, in the thread pool ----------------------------------------------------
    def _claim(self, org_id: str, key: str, path: str) -> store.Claim:
        s = self.settings
        with self.db.session() as session:
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + PURGE_EVERY_S
                store.purge_expired(session, ttl_seconds=s.idempotency_ttl_seconds)
            claim = store.claim(session, org_id=org_id, key=key, method="POST", path=path,
                                ttl_seconds=s.idempotency_ttl_seconds, lock_seconds=s.idempotency_lock_seconds)
        if claim.body is not None:
            sealed = claim.body
            plain = AESGCM(self.data_key(org_id)).decrypt(sealed[:12], sealed[12:], _aad(org_id, key))
            claim = dataclasses.replace(claim, body=plain)
        return claim

    def _refresh(self, org_id: str, key: str, owner: str) -> None:
        with self.db.session() as session:
            store.refresh(session, org_id=org_id, key=key, owner=owner,
                          lock_seconds=self.settings.idempotency_lock_seconds)

    def _complete(self, org_id: str, key: str, owner: str, request_hash: str, status: int,
                  headers: list[tuple[str, str]], body: bytes) -> bool:
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(self.data_key(org_id)).encrypt(nonce, body, _aad(org_id, key))
        with self.db.session() as session:
            return store.complete(session, org_id=org_id, key=key, owner=owner, request_hash=request_hash,
                                  status=status, headers=[list(h) for h in headers], body=sealed)

    def _release(self, org_id: str, key: str, owner: str) -> None:
        with self.db.session() as session:
            store.release(session, org_id=org_id, key=key, owner=owner)

    async def _error(self, scope: Scope, send: Send, exc: AiaasError) -> None:
        rid = scope.get("state", {}).get("request_id", "-")
        headers = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
        await send({"type": "http.response.start", "status": exc.status,
                    "headers": [(b"content-type", b"application/json"), *headers]})
        await send({"type": "http.response.body", "body": error_body(scope["path"], exc, rid)})
