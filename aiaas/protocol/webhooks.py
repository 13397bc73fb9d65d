"""Public shapes of webhook endpoints and their deliveries (issue 16)."""

from __future__ import annotations

from typing import Any


def endpoint_public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "object": "webhook_endpoint", "url": row.url, "events": list(row.events),
            "description": row.description, "enabled": row.enabled, "created_at": row.created_at}


def delivery_public(row: Any) -> dict[str, Any]:
    return {"id": row.id, "object": "webhook_delivery", "webhook_id": row.endpoint_id, "event_type": row.event_type,
            "event_id": row.payload.get("id"), "status": row.state, "attempts": row.attempts,
            "next_attempt_at": int(row.next_attempt_at) if row.state == "pending" else None,
            "attempt_log": list(row.attempt_log or []), "created_at": row.created_at,
            "delivered_at": row.delivered_at}
