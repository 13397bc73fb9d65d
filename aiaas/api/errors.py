"""One error handler: stable codes to HTTP status, OpenAI shape on /v1, `{"error": "..."}` on /v2.

5xx bodies stay generic and carry the request id; no stack trace or path ever leaves.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiaas.api.middleware import request_id_var
from aiaas.core.errors import AiaasError, InvalidRequest, NotFound, type_for

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "invalid_api_key", 413: "payload_too_large"}


def error_response(request: Request, exc: AiaasError) -> JSONResponse:
    rid = request_id_var.get()
    if request.url.path.startswith("/v2"):
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
    body: dict[str, Any] = {"error": exc.to_dict() | {"request_id": rid}}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts) or "body"


def validation_to_error(exc: RequestValidationError) -> AiaasError:
    errors = exc.errors()
    if not errors:
        return InvalidRequest("The request is invalid.")
    first = errors[0]
    kind = first.get("type", "")
    field = _field(tuple(first.get("loc", ())))
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return AiaasError(
            f"The request body is not valid JSON ({ctx.get('error', 'parse error')}).", code="invalid_json"
        )
    if kind == "extra_forbidden":
        msg = f"Unknown field '{field}'; remove it (check its spelling)."
    elif kind == "missing":
        msg = f"Missing required field '{field}'."
    else:
        msg = f"Invalid value for '{field}': {first.get('msg', 'invalid')}."
    if len(errors) > 1:
        msg += f" ({len(errors) - 1} more problem{'s' if len(errors) > 2 else ''} in this request.)"
    return AiaasError(msg, code="validation_error", param=field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AiaasError)
    async def _aiaas(request: Request, exc: AiaasError) -> JSONResponse:
        if exc.code == "internal_error":  # 503s (unavailable, not ready) keep their code: clients retry them
            log.error("internal error %s: %r", request_id_var.get(), exc)
            exc = AiaasError(f"Internal server error (request id {request_id_var.get()}).")
        return error_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(request, validation_to_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "invalid_request")
        message = "No such route." if exc.status_code == 404 else str(exc.detail)
        err = NotFound(message) if exc.status_code == 404 else AiaasError(message, code=code)
        resp = error_response(request, err)
        resp.status_code = exc.status_code
        return resp


__all__ = ["error_response", "install_error_handlers", "type_for"]
