"""Key authentication: who is calling, from the key a request carries.

Format and checksum are checked first, without the database; then the key is looked up
by its hash (the store's only part), compared in constant time, and refused if revoked or
expired. A well-formed key that is refused raises KeyRejected, which carries the key's
organisation and id for the audit log; a malformed one never reaches the database.

A use case, so it lives in services: it joins security (key format, hash) and the store
(the lookup), and security may not import the store (the store imports security: no cycles).
"""

from __future__ import annotations

import hmac
from typing import Any

from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import AuthenticationFailed
from aiaas.security.keys import Principal, hash_key, is_well_formed
from aiaas.store import tenancy

# Writing last_used_at on every request would turn every read into a write; once a minute is enough.
LAST_USED_RESOLUTION_S = 60


class MalformedKey(AuthenticationFailed):
    """Not a key at all (format or checksum): rejected without touching the database."""


class KeyRejected(AuthenticationFailed):
    """A known key that may no longer be used: its organisation and id go to the audit log."""

    def __init__(self, message: str, *, code: str, org_id: str, key_id: str) -> None:
        super().__init__(message, code=code)
        self.org_id = org_id
        self.key_id = key_id


def authenticate_with_settings(session: Session, plaintext: str) -> tuple[Principal, dict[str, Any]]:
    """The key's principal and its organisation's settings (limits and quotas), read in the
    same query, so a request costs one database round trip to authenticate."""
    if not is_well_formed(plaintext):
        raise MalformedKey(
            "Invalid API key format. Keys look like aiaas_sk_<32 characters>_<6 characters>; "
            "check that the whole key was copied.",
            code="invalid_api_key",
        )
    digest = hash_key(plaintext)
    found = tenancy.find_key_by_hash(session, digest)
    # The lookup is by a hash of a high-entropy secret, so timing reveals nothing useful;
    # the explicit comparison keeps it constant-time anyway.
    if found is None or not hmac.compare_digest(found[0].key_hash, digest):
        raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
    row, org_settings = found
    t = now()
    if row.revoked_at is not None:
        raise KeyRejected(
            "This API key has been revoked.", code="revoked_api_key", org_id=row.org_id, key_id=row.id
        )
    if row.expires_at is not None and row.expires_at <= t:
        raise KeyRejected(
            "This API key has expired; create a new one.",
            code="expired_api_key",
            org_id=row.org_id,
            key_id=row.id,
        )
    if row.last_used_at is None or t - row.last_used_at >= LAST_USED_RESOLUTION_S:
        tenancy.mark_key_used(session, row.id, t)
    return Principal(org_id=row.org_id, key_id=row.id, scopes=frozenset(row.scopes)), dict(org_settings or {})


def authenticate(session: Session, plaintext: str) -> Principal:
    return authenticate_with_settings(session, plaintext)[0]
