"""Keys, organisations, tenancy isolation and authentication failures."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event, update

from aiaas.security.keys import generate_key
from aiaas.store.models import ApiKey
from tests.api.conftest import make_org


async def test_me_and_key_lifecycle(client, org_a):
    r = await client.get("/v1/organizations/me", headers=org_a.headers)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == org_a.id and r.json()["name"] == "org-a"

    r = await client.post("/v1/api_keys", json={"name": "ci", "scopes": ["read"]}, headers=org_a.headers)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["key"].startswith("aiaas_sk_") and created["scopes"] == ["read"]
    assert created["prefix"] == created["key"][: len(created["prefix"])]

    # The plaintext is shown once: never in a list.
    r = await client.get("/v1/api_keys", headers=org_a.headers)
    body = r.json()
    assert body["object"] == "list" and len(body["data"]) == 2
    assert created["key"] not in r.text and all("key" not in k for k in body["data"])

    # The new key works for reads but not for admin routes.
    ro = {"Authorization": f"Bearer {created['key']}"}
    assert (await client.get("/v1/organizations/me", headers=ro)).status_code == 200
    r = await client.get("/v1/api_keys", headers=ro)
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"

    # Revoked → 401.
    r = await client.delete(f"/v1/api_keys/{created['id']}", headers=org_a.headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = await client.get("/v1/organizations/me", headers=ro)
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"


async def test_pagination(client, org_a):
    for i in range(5):
        r = await client.post("/v1/api_keys", json={"name": f"k{i}"}, headers=org_a.headers)
        assert r.status_code == 201
    seen, after = [], None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        body = (await client.get("/v1/api_keys", params=params, headers=org_a.headers)).json()
        seen += [k["id"] for k in body["data"]]
        if not body["has_more"]:
            break
        after = body["last_id"]
    assert len(seen) == 6 and len(set(seen)) == 6 and seen == sorted(seen, reverse=True)


async def test_other_org_cannot_see_or_revoke_keys(client, org_a, org_b):
    r = await client.post("/v1/api_keys", json={"name": "a-only"}, headers=org_a.headers)
    a_key_id = r.json()["id"]
    listed = (await client.get("/v1/api_keys", headers=org_b.headers)).json()["data"]
    assert a_key_id not in [k["id"] for k in listed] and len(listed) == 1

    foreign = await client.delete(f"/v1/api_keys/{a_key_id}", headers=org_b.headers)
    missing = await client.delete("/v1/api_keys/key-doesnotexist", headers=org_b.headers)
    assert foreign.status_code == missing.status_code == 404
    strip = lambda e: {k: v for k, v in e["error"].items() if k not in ("message", "request_id")}  # noqa: E731
    assert strip(foreign.json()) == strip(missing.json())
    assert foreign.json()["error"]["message"].replace(a_key_id, "X") == missing.json()["error"][
        "message"
    ].replace("key-doesnotexist", "X")
    # Still usable by A.
    keys = (await client.get("/v1/api_keys", headers=org_a.headers)).json()["data"]
    assert next(k for k in keys if k["id"] == a_key_id)["revoked_at"] is None


async def test_bad_checksum_rejected_without_touching_database(client, db, org_a):
    good = org_a.key
    # Flip one character of the body: format still valid, checksum wrong.
    body_start = len("aiaas_sk_")
    flipped = good[:body_start] + ("A" if good[body_start] != "A" else "B") + good[body_start + 1 :]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # noqa: ANN001
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        for bad in (flipped, "aiaas_sk_short", "sk-openai-style-key", generate_key()[:-1] + "!"):
            r = await client.get("/v1/organizations/me", headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert statements == []
        # A well-formed but unknown key does reach the database (and is rejected).
        r = await client.get("/v1/organizations/me", headers={"Authorization": f"Bearer {generate_key()}"})
        assert r.status_code == 401 and len(statements) >= 1
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


async def test_missing_and_expired_keys(client, db, org_a):
    r = await client.get("/v1/organizations/me")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = await client.post(
        "/v1/api_keys", json={"name": "short", "expires_in_seconds": 3600}, headers=org_a.headers
    )
    created = r.json()
    assert created["expires_at"] - created["created_at"] == 3600
    with db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.id == created["id"]).values(expires_at=int(time.time()) - 1))
    r = await client.get("/v1/organizations/me", headers={"Authorization": f"Bearer {created['key']}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "expired_api_key"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["root"]}, "scopes.0"),
        ({"name": 5}, "name"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ({}, "name"),
        ({"name": "x", "expires_in_seconds": "soon"}, "expires_in_seconds"),
    ],
)
async def test_invalid_bodies_name_the_field(client, org_a, body, field):
    r = await client.post("/v1/api_keys", json=body, headers=org_a.headers)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "validation_error" and err["param"] == field and field in err["message"]


async def test_malformed_json(client, org_a):
    r = await client.post(
        "/v1/api_keys",
        content=b'{"name": "x",',
        headers=org_a.headers | {"content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_org_names_unique(db):
    make_org(db, "dup")
    from aiaas.core.errors import Conflict

    with pytest.raises(Conflict):
        make_org(db, "dup")
