"""Webhook endpoints and their deliveries (the outbox and the delivery log), scoped by organisation."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.core.errors import not_found
from aiaas.core.ids import new_id
from aiaas.store.db import rows_changed
from aiaas.store.models import WebhookDelivery, WebhookEndpoint
from aiaas.store.pagination import page
from aiaas.core.clock import now

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def create_endpoint(session: Session, org_id: str, *, endpoint_id: str, url: str, events: list[str],
                    description: str | None, sealed_secret: bytes) -> WebhookEndpoint:
    row = WebhookEndpoint(id=endpoint_id, org_id=org_id, url=url, events=events, description=description,
                          sealed_secret=sealed_secret, enabled=True, created_at=now())
    session.add(row)
    session.flush()
    return row


def get_endpoint(session: Session, org_id: str, endpoint_id: str) -> WebhookEndpoint:
    row = session.scalar(select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id,
                                                       WebhookEndpoint.id == endpoint_id))
    if row is None:
        raise not_found("webhook", endpoint_id, param="webhook_id")
    return row


def list_endpoints(session: Session, org_id: str, *, after: str | None, limit: int
                   ) -> tuple[list[WebhookEndpoint], bool]:
    return page(session, select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id), WebhookEndpoint.id,
                after=after, limit=limit)


def subscribed(session: Session, org_id: str, event_type: str) -> list[WebhookEndpoint]:
    """The organisation's enabled endpoints that want `event_type`."""
    rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id,
                                                         WebhookEndpoint.enabled.is_(True)))
    return [r for r in rows if matches(r.events, event_type)]


def matches(patterns: list[Any], event_type: str) -> bool:
    return any(p == event_type or (p.endswith(".*") and event_type.startswith(p[:-1])) or p == "*"
               for p in patterns)


def enqueue(session: Session, endpoint: WebhookEndpoint, *, event_type: str, event_key: str,
            payload: dict[str, Any], at: int | None = None) -> bool:
    """Add one delivery unless this endpoint already has the event; whether it was added. `at`: the caller's
    clock reading, so a delivery enqueued by a pass is due in that same pass even if the second ticks over."""
    t = now() if at is None else at
    row = WebhookDelivery(id=new_id("msg"), org_id=endpoint.org_id, endpoint_id=endpoint.id, event_type=event_type,
                          event_key=event_key, payload=payload, state=PENDING, attempts=0, next_attempt_at=float(t),
                          attempt_log=[], created_at=t)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        return False
    return True


def due(session: Session, *, at: float, limit: int) -> list[WebhookDelivery]:
    stmt = (select(WebhookDelivery).where(WebhookDelivery.state == PENDING, WebhookDelivery.next_attempt_at <= at)
            .order_by(WebhookDelivery.next_attempt_at).limit(limit))
    return list(session.scalars(stmt))


def claim(session: Session, delivery: WebhookDelivery, *, until: float) -> bool:
    """Take a due delivery for this process (another API process may be looking at it too)."""
    result = session.execute(update(WebhookDelivery).where(
        WebhookDelivery.id == delivery.id, WebhookDelivery.state == PENDING,
        WebhookDelivery.next_attempt_at == delivery.next_attempt_at).values(next_attempt_at=until))
    return bool(rows_changed(result))


def list_deliveries(session: Session, org_id: str, endpoint_id: str, *, after: str | None, limit: int
                    ) -> tuple[list[WebhookDelivery], bool]:
    get_endpoint(session, org_id, endpoint_id)
    stmt = select(WebhookDelivery).where(WebhookDelivery.org_id == org_id, WebhookDelivery.endpoint_id == endpoint_id)
    return page(session, stmt, WebhookDelivery.id, after=after, limit=limit)
