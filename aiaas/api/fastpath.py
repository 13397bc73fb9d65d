"""A shortcut through the framework for the inference routes: native predict, /v1/classifications,
/v1/embeddings and OIP v2 infer (`/v2/models/{model_name}[/versions/{model_version}]/infer`).

FastAPI spends ~0.12 ms of event-loop CPU per request finding the route and solving its
dependencies, a quarter of the event loop's work per prediction (bench/README.md,
"Serving: what changed"). This middleware answers a well-formed inference request itself,
with the route's own parts: the route's body field (the same JSON parse and validation
FastAPI does), the same authentication and rate limiting (`get_principal`), the same route
function, FastAPI's own serialisation of what it returns (aiaas/api/fastpath_answer.py), and
the app's exception handlers for whatever they raise, so the answer is the one the framework
would have given. Anything it does not recognise as well-formed (another content type, a body
that is not JSON or that the model rejects) goes on to the framework with the body it read,
which answers exactly as before. OIP routes read their own body (any content type, binary
tensors, gzip), so they are not pre-read. `AIAAS_FAST_PREDICT_ROUTE=false` turns it off.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiaas.api.deps import AppState, app_state, get_principal
from aiaas.api.fastpath_answer import check_route, framework_answer, sub_response
from aiaas.api.middleware import scope_header
from aiaas.api.routes import deployments, inference, oip
from aiaas.security.keys import Principal

# (path params, validated body or None, request, sub-response, principal, state) -> what the route returns
Call = Callable[[dict[str, Any], Any, Request, Response, Principal, AppState], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Shortcut:
    route: APIRoute  # the route FastAPI would match: its regex, body field, answer and template (metrics, scopes)
    call: Call

    @property
    def json_body(self) -> bool:
        """The route takes a JSON body model, validated here; otherwise the route reads the body itself."""
        return self.route.body_field is not None


def _route(router: Any, endpoint: Callable[..., Any]) -> APIRoute:
    return next(r for r in router.routes if getattr(r, "endpoint", None) is endpoint)


def shortcuts() -> tuple[Shortcut, ...]:
    """The routes answered here, busiest first. Each call passes what FastAPI would inject."""
    return (
        Shortcut(_route(deployments.router, deployments.predict),
                 lambda p, body, req, _sub, who, state: deployments.predict(p["name"], body, req, who, state)),
        Shortcut(_route(inference.router, inference.classifications),
                 lambda _p, body, req, sub, who, state: inference.classifications(body, req, sub, who, state)),
        Shortcut(_route(inference.router, inference.embeddings),
                 lambda _p, body, req, sub, who, state: inference.embeddings(body, req, sub, who, state)),
        Shortcut(_route(oip.router, oip.infer),
                 lambda p, _body, req, _sub, who, state: oip.infer(p["model_name"], req, who, state)),
        Shortcut(_route(oip.router, oip.infer_version),
                 lambda p, _body, req, _sub, who, state: oip.infer_version(p["model_name"], p["model_version"],
                                                                           req, who, state)),
    )


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


class FastRoutesMiddleware:
    def __init__(self, app: ASGIApp, *, handlers: Callable[[], dict[Any, Any]]) -> None:
        """`handlers` returns the app's exception handlers ({exception class: handler})."""
        self.app = app
        self.handlers = handlers
        self.shortcuts = shortcuts()
        for shortcut in self.shortcuts:
            check_route(shortcut.route)

    def _match(self, scope: Scope) -> tuple[Shortcut, dict[str, Any]] | None:
        """The shortcut and path params for this request, as Starlette's Route.matches finds them."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path = _route_path(scope)
        for shortcut in self.shortcuts:
            route = shortcut.route
            match = route.path_regex.match(path)
            if match is not None:
                params = {k: route.param_convertors[k].convert(v) for k, v in match.groupdict().items()}
                return shortcut, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._match(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        shortcut, params = found
        body: Any = None
        route_receive = receive  # what the route's Request reads from
        if shortcut.json_body:
            if not _is_json(scope_header(scope, b"content-type")):
                await self.app(scope, receive, send)
                return
            raw = await _read_body(receive)
            if raw is None:  # the client went away mid-body: let the framework see the same
                await self.app(scope, receive, send)
                return
            route_receive = _replay(raw, receive)
            body = _validated(shortcut.route, raw)
            if body is None:  # the framework words the 400 (field, message) as it always has
                await self.app(scope, route_receive, send)
                return
        scope["route"] = shortcut.route
        scope["path_params"] = dict(scope.get("path_params", {})) | params
        request = Request(scope, route_receive)
        try:
            principal = await get_principal(request)
            sub = sub_response()
            result = await shortcut.call(params, body, request, sub, principal, app_state(request))
            response = framework_answer(shortcut.route, result, sub)
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
    """The path the app's routes see (Starlette's get_route_path): without the root path it is mounted under."""
    path, root = scope["path"], scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root):] if path[len(root)] == "/" else path


def _validated(route: APIRoute, raw: bytes) -> Any:
    """The body as FastAPI hands it to the route (json.loads, then the body field's validation),
    or None when FastAPI would answer 400 (it then does, from the same bytes)."""
    field = route.body_field
    if field is None or not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError, and bytes that are not UTF-8/16/32
        return None
    validated, errors = field.validate(value, {}, loc=("body",))
    return None if errors else validated


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
