"""What FastAPI makes of a route's return value, for the shortcut (aiaas/api/fastpath.py).

FastAPI answers a route that returns a dict through the route's response field: validated, then
dumped to JSON by pydantic (not by `json.dumps`: floats are written differently), with the headers
the route set on its injected `Response` appended. The shortcut must send the same bytes, so it
does the same with the same field; a route that returns a Response is sent as it is.
"""

from __future__ import annotations

from typing import Any

from fastapi.datastructures import DefaultPlaceholder
from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from starlette.responses import Response


def sub_response() -> Response:
    """The `Response` FastAPI injects into a route that asks for one: headers only, no status."""
    response = Response()
    del response.headers["content-length"]
    response.status_code = None  # type: ignore[assignment]  # FastAPI's own marker for "not set"
    return response


def check_route(route: APIRoute) -> None:
    """The shortcut mirrors FastAPI's default answer only: a route with its own response class
    or status code would need more, so it is refused here rather than answered differently."""
    if not isinstance(route.response_class, DefaultPlaceholder) or route.status_code not in (None, 200):
        raise ValueError(f"{route.path}: the shortcut answers default JSON 200 routes only")


def framework_answer(route: APIRoute, result: Any, sub: Response) -> Response:
    if isinstance(result, Response):
        return result
    field = route.response_field
    if field is None:
        raise ValueError(f"{route.path}: a route without a response field is not a shortcut")
    value, errors = field.validate(result, {}, loc=("response",))
    if errors:  # a 500, as FastAPI answers it
        raise ResponseValidationError(errors=errors, body=result)
    content = field.serialize_json(
        value,
        include=route.response_model_include,
        exclude=route.response_model_exclude,
        by_alias=route.response_model_by_alias,
        exclude_unset=route.response_model_exclude_unset,
        exclude_defaults=route.response_model_exclude_defaults,
        exclude_none=route.response_model_exclude_none,
    )
    response = Response(content=content, media_type="application/json", status_code=sub.status_code or 200)
    response.headers.raw.extend(sub.headers.raw)
    return response
