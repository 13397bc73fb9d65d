"""Pure ASGI middleware (BaseHTTPMiddleware breaks contextvars and background tasks)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.core.errors import PayloadTooLarge, type_for

log = logging.getLogger(__name__)
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k == name:
            return v.decode("latin-1")
    return None


class RequestIdMiddleware:
    """Every response carries X-Request-ID; a well-formed client-sent id is echoed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        rid = sent if sent and _REQUEST_ID_RE.match(sent) else "req_" + secrets.token_hex(12)
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def error_body(path: str, exc: PayloadTooLarge, request_id: str) -> bytes:
    if path.startswith("/v2"):
        return json.dumps({"error": exc.message}).encode()
    detail = exc.to_dict() | {"request_id": request_id}
    return json.dumps({"error": detail}).encode()


class BodyLimitMiddleware:
    """Enforce the request-body limit while reading: 413 before the whole body is read."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        exc = PayloadTooLarge(f"Request body is larger than the limit of {limit} bytes for {scope['path']}.")

        def rejection() -> tuple[Message, Message]:
            rid = scope.get("state", {}).get("request_id", "-")
            start: Message = {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
            return start, {"type": "http.response.body", "body": error_body(scope["path"], exc, rid)}

        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            for message in rejection():
                await send(message)
            return

        received = 0
        overflow = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Body parsers may wrap this error in their own (a 400); the flag below makes
                    # sure the client still gets the 413 it deserves.
                    overflow = True
                    raise exc
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if overflow and not started:
                if message["type"] == "http.response.start":
                    started = True
                    start, body = rejection()
                    await send(start)
                    await send(body)
                return
            if message["type"] == "http.response.start":
                started = True
            if overflow:
                return  # the 413 has already been sent; drop the app's own answer
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except PayloadTooLarge:
            if started:
                return
            for message in rejection():
                await send(message)


class RejectNulMiddleware:
    """A NUL character in the path or query string is never meaningful (ids, names, filters) and
    PostgreSQL cannot compare text with one: answer 400 before any route sees it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"")
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                message = "The URL contains a NUL (%00) character; remove it."
                if scope["path"].startswith("/v2"):
                    body = json.dumps({"error": message})
                else:
                    body = json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                                 "code": "invalid_request", "param": None,
                                                 "request_id": request_id_var.get()}})
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)


class UnhandledErrorMiddleware:
    """Turn an unexpected exception into a generic 500 that carries the request id.

    Sits inside RequestIdMiddleware (Starlette's own catch-all sits outside every
    middleware, where the request id is already gone).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            rid = request_id_var.get()
            log.exception("unhandled error, request id %s", rid)
            if started:
                raise
            message = f"Internal server error (request id {rid})."
            if scope["path"].startswith("/v2"):
                body = json.dumps({"error": message})
            else:
                body = json.dumps(
                    {"error": {"message": message, "type": "server_error", "code": "internal_error",
                               "param": None, "request_id": rid}}
                )
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body.encode()})


class RateLimitHeadersMiddleware:
    """Put the `x-ratelimit-*` headers a request earned on its response, success or 429 alike.

    The auth dependency and `charge_tokens` leave them in the request state
    (`scope["state"]["ratelimit_headers"]`); headers the response already has win.
    """

    def __init__(self, app: ASGIApp, *, state_key: str = "ratelimit_headers") -> None:
        self.app = app
        self.state_key = state_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                earned = state.get(self.state_key)
                if earned:
                    headers = list(message.get("headers", []))
                    present = {k.lower() for k, _ in headers}
                    headers += [(k.lower().encode(), v.encode()) for k, v in earned.items()
                                if k.lower().encode() not in present]
                    message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_limits)


class MetricsMiddleware:
    """Prometheus request count and latency, labelled by route template (bounded cardinality)."""

    def __init__(self, app: ASGIApp, *, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter(
            "aiaas_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "aiaas_http_request_duration_seconds", "HTTP request latency", ["method", "route"], registry=registry
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            self.requests.labels(scope["method"], template, str(status)).inc()
            self.latency.labels(scope["method"], template).observe(time.perf_counter() - start)


__all__ = [
    "BodyLimitMiddleware", "MetricsMiddleware", "RateLimitHeadersMiddleware", "RequestIdMiddleware",
    "UnhandledErrorMiddleware", "request_id_var", "type_for",
]
