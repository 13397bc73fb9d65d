"""A shortcut through the framework for the busiest route, POST /v1/deployments/{name}/predict.

FastAPI spends ~0.12 ms of event-loop CPU per request finding the route and solving its
dependencies, a quarter of the event loop's work per prediction (bench/README.md,
"Serving: what changed"). This middleware answers a well-formed predict request itself,
with the route's own parts: the same body model (`PredictRequest`), the same
authentication and rate limiting (`get_principal`), the same route function, and the
app's own exception handlers for whatever they raise, so the answer is the one the
framework would have given. Anything it does not recognise as well-formed (another
content type, a body the model rejects) goes on to the framework with the body it read,
which answers exactly as before. `AIAAS_FAST_PREDICT_ROUTE=false` turns it off.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.api.deps import app_state, get_principal
from aiaas.api.middleware import scope_header
from aiaas.api.routes import deployments
from aiaas.protocol.inference import PredictRequest

_PREDICT = re.compile(r"^/v1/deployments/(?P<name>[^/]+)/predict$")


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";", 1)[0].strip().lower() == "application/json"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that hands over an already-read body once, then defers to the real one
    (for the disconnect a streaming response may wait for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class FastPredictMiddleware:
    def __init__(self, app: ASGIApp, *, handlers: Callable[[], dict[Any, Any]]) -> None:
        """`handlers` returns the app's exception handlers ({exception class: handler})."""
        self.app = app
        self.handlers = handlers
        # The route object FastAPI would put in the scope: metrics label it, the key's scope check reads it.
        self.route = next(
            r for r in deployments.router.routes if getattr(r, "endpoint", None) is deployments.predict
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PREDICT.match(_route_path(scope))
        if match is None or not _is_json(scope_header(scope, b"content-type")):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client went away mid-body: let the framework see the same
            await self.app(scope, receive, send)
            return
        try:
            payload = PredictRequest.model_validate_json(body)
        except ValidationError:  # the framework words the 400 (field, message) as it always has
            await self.app(scope, _replay(body, receive), send)
            return
        name = match["name"]
        scope["route"] = self.route
        scope["path_params"] = {"name": name}
        request = Request(scope, _replay(body, receive))
        try:
            principal = await get_principal(request)
            result = await deployments.predict(name, payload, request, principal, app_state(request))
            response = result if isinstance(result, Response) else JSONResponse(result)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # the edge middleware's catch-all answers 500
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
        await response(scope, receive, send)

    def _handler_for(self, exc: Exception) -> Any:
        handlers = self.handlers()
        for cls in type(exc).__mro__:
            if cls in handlers:
                return handlers[cls]
        return None


def _route_path(scope: Scope) -> str:
    """The path the app's routes see: without the root path it is mounted under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
