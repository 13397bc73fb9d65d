"""What each route declares in the OpenAPI document: its answer's schema and the error codes it can answer.

`documented(Model, "not_found", ...)` is a route decorator's `responses=`: the success schema (documented
only: the route's answer is not re-validated at run time) and, per HTTP status, the error envelope
(aiaas/protocol/common.py) with the codes that status carries, each with an example body. Every route
also carries the codes any request may meet at the edge (its key, its scope, the body limit, the rate
limit, a malformed parameter, an internal error); POSTs add the Idempotency-Key codes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from aiaas.core.errors import HTTP_STATUS, type_for
from aiaas.protocol.common import ErrorResponse, OipErrorResponse

# What a code means, as the document says it (every code a route declares must be here and in the table).
MEANING: dict[str, str] = {
    "validation_error": "a parameter or body field is missing or invalid (param names it)",
    "invalid_json": "the body is not valid JSON",
    "invalid_request": "the request cannot be done as asked (the message says what to change)",
    "invalid_file": "the file cannot be used (line-numbered when it is the content)",
    "pii_detected": "the upload holds personal data and its pii_policy is reject",
    "too_many_rows": "the upload decodes to more rows than the server's limit",
    "too_many_columns": "the upload has more columns than the server's limit",
    "cell_too_large": "a cell of the upload is over the server's limit",
    "row_too_large": "a row of the upload is over the server's limit",
    "file_too_large_decoded": "the upload decodes to more bytes than the server's limit",
    "base_model_unavailable": "the base model is not installed on this server",
    "unsupported_integration": "an integrations item has a type this server does not support",
    "integration_not_allowed": "an integration's tracking URI is not allowed by the operator",
    "missing_api_key": "no Authorization: Bearer key",
    "invalid_api_key": "the key is not valid",
    "expired_api_key": "the key has expired",
    "revoked_api_key": "the key was revoked",
    "insufficient_scope": "the key lacks the scope this route needs",
    "not_found": "no such object in this organisation (param names which)",
    "conflict": "the object exists already, or is in use",
    "insufficient_memory": "loading the model would exceed the server's memory budget",
    "idempotency_key_in_progress": "the first request with this Idempotency-Key still runs: retry later",
    "idempotency_key_reused": "this Idempotency-Key was used with a different request",
    "payload_too_large": "the body is over the server's limit",
    "unsupported_file": "the file's format is not CSV, JSONL or Parquet",
    "rate_limit_exceeded": "too many requests: wait Retry-After seconds",
    "quota_exceeded": "an organisation quota is reached (x-should-retry: false)",
    "internal_error": "a server fault (the message carries the request id)",
    "model_not_ready": "the model is loading: retry after Retry-After",
    "unavailable": "the service cannot answer now: retry later",
    "upload_capacity": "too many uploads in flight: retry later",
    "database_busy": "the database was busy and nothing was written: retry after Retry-After",
    "monitoring_disabled": "monitoring is off on this server",
    "no_request_logs": "the deployment has no sampled requests kept to export",
    "file_not_ready": "the file is still being checked (status uploaded): retry when it is processed",
    "invalid_name": "a name does not follow the naming rules (param names which)",
    "checkpoint_unavailable": "the checkpoint's files were not kept, so it cannot become a version",
}

EDGE = ("validation_error", "missing_api_key", "invalid_api_key", "expired_api_key", "revoked_api_key",
        "insufficient_scope", "payload_too_large", "rate_limit_exceeded", "internal_error", "database_busy")
PUBLIC_EDGE = ("validation_error", "payload_too_large", "rate_limit_exceeded", "internal_error", "database_busy")
POST = ("invalid_json", "invalid_request", "idempotency_key_in_progress", "idempotency_key_reused")


def documented(model: Any = None, *codes: str, status: int = 200, post: bool = False, public: bool = False,
               oip: bool = False, media: dict[str, Any] | None = None) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: `model` at `status` (or `media`, for a non-JSON body) and the error codes."""
    out: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        out[status] = {"model": model, "description": "Successful Response"}
    if media is not None:  # another body, or a second one beside the JSON model
        out[status] = out.get(status, {"description": "Successful Response"}) | {"content": media}
    wanted = [*(PUBLIC_EDGE if public else EDGE), *(POST if post else ()), *codes]
    by_status: dict[int, list[str]] = {}
    for code in dict.fromkeys(wanted):
        if code not in MEANING or code not in HTTP_STATUS:
            raise KeyError(f"error code {code!r} is not documented in aiaas/api/openapi.py MEANING or the table")
        by_status.setdefault(HTTP_STATUS[code], []).append(code)
    for http_status, listed in sorted(by_status.items()):
        out[http_status] = _error_response(http_status, listed, OipErrorResponse if oip else ErrorResponse)
    return out


def _error_response(status: int, codes: list[str], envelope: type[BaseModel]) -> dict[str, Any]:
    lines = "; ".join(f"`{c}`: {MEANING[c]}" for c in codes)
    if envelope is OipErrorResponse:
        examples = {c: {"summary": MEANING[c], "value": {"error": MEANING[c]}} for c in codes}
    else:
        examples = {c: {"summary": MEANING[c], "value": {"error": {
            "message": MEANING[c][0].upper() + MEANING[c][1:] + ".", "type": type_for(status), "code": c,
            "param": None, "request_id": "req_7f3a9c2e4b1d4e0f"}}} for c in codes}
    return {"model": envelope, "description": f"Error codes: {lines}.",
            "content": {"application/json": {"examples": examples}}}


def tidy_schema(spec: dict[str, Any]) -> dict[str, Any]:
    """The document without what FastAPI adds beside a declared model: a route annotated `-> dict` gets
    `{"type": "object", "additionalProperties": true, "title": "Response …"}` next to the `$ref` its
    `responses=` names; the `$ref` alone says the same, once."""
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            for response in operation.get("responses", {}).values():
                for media in (response.get("content") or {}).values():
                    schema = media.get("schema")
                    if isinstance(schema, dict) and "$ref" in schema and len(schema) > 1:
                        media["schema"] = {"$ref": schema["$ref"]}
    return spec


def install_openapi(app: Any) -> None:
    """app.openapi() builds the document once, tidied."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = tidy_schema(build())
        return app.openapi_schema

    app.openapi = openapi
