"""Key authentication (aiaas.services.authn) over the store's lookup by hash."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from aiaas.core import clock
from aiaas.core.errors import AuthenticationFailed
from aiaas.security.keys import generate_key
from aiaas.services import authn
from aiaas.store import tenancy

T0 = 1_700_000_000


def _count_queries(db) -> list[str]:
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


def test_a_malformed_key_never_reaches_the_database(db) -> None:
    seen = _count_queries(db)
    with db.session() as s, pytest.raises(authn.MalformedKey):
        authn.authenticate(s, "aiaas_sk_not-a-key")
    assert not [q for q in seen if "api_keys" in q]


def test_an_unknown_key_is_incorrect_not_rejected(db) -> None:
    with db.session() as s, pytest.raises(AuthenticationFailed) as info:
        authn.authenticate(s, generate_key())
    assert info.value.code == "invalid_api_key" and not isinstance(info.value, authn.KeyRejected)


def test_a_revoked_key_is_rejected_with_its_owner_for_the_audit(db) -> None:
    with db.session() as s:
        org, row, key = tenancy.create_organization(s, "authn-org")
        tenancy.revoke_key(s, org.id, row.id)
    with db.session() as s, pytest.raises(authn.KeyRejected) as info:
        authn.authenticate(s, key)
    assert (info.value.code, info.value.org_id, info.value.key_id) == ("revoked_api_key", org.id, row.id)


def test_last_used_is_written_at_most_once_a_resolution(db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "wall", lambda: float(T0))
    with db.session() as s:
        org, row, key = tenancy.create_organization(s, "authn-used")
    with db.session() as s:
        principal, settings = authn.authenticate_with_settings(s, key)
    assert principal.org_id == org.id and principal.scopes == frozenset({"admin"}) and settings == {}
    later = T0 + authn.LAST_USED_RESOLUTION_S - 1
    monkeypatch.setattr(clock, "wall", lambda: float(later))
    with db.session() as s:
        authn.authenticate(s, key)
        assert tenancy.get_key(s, org.id, row.id).last_used_at == T0
    monkeypatch.setattr(clock, "wall", lambda: float(later + 1))
    with db.session() as s:
        authn.authenticate(s, key)
        assert tenancy.get_key(s, org.id, row.id).last_used_at == later + 1
