"""Organisations and API keys. Every function takes the organisation and scopes its query by it;
the exception is the lookup by key hash that authentication (aiaas.services.authn) starts from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import Conflict, InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.security.keys import display_prefix, generate_key, hash_key
from aiaas.store.models import ApiKey, Organization
from aiaas.store.pagination import Order, page


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


def find_key_by_hash(session: Session, key_hash: str) -> tuple[ApiKey, dict[str, Any] | None] | None:
    """The key row with this hash and its organisation's settings, in one query (aiaas.services.authn
    decides what the row means)."""
    found = session.execute(
        select(ApiKey, Organization.settings)
        .join(Organization, Organization.id == ApiKey.org_id)
        .where(ApiKey.key_hash == key_hash)
    ).one_or_none()
    return None if found is None else (found[0], found[1])


def mark_key_used(session: Session, key_id: str, at: int) -> None:
    session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=at))


def key_expiry(session: Session, key_id: str) -> int | None:
    return session.scalar(select(ApiKey.expires_at).where(ApiKey.id == key_id))


def lock_organization(session: Session, org_id: str) -> Organization:
    """Serialise quota checks of one organisation until the transaction ends.

    A no-op write takes PostgreSQL's row lock (and SQLite's single write lock), so two
    concurrent creations cannot both see the last free slot.
    """
    session.execute(update(Organization).where(Organization.id == org_id).values(name=Organization.name))
    return get_organization(session, org_id)


def get_organization_by_name(session: Session, name: str) -> Organization:
    org = session.scalar(select(Organization).where(Organization.name == name))
    if org is None:
        raise not_found("organization", name, param="name")
    return org


def update_organization_settings(session: Session, org_id: str, changes: dict[str, Any]) -> Organization:
    """Merge `changes` into the organisation's settings; a None value removes the override."""
    org = get_organization(session, org_id)
    merged = dict(org.settings or {})
    for k, v in changes.items():
        if v is None:
            merged.pop(k, None)
        else:
            merged[k] = v
    org.settings = merged  # a new dict, so the JSON column is seen as changed
    return org


def delete_organization(session: Session, org_id: str) -> dict[str, list[str]]:
    """Delete the organisation and (by cascade) every row it owns, its wrapped data key included.

    Returns what lives outside the database: blob URIs and job ids (work directories),
    for the caller to remove once this transaction has committed.
    """
    from aiaas.store.models import File, FineTuningJob, Model

    org = get_organization(session, org_id)
    leftovers = {
        "blobs": list(session.scalars(select(File.storage_uri).where(File.org_id == org_id)))
        + list(session.scalars(select(Model.artifact_uri).where(Model.org_id == org_id))),
        "jobs": list(session.scalars(select(FineTuningJob.id).where(FineTuningJob.org_id == org_id))),
    }
    session.delete(org)
    session.flush()
    return leftovers
