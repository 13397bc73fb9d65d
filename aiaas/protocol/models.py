"""Models on the wire (OpenAI's model object plus our extensions): registered fine-tuned models,
the base models a job may start from, and the model families (tfidf-linear, auto)."""

from __future__ import annotations

from typing import Any


def model_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "model",
        "created": row.created_at,
        "owned_by": row.org_id,
        "task": row.task,
        "base_model": row.base_model,
        "family": (row.lineage or {}).get("family") or "transformer",
        "fine_tuning_job": row.job_id,
        "labels": (row.card or {}).get("labels"),
        "card": row.card,
    }


def base_model_public(model_id: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 0,
        "owned_by": "aiaas",
        "task": "feature-extraction",
        "family": "transformer",
        **({"details": info} if info else {}),
    }


def family_public(info: dict[str, Any]) -> dict[str, Any]:
    """A model family a fine-tuning job may name as its `model` (it cannot be called itself: no task)."""
    return {
        "id": info["id"],
        "object": "model",
        "created": 0,
        "owned_by": "aiaas",
        "task": None,
        "family": info["family"],
        "details": {"description": info["description"]},
    }
