"""Files (datasets) on the wire, in the OpenAI shape."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

PURPOSES = ("fine-tune", "fine-tune-results", "batch", "batch_output")

# What an upload does with personal data found in it (our extension, a form field next to `purpose`):
# "allow" stores it as sent, "redact" stores it with each value replaced by a placeholder such as
# [EMAIL], "reject" refuses the upload (400 `pii_detected`) naming the kinds, lines and columns.
PiiPolicy = Literal["allow", "redact", "reject"]
PII_POLICIES: tuple[str, ...] = ("allow", "redact", "reject")


class FilePublic(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    status_details: str | None = None
    # Our extension: what the upload check saw (format, encoding, rows, columns) and, under "pii",
    # the PII scan: policy, counts per kind, affected rows, first lines and columns (never values).
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
        # Why a file's check failed (status "error"), as OpenAI's file object says it.
        "status_details": ((row.summary or {}).get("error") or {}).get("message"),
        "summary": row.summary or None,
    }
