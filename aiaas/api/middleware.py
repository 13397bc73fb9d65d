"""Pure ASGI middleware (BaseHTTPMiddleware breaks contextvars and background tasks)."""

from __future__ import annotations

import contextvars
import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.core.errors import (
    AiaasError,
    AuthenticationFailed,
    DatabaseBusy,
    PayloadTooLarge,
    Unavailable,
    type_for,
)
from aiaas.core.telemetry import Recorder
from aiaas.store.db import is_busy

log = logging.getLogger(__name__)
access_log = logging.getLogger("aiaas.access")  # one line per request; configured by the CLI (core/logging.py)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


# Request ids only need to be unique, not secret: a generator seeded from the OS once per
# process (re-seeded after a fork) instead of an os.urandom() system call per request (~14 us
# each on a virtual machine).
_ids: tuple[int, random.Random] = (os.getpid(), random.Random(secrets.randbits(128)))


def _new_request_id() -> str:
    global _ids
    pid, generator = _ids
    if pid != os.getpid():
        generator = random.Random(secrets.randbits(128))
        _ids = (os.getpid(), generator)
    return f"req_{generator.getrandbits(96):024x}"


def scope_header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header `name` (lower-case bytes), decoded as latin-1."""
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


def _json_error(path: str, message: str, *, kind: str, code: str, request_id: str) -> bytes:
    """An error body in the caller's protocol: OIP v2 (`/v2`) or OpenAI-style."""
    if path.startswith("/v2"):
        return json.dumps({"error": message}).encode()
    return json.dumps(
        {"error": {"message": message, "type": kind, "code": code, "param": None, "request_id": request_id}}
    ).encode()


def error_body(path: str, exc: AiaasError, request_id: str) -> bytes:
    if path.startswith("/v2"):
        return json.dumps({"error": exc.message}).encode()
    detail = exc.to_dict() | {"request_id": request_id}
    return json.dumps({"error": detail}).encode()


