"""Native inference and deployments on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aiaas.protocol.common import StrictModel


class DeploymentCreate(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=300)
    min_replicas: Literal[0, 1] = 0


def deployment_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "deployment",
        "name": row.name,
        "model": row.model,
        "min_replicas": row.min_replicas,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


class PredictRequest(StrictModel):
    inputs: list[str] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=1000)
