"""Organisations and API keys. Every function takes the organisation and scopes its query by it."""

from __future__ import annotations

import hmac
import time
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.core.errors import AuthenticationFailed, Conflict, InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.security.keys import (
    Principal,
    display_prefix,
    generate_key,
    hash_key,
    is_well_formed,
)
from aiaas.store.models import ApiKey, Organization
from aiaas.store.pagination import Order, page

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
LAST_USED_RESOLUTION_S = 60


def now() -> int:
    return int(time.time())


def create_organization(session: Session, name: str) -> tuple[Organization, ApiKey, str]:
    """Create an organisation and its first admin key. Returns (org, key row, plaintext key)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest("Organization name must be 1-200 characters.", param="name")
    if session.scalar(select(func.count()).select_from(Organization).where(Organization.name == name)):
        raise Conflict(f"An organization named '{name}' already exists.", param="name")
    org = Organization(id=new_id("org"), name=name, created_at=now(), settings={})
    session.add(org)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent creation won the race
        raise Conflict(f"An organization named '{name}' already exists.", param="name") from exc
    row, plaintext = create_key(session, org.id, name="admin", scopes=["admin"])
    return org, row, plaintext


def get_organization(session: Session, org_id: str) -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise not_found("organization", org_id)
    return org


def create_key(
    session: Session,
    org_id: str,
    *,
    name: str,
    scopes: list[str],
    expires_in_seconds: int | None = None,
    created_by: str | None = None,
) -> tuple[ApiKey, str]:
    plaintext = generate_key()
    created = now()
    row = ApiKey(
        id=new_id("key"),
        org_id=org_id,
        name=name,
        prefix=display_prefix(plaintext),
        key_hash=hash_key(plaintext),
        scopes=sorted(set(scopes)),
        created_at=created,
        expires_at=created + expires_in_seconds if expires_in_seconds else None,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row, plaintext


def list_keys(
    session: Session, org_id: str, *, after: str | None, limit: int, order: Order = "desc"
) -> tuple[list[ApiKey], bool]:
    stmt = select(ApiKey).where(ApiKey.org_id == org_id)
    return page(session, stmt, ApiKey.id, after=after, limit=limit, order=order)


def get_key(session: Session, org_id: str, key_id: str) -> ApiKey:
    row = session.scalar(select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id))
    if row is None:
        raise not_found("api_key", key_id)
    return row


def revoke_key(session: Session, org_id: str, key_id: str) -> ApiKey:
    row = get_key(session, org_id, key_id)
    if row.revoked_at is None:
        row.revoked_at = now()
    return row


def authenticate(session: Session, plaintext: str) -> Principal:
    """Check format and checksum first (no database), then hash, revocation and expiry."""
    if not is_well_formed(plaintext):
        raise AuthenticationFailed(
            "Invalid API key format. Keys look like aiaas_sk_<32 characters>_<6 characters>; "
            "check that the whole key was copied.",
            code="invalid_api_key",
        )
    digest = hash_key(plaintext)
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    # The lookup is by a hash of a high-entropy secret, so timing reveals nothing useful;
    # the explicit comparison keeps it constant-time anyway.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
    t = now()
    if row.revoked_at is not None:
        raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
    if row.expires_at is not None and row.expires_at <= t:
        raise AuthenticationFailed("This API key has expired; create a new one.", code="expired_api_key")
    if row.last_used_at is None or t - row.last_used_at >= LAST_USED_RESOLUTION_S:
        session.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=t))
    return Principal(org_id=row.org_id, key_id=row.id, scopes=frozenset(row.scopes))


def key_public(row: ApiKey) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "api_key",
        "name": row.name,
        "prefix": row.prefix,
        "scopes": list(row.scopes),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "last_used_at": row.last_used_at,
    }
