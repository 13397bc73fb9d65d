"""Shapes shared by every resource: the list envelope, the error body, the delete answer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator


class StrictModel(BaseModel):
    """Request bodies: unknown fields are an error naming the field; text never holds NUL characters
    (PostgreSQL cannot store them, and no name, id or input needs one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if _has_nul(value):
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None
    param: str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def list_response(items: list[Any], *, has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
    }


def _json(value: Any) -> bytes:
    # As starlette's JSONResponse renders a body, so a streamed list reads byte for byte as a returned one.
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()


def list_stream(pages: Iterable[Iterable[dict[str, Any]]]) -> Iterator[bytes]:
    """`list_response(every item, has_more=False)` as JSON bytes, one page of items at a time: a long list
    is never held whole (the pages can be read lazily, e.g. from the database in batches)."""
    first = last = None
    yield b'{"object":"list","data":['
    sep = b""
    for page in pages:
        parts = []
        for item in page:
            first = item["id"] if first is None else first
            last = item["id"]
            parts.append(sep + _json(item))
            sep = b","
        page = []  # let this page go before the next is read: one page held at a time
        if parts:
            chunk, parts = b"".join(parts), []
            yield chunk
            del chunk
    yield b'],"has_more":false,"first_id":' + _json(first) + b',"last_id":' + _json(last) + b"}"


class OipErrorResponse(BaseModel):
    """Open Inference Protocol v2 errors: a plain message."""

    error: str


def declared_errors(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The error statuses every route may answer, for the OpenAPI spec."""
    return {code: {"model": model} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)}
