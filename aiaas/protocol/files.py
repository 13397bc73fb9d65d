"""Files (datasets) on the wire, in the OpenAI shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

PURPOSES = ("fine-tune", "fine-tune-results")


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    # Our extension: what the upload check saw (format, encoding, rows, columns, PII scan).
    summary: dict[str, Any] | None = None


def file_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "file",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": row.status,
        "status_details": None,
        "summary": row.summary or None,
    }
