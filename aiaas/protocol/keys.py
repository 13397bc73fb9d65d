"""API keys and organisations on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aiaas.protocol.common import StrictModel

Scope = Literal["admin", "write", "infer", "read"]


def _default_scopes() -> list[Scope]:
    return ["read", "write"]


class ApiKeyCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "ci", "scopes": ["read", "write"], "expires_in_seconds": 2592000}]})

    name: str = Field(min_length=1, max_length=200)
    scopes: list[Scope] = Field(default_factory=_default_scopes, min_length=1)
    expires_in_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 86400)

    @field_validator("scopes")
    @classmethod
    def _unique(cls, v: list[Scope]) -> list[Scope]:
        return sorted(set(v))


class ApiKeyPublic(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    prefix: str
    scopes: list[str]
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    last_used_at: int | None = None


class ApiKeyCreated(ApiKeyPublic):
    """Returned once, at creation: the only time the plaintext key is shown."""

    key: str


class OrganizationPublic(BaseModel):
    id: str
    object: Literal["organization"] = "organization"
    name: str
    created_at: int
    settings: dict[str, Any] = Field(default_factory=dict)


def key_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "api_key",
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
    }


def organization_public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "created_at": row.created_at, "settings": row.settings or {}}
