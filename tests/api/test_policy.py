"""Every route in the OpenAPI spec has an entry in the policy table, and no entry is stale."""

from __future__ import annotations

from aiaas.api.deps import PrincipalDep
from aiaas.security.policy import POLICY


def spec_routes(app) -> set[tuple[str, str]]:
    spec = app.openapi()
    return {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}


def test_every_route_is_in_the_policy_table(app):
    routes = spec_routes(app)
    missing = routes - set(POLICY)
    assert not missing, f"routes without a policy entry: {sorted(missing)}"
    stale = set(POLICY) - routes
    assert not stale, f"policy entries for routes that do not exist: {sorted(stale)}"


async def test_unlisted_route_is_refused(app, client, org_a):
    """Fail closed: a route someone forgot to put in the table answers 500, never unauthenticated 200."""
    @app.get("/v1/forgotten")
    def forgotten(principal: PrincipalDep) -> dict:
        return {"ok": True}

    r = await client.get("/v1/forgotten", headers=org_a.headers)
    assert r.status_code == 500 and "ok" not in r.json()
