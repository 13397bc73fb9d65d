"""The audit log: who (which key) did what to which object, from where, in which request.

Changes are recorded in the same transaction as the change itself, so a change that
rolls back leaves no record and a committed change always has one. Failed
authentications are recorded in their own transaction (the request fails): with the
key's organisation when the key is known (revoked, expired), with no organisation when
it is not (visible to the operator only, `aiaas orgs audit-logs`). Records never hold a
key's plaintext: keys appear by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.ids import new_id
from aiaas.store.db import Database
from aiaas.store.models import AuditLog
from aiaas.store.pagination import page

ACTIONS = frozenset({
    "api_key.created", "api_key.revoked",
    "file.uploaded", "file.deleted",
    "fine_tuning.job.created", "fine_tuning.job.cancelled",
    "batch.created", "batch.cancelled",
    "model.deleted",
    "deployment.created", "deployment.deleted", "deployment.drift",
    "deployment.updated", "model.alias.set", "model.alias.deleted", "model.version.deleted", "model.version.created",
    "model.downloaded",
    "webhook.created", "webhook.deleted",
    "auth.failed", "console.signed_in", "console.signed_out",
    "organization.deleted",
})


@dataclass(frozen=True)
class Actor:
    """Who is acting, and from where."""

    org_id: str | None
    key_id: str | None
    request_id: str | None = None
    client_ip: str | None = None


OPERATOR = Actor(org_id=None, key_id=None, request_id=None, client_ip=None)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditLog:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    row = AuditLog(
        id=new_id("audit"), org_id=actor.org_id, created_at=now(), actor_key_id=actor.key_id, action=action,
        target_type=target_type, target_id=target_id, request_id=actor.request_id,
        client_ip=(actor.client_ip or None) and actor.client_ip[:64], details=details or None,
    )
    session.add(row)
    return row


def record_auth_failure(db: Database, actor: Actor, *, code: str) -> None:
    """A rejected key, in a transaction of its own (blocking: run it in a thread)."""
    with db.session() as s:
        record(s, actor, "auth.failed", target_type="api_key" if actor.key_id else None,
               target_id=actor.key_id, details={"code": code})


def list_logs(
    session: Session, org_id: str | None, *, after: str | None, limit: int, action: str | None = None
) -> tuple[list[AuditLog], bool]:
    """Newest first. `org_id=None` lists the records no organisation owns (operator only)."""
    owner = AuditLog.org_id == org_id if org_id is not None else AuditLog.org_id.is_(None)
    stmt = select(AuditLog).where(owner)
    if action:
        stmt = stmt.where(AuditLog.action == action)
    return page(session, stmt, AuditLog.id, after=after, limit=limit, order="desc")
