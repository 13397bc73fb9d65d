"""Web console sessions: opened by signing in with an API key, stored server-side.

The browser holds a random token; the table holds its SHA-256, so reading the table does not
give anyone a usable session. A session lives while its key does: a revoked or expired key
ends every session opened with it, at the next request.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from aiaas.security.keys import Principal
from aiaas.store.models import ApiKey, UiSession
from aiaas.core.clock import now


@dataclass(frozen=True)
class ConsoleSession:
    principal: Principal
    csrf_token: str
    expires_at: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(session: Session, principal: Principal, *, lifetime_s: int) -> tuple[str, ConsoleSession]:
    """Store a new session for `principal`; return (the cookie's token, the session)."""
    token = secrets.token_urlsafe(32)
    t = now()
    row = UiSession(id=_digest(token), org_id=principal.org_id, key_id=principal.key_id,
                    scopes=sorted(principal.scopes), csrf_token=secrets.token_urlsafe(32), created_at=t,
                    expires_at=t + lifetime_s)
    session.add(row)
    session.execute(delete(UiSession).where(UiSession.expires_at <= t))  # sweep the expired ones
    session.flush()
    return token, ConsoleSession(principal, row.csrf_token, row.expires_at)


def find_session(session: Session, token: str) -> ConsoleSession | None:
    """The live session for a cookie's token, or None (unknown, expired, or its key revoked/expired)."""
    if not token or len(token) > 200:
        return None
    t = now()
    found = session.execute(
        select(UiSession, ApiKey.revoked_at, ApiKey.expires_at)
        .join(ApiKey, ApiKey.id == UiSession.key_id)
        .where(UiSession.id == _digest(token))
    ).one_or_none()
    if found is None:
        return None
    row, revoked_at, key_expires_at = found
    if row.expires_at <= t or revoked_at is not None or (key_expires_at is not None and key_expires_at <= t):
        return None
    principal = Principal(org_id=row.org_id, key_id=row.key_id, scopes=frozenset(row.scopes))
    return ConsoleSession(principal, row.csrf_token, row.expires_at)


def close_session(session: Session, token: str) -> None:
    session.execute(delete(UiSession).where(UiSession.id == _digest(token)))