class ByteBudget:
    """Request-body bytes that may be in flight at once (uploads are held in memory while they are
    checked). Used from the event loop only, so it needs no lock. A request larger than the whole
    budget takes all of it: it runs alone rather than never."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def take(self, wanted: int) -> int | None:
        """Reserve `wanted` bytes; the amount reserved, or None when they do not fit now."""
        wanted = min(wanted, self.capacity)
        if self.used + wanted > self.capacity:
            return None
        self.used += wanted
        return wanted

    def give(self, taken: int) -> None:
        self.used -= taken


def _carries_body(scope: Scope, declared: str | None) -> bool:
    """The request announces a body (or an Idempotency-Key, whose organisation must be known first)."""
    if declared is not None and declared.strip() not in ("", "0"):
        return True
    return any(k in (b"transfer-encoding", b"idempotency-key") for k, _ in scope.get("headers", []))


class EdgeMiddleware:
    """Everything every HTTP request passes through, in one pure ASGI layer (each separate
    layer cost a coroutine per request and a wrapper per message). In order:

    1. request id: a well-formed client-sent X-Request-ID is echoed, else one is made; it
       is on every response and in `request_id_var` for logs and error bodies;
    2. a NUL character in the path or query string gets a 400 (never meaningful in ids,
       names or filters, and PostgreSQL cannot compare text with one);
    3. an unexpected exception becomes a generic 500 that carries the request id
       (Starlette's own catch-all sits outside every middleware, where the id is gone);
    4. request count and latency for /metrics (aiaas/core/telemetry.py), labelled by route template;
    5. the request-body limit, enforced while reading: a declared Content-Length over it
       gets 413 at once, a body that grows past it gets 413 instead of whatever the app
       would have answered;
    6. the `x-ratelimit-*` headers the request earned (left in `scope["state"]` by the auth
       dependency and `charge_tokens`) on its response, success or 429 alike; headers the
       response already has win;
    7. authentication before bodies: a request that announces a body (or an Idempotency-Key) on
       any path but the public ones has its key checked by `authenticate` (which leaves the
       principal in the request state for the route) before a byte of the body is read; a
       missing or bad key gets its 401 at once, with `Connection: close`;
    8. bytes in flight: a request whose path has a `budget_for` budget (uploads) reserves its
       declared length (the path's limit when it declares none) for as long as it runs; when
       that does not fit it gets 503 `upload_capacity` with Retry-After, its body unread.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        telemetry: Recorder,
        limit_for: Callable[[str], int],
        ratelimit_state_key: str,  # where the auth dependency leaves them (api/deps.py RATE_LIMIT_HEADERS)
        authenticate: Callable[[Scope], Awaitable[object]] | None = None,
        public_paths: frozenset[str] = frozenset(),
        budget_for: Callable[[str], ByteBudget | None] = lambda _path: None,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.authenticate = authenticate
        self.public_paths = public_paths
        self.budget_for = budget_for
        self.ratelimit_state_key = ratelimit_state_key
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent_id = scope_header(scope, b"x-request-id")
        rid = sent_id if sent_id and _REQUEST_ID_RE.match(sent_id) else _new_request_id()
        token = request_id_var.set(rid)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        path: str = scope["path"]
        try:
            query = scope.get("query_string", b"")
            if "\x00" in path or b"%00" in query or b"\x00" in query:
                body = _json_error(
                    path,
                    "The URL contains a NUL (%00) character; remove it.",
                    kind="invalid_request_error",
                    code="invalid_request",
                    request_id=rid,
                )
                await _respond(send, 400, body, [rid_header])
                return
            await self._handle(scope, receive, send, state, path, rid, rid_header)
        finally:
            request_id_var.reset(token)

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        state: dict,
        path: str,
        rid: str,
        rid_header: tuple[bytes, bytes],
    ) -> None:
        started_at = time.perf_counter()
        status = 500
        started = False  # the response start reached the client
        overflow = False
        received = sent = 0
        limit = self.limit_for(path)
        too_large = PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes for {path}.")

        async def reject_too_large() -> None:
            nonlocal status, started
            status, started = 413, True
            await _respond(
                send, 413, error_body(path, too_large, rid), [rid_header, (b"connection", b"close")]
            )

        async def limited_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Body parsers may wrap this error in their own (a 400); the flag makes sure
                    # the client still gets the 413 it deserves.
                    overflow = True
                    raise too_large
            return message

        async def edge_send(message: Message) -> None:
            nonlocal status, started, sent
            if overflow:
                if not started and message["type"] == "http.response.start":
                    await reject_too_large()
                return  # the 413 has been sent; drop the app's own answer
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            elif message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                earned = state.get(self.ratelimit_state_key)
                if earned:
                    present = {k.lower() for k, _ in headers}
                    headers += [
                        (k.lower().encode(), v.encode())
                        for k, v in earned.items()
                        if k.lower().encode() not in present
                    ]
                headers.append(rid_header)
                message["headers"] = headers
            await send(message)

        async def refuse(exc: AiaasError) -> None:
            """An answer given instead of reading the body: the connection closes after it."""
            nonlocal status, started
            status, started = exc.status, True
            headers = [(k.lower().encode(), v.encode()) for k, v in exc.headers.items()]
            await _respond(send, exc.status, error_body(path, exc, rid),
                           [rid_header, (b"connection", b"close"), *headers])

        reserved, budget = 0, None
        try:
            declared = scope_header(scope, b"content-length")
            has_body = _carries_body(scope, declared)
            if has_body and self.authenticate is not None and path not in self.public_paths:
                try:
                    await self.authenticate(scope)
                except AuthenticationFailed as exc:
                    await refuse(exc)
                    return
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await reject_too_large()
                return
            budget = self.budget_for(path) if has_body else None
            if budget is not None:
                wanted = int(declared) if declared is not None and declared.isdigit() else limit
                taken = budget.take(wanted)
                if taken is None:
                    await refuse(Unavailable(
                        f"The server is receiving {budget.used} bytes of uploads already and this one "
                        f"({wanted} bytes) does not fit in AIAAS_UPLOAD_BYTES_IN_FLIGHT ({budget.capacity}); "
                        "retry after the Retry-After seconds.",
                        code="upload_capacity", headers={"Retry-After": "1"},
                    ))
                    return
                reserved = taken
            await self.app(scope, limited_receive, edge_send)
        except PayloadTooLarge:
            if not started:
                await reject_too_large()
        except Exception as exc:
            if started:
                log.exception("unhandled error after the answer started, request id %s", rid)
                raise
            status = await _answer_failure(send, path, rid, rid_header, exc)
        finally:
            if budget is not None and reserved:
                budget.give(reserved)
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started_at
            self.telemetry.http(scope["method"], template, status, elapsed)
            if access_log.isEnabledFor(logging.INFO):
                _log_access(state, rid, scope["method"], template, status, elapsed, received, sent)


def _log_access(state: dict, rid: str, method: str, route: str, status: int, elapsed: float, received: int,
                sent: int) -> None:
    """The access line: ids, the route template (never the path: names in it are the caller's data),
    status, latency and byte counts. Bodies, texts, labels and keys never appear."""
    principal = state.get("principal")
    access_log.info("%s %s %d %.1fms", method, route, status, elapsed * 1000, extra={
        "request_id": rid, "org_id": getattr(principal, "org_id", None), "key_id": getattr(principal, "key_id", None),
        "method": method, "route": route, "status": status, "latency_ms": round(elapsed * 1000, 2),
        "bytes_in": received, "bytes_out": sent})


async def _answer_failure(send: Send, path: str, rid: str, rid_header: tuple[bytes, bytes], exc: Exception) -> int:
    """The answer to an exception no handler took, before any byte was sent: a busy database is contention,
    not a fault (503 database_busy, retryable: its transaction wrote nothing); anything else is a 500 that
    names the request id (the traceback goes to the log)."""
    if is_busy(exc):
        log.warning("database busy, request id %s: %s", rid, exc)
        busy = DatabaseBusy("The database was busy and nothing was written; retry the same request after the "
                            "Retry-After seconds (AIAAS_DATABASE_URL on PostgreSQL takes more concurrent writes).")
        await _respond(send, 503, error_body(path, busy, rid), [rid_header, (b"retry-after", b"1")])
        return 503
    log.exception("unhandled error, request id %s", rid, exc_info=exc)
    message = f"Internal server error (request id {rid})."
    body = _json_error(path, message, kind="server_error", code="internal_error", request_id=rid)
    await _respond(send, 500, body, [rid_header])
    return 500


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


__all__ = ["ByteBudget", "EdgeMiddleware", "request_id_var", "scope_header", "type_for"]
