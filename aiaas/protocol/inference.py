"""Native inference and deployments on the wire."""

from __future__ import annotations

import base64
from typing import Any, Literal

from pydantic import ConfigDict, Field

from aiaas.protocol.common import StrictModel

MAX_REPLICAS = 64


class DeploymentCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "support", "model": "ft:minilm-l6:acme:support:ftjob-abc123", "min_replicas": 0}]})

    name: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=300)
    min_replicas: Literal[0, 1] = 0
    # In process: at most this many inference threads serve the deployment at once (a hot deployment
    # cannot starve the others); on Ray Serve: the autoscaler's upper bound. None: no bound of its own.
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)


def deployment_public(row: Any, spec: dict[str, Any] | None = None, revision: int = 0) -> dict[str, Any]:
    """A deployment; with its current spec (issue 14), also its traffic split, sticky header, shadow, revision
    and request logging."""
    shape = {
        "id": row.id,
        "object": "deployment",
        "name": row.name,
        "model": row.model,
        "min_replicas": row.min_replicas,
        "max_replicas": getattr(row, "max_replicas", None),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    if spec is not None:
        shape |= {"traffic": spec["traffic"], "sticky_header": spec.get("sticky_header"),
                  "shadow": spec.get("shadow"), "revision": revision,
                  # sampled request/response logging (issue 16): off (0) unless PATCHed
                  "request_logging": {"sample_rate": float(getattr(row, "request_log_sample_rate", 0.0) or 0.0),
                                      "retention_days": int(getattr(row, "request_log_retention_days", 30) or 30)}}
    return shape


class PredictRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": ["where is my parcel?", "I want my money back"], "top_k": 2}]})

    inputs: list[str] = Field(min_length=1)
    top_k: int | None = Field(default=None, ge=1, le=1000)


# -- answers: the one shape of each, for the online routes and the batch lines (services/batches.py) --------
def usage_public(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def embeddings_public(model_id: str, vectors: Any, tokens: int, *, base64_out: bool) -> dict[str, Any]:
    """POST /v1/embeddings: one float32 vector per input, as a list or little-endian base64."""
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if base64_out else v.tolist()}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": model_id, "usage": usage_public(tokens)}


def classifications_public(model_id: str, results: list[dict[str, Any]], tokens: int) -> dict[str, Any]:
    """POST /v1/classifications."""
    return {"object": "list", "model": model_id,
            "data": [{"object": "classification", "index": i, **r} for i, r in enumerate(results)],
            "usage": usage_public(tokens)}


def predictions_public(deployment: str, model_id: str, results: list[dict[str, Any]],
                       tokens: int) -> dict[str, Any]:
    """POST /v1/deployments/{name}/predict."""
    return {"object": "list", "model": model_id, "deployment": deployment,
            "data": [{"index": i, **r} for i, r in enumerate(results)], "usage": usage_public(tokens)}
