"""Audit log records on the wire."""

from __future__ import annotations

from typing import Any


def log_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "audit_log",
        "created_at": row.created_at,
        "action": row.action,
        "actor": {"type": "api_key", "id": row.actor_key_id} if row.actor_key_id else None,
        "target": {"type": row.target_type, "id": row.target_id} if row.target_id else None,
        "request_id": row.request_id,
        "client_ip": row.client_ip,
        "details": row.details or {},
    }
