"""Idempotency keys, per organisation: claim a key, then complete it with the first response or release it.

A claim is an INSERT on the (org_id, key) primary key, so of any number of concurrent requests with one
key exactly one gets it, on SQLite and PostgreSQL alike; the others read the row and are told it is in
progress, or get its stored response. A claim holds a lock until `locked_until` (refreshed while its
request runs); a key whose lock ran out (its process died) or whose record is older than the time to
live can be claimed again. Every write after the claim is fenced by the claim's `owner` token.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.store.db import rows_changed
from aiaas.store.models import IdempotencyKey

IN_PROGRESS = "in_progress"
COMPLETED = "completed"


@dataclass(frozen=True)
class Claim:
    """`owner` is set when this request holds the key; otherwise the key's current record."""

    owner: str | None
    state: str | None = None
    request_hash: str | None = None
    status: int | None = None
    headers: list[Any] | None = None
    body: bytes | None = None


def claim(session: Session, *, org_id: str, key: str, method: str, path: str, ttl_seconds: float,
          lock_seconds: float) -> Claim:
    t = time.time()
    owner = secrets.token_hex(16)
    fields = {"state": IN_PROGRESS, "method": method, "path": path[:1000], "request_hash": None, "status": None,
              "response_headers": None, "response_body": None, "created_at": int(t), "owner": owner,
              "locked_until": t + lock_seconds}
    # A record past its time to live, or a claim whose process stopped refreshing its lock, is taken over.
    taken = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key)
        .where(or_(IdempotencyKey.created_at < t - ttl_seconds,
                   (IdempotencyKey.state == IN_PROGRESS) & (IdempotencyKey.locked_until < t)))
        .values(**fields)
    )
    if rows_changed(taken) == 1:
        return Claim(owner=owner)
    try:
        with session.begin_nested():
            session.add(IdempotencyKey(org_id=org_id, key=key, **fields))
        return Claim(owner=owner)
    except IntegrityError:
        pass  # another request holds or held the key
    row = session.scalar(
        select(IdempotencyKey).where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key)
    )
    if row is None:  # released between our insert and this read: say "in progress", the client retries
        return Claim(owner=None, state=IN_PROGRESS)
    return Claim(owner=None, state=row.state, request_hash=row.request_hash, status=row.status,
                 headers=row.response_headers, body=row.response_body)


def refresh(session: Session, *, org_id: str, key: str, owner: str, lock_seconds: float) -> bool:
    """Extend the claim's lock; False when the claim was lost."""
    result = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key, IdempotencyKey.owner == owner,
               IdempotencyKey.state == IN_PROGRESS)
        .values(locked_until=time.time() + lock_seconds)
    )
    return rows_changed(result) == 1


def complete(session: Session, *, org_id: str, key: str, owner: str, request_hash: str, status: int,
             headers: list[Any], body: bytes) -> bool:
    """Store the first response for replay; False when the claim was lost meanwhile."""
    result = session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key, IdempotencyKey.owner == owner,
               IdempotencyKey.state == IN_PROGRESS)
        .values(state=COMPLETED, request_hash=request_hash, status=status, response_headers=headers,
                response_body=body, locked_until=None)
    )
    return rows_changed(result) == 1


def release(session: Session, *, org_id: str, key: str, owner: str) -> None:
    """Forget a claim whose request saved nothing (an error, a cut connection): a retry runs afresh."""
    session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.org_id == org_id, IdempotencyKey.key == key,
                                     IdempotencyKey.owner == owner, IdempotencyKey.state == IN_PROGRESS)
    )


def purge_expired(session: Session, *, ttl_seconds: float) -> int:
    """Delete every record older than the time to live; the number deleted."""
    result = session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < time.time() - ttl_seconds))
    return rows_changed(result) or 0
