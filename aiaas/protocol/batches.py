"""Batches on the wire, in OpenAI's shape (issue 16), plus CSV scoring's extensions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from aiaas.protocol.common import StrictModel


class BatchCreate(StrictModel):
    input_file_id: str = Field(min_length=1, max_length=40)
    endpoint: str = Field(min_length=1, max_length=300)
    completion_window: Literal["24h"] = "24h"
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    # CSV/Parquet scoring (our extension; the openai SDK sends these through extra_body).
    text_column: str | None = Field(default=None, min_length=1, max_length=200)
    deployment: str | None = Field(default=None, min_length=1, max_length=100)
    model: str | None = Field(default=None, min_length=1, max_length=300)
    top_k: int = Field(default=3, ge=1, le=20)


def batch_public(row: Any) -> dict[str, Any]:
    errors = row.errors
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": {"object": "list", "data": errors["data"]} if errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": row.status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": row.created_at,
        "in_progress_at": row.in_progress_at,
        "expires_at": row.expires_at,
        "finalizing_at": row.finalizing_at,
        "completed_at": row.completed_at,
        "failed_at": row.failed_at,
        "expired_at": row.expired_at,
        "cancelling_at": row.cancelling_at,
        "cancelled_at": row.cancelled_at,
        "request_counts": {"total": row.total, "completed": row.completed, "failed": row.failed},
        "metadata": row.batch_metadata,
        # Our extension: CSV scoring's options and how many input lines are answered so far.
        "options": row.options or None,
        "progress": {"answered": row.cursor, "total": row.total},
    }


BatchStatus = Literal["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                      "cancelled"]
