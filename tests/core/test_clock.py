"""One clock: every stored timestamp and every expiry check reads aiaas.core.clock.now()."""

from __future__ import annotations

import pytest

from aiaas.core import clock
from aiaas.core.errors import AuthenticationFailed
from aiaas.services import authn
from aiaas.store import tenancy

T0 = 1_700_000_000


def test_now_is_whole_seconds_of_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "wall", lambda: T0 + 0.99)
    assert clock.now() == T0


def test_one_patch_moves_the_store_and_key_expiry(db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clock, "wall", lambda: float(T0))
    with db.session() as s:
        org, admin, _ = tenancy.create_organization(s, "clock-org")
        row, key = tenancy.create_key(s, org.id, name="short", scopes=["read"], expires_in_seconds=60)
        assert org.created_at == admin.created_at == row.created_at == T0
        assert row.expires_at == T0 + 60
    with db.session() as s:
        assert authn.authenticate(s, key).key_id == row.id
        assert tenancy.get_key(s, org.id, row.id).last_used_at == T0

    monkeypatch.setattr(clock, "wall", lambda: float(T0 + 60))
    with db.session() as s, pytest.raises(AuthenticationFailed) as info:
        authn.authenticate(s, key)
    assert info.value.code == "expired_api_key"
    with db.session() as s:
        assert tenancy.revoke_key(s, org.id, admin.id).revoked_at == T0 + 60
