"""The hot-path lookup cache: expiry, invalidation, bounded size."""

from __future__ import annotations

import pytest

from aiaas.security.ttlcache import TtlCache


def test_expiry_invalidation_and_bound():
    now = [0.0]
    c = TtlCache(5, max_entries=2, clock=lambda: now[0])
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1
    now[0] = 4.9
    assert c.get("b") == 2
    now[0] = 5.0
    assert c.get("a") is None and c.get("b") is None
    c.put("a", 1)
    c.put("b", 2)
    c.put("c", 3)  # over the bound: the oldest goes
    assert c.get("a") is None and len(c) == 2
    assert c.invalidate(lambda k, v: v == 3) == 1 and c.get("c") is None


def test_zero_ttl_disables():
    c = TtlCache(0)
    c.put("a", 1)
    assert c.get("a") is None
    with pytest.raises(ValueError):
        TtlCache(-1)


async def test_revoked_key_stops_working_at_once_despite_the_cache(tmp_path):
    """Revocation through the API invalidates the cached authentication immediately."""
    import httpx

    from aiaas.api.app import create_app
    from aiaas.core.settings import Settings
    from aiaas.store import tenancy
    from tests.conftest import TEST_SECRET

    settings = Settings(env="test", data_dir=tmp_path, secret_key=TEST_SECRET, job_workers=0,
                        lookup_cache_seconds=3600)
    app = create_app(settings)
    with app.state.aiaas.db.session() as s:
        _, _, admin = tenancy.create_organization(s, "c")
    h = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        made = (await c.post("/v1/api_keys", headers=h, json={"name": "x", "scopes": ["read"]})).json()
        other = {"Authorization": f"Bearer {made['key']}"}
        assert (await c.get("/v1/organizations/me", headers=other)).status_code == 200  # now cached
        assert (await c.delete(f"/v1/api_keys/{made['id']}", headers=h)).status_code == 200
        assert (await c.get("/v1/organizations/me", headers=other)).status_code == 401
    app.state.aiaas.db.dispose()
