"""Shapes shared by every resource: the list envelope, the error body, the delete answer."""

from __future__ import annotations

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


class OipErrorResponse(BaseModel):
    """Open Inference Protocol v2 errors: a plain message."""

    error: str


def declared_errors(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """The error statuses every route may answer, for the OpenAPI spec."""
    return {code: {"model": model} for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)}
