"""`aiaas init` + `aiaas serve` as real processes, driven through the SDK and the CLI."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from aiaas.sdk import AsyncClient, AuthenticationError, Client, NotFoundError, PermissionDeniedError
from tests.e2e.server import AIAAS, base_env, init, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path, database_url):
    env = base_env(tmp_path / "data", database_url)
    admin_key = init(env)
    srv = start_server(env, tmp_path)
    srv.admin_key = admin_key  # type: ignore[attr-defined]
    srv.env = env  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_init_serve_and_sdk(server, tmp_path):
    secret = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600

    with Client(server.base_url, server.admin_key) as c:
        me = c.organizations.me()
        assert me["name"] == "default"
        created = c.api_keys.create("reader", scopes=["read"])
        assert len(list(c.api_keys.list(limit=1))) == 2  # paginates one per page
        with Client(server.base_url, created["key"]) as ro:
            assert ro.organizations.me()["id"] == me["id"]
            with pytest.raises(PermissionDeniedError) as e:
                list(ro.api_keys.list())
            assert e.value.code == "insufficient_scope" and e.value.request_id
        with pytest.raises(NotFoundError):
            c.api_keys.revoke("key-nope")
        c.api_keys.revoke(created["id"])
        with Client(server.base_url, created["key"]) as ro, pytest.raises(AuthenticationError) as e:
            ro.organizations.me()
        assert e.value.code == "revoked_api_key"

    # A second organisation made by the operator cannot see the first one's keys.
    out = subprocess.run(
        AIAAS + ["orgs", "create", "acme"], env=server.env, capture_output=True, text=True, check=True
    )
    acme_key = next(line for line in out.stdout.splitlines() if line.startswith("aiaas_sk_"))
    with Client(server.base_url, acme_key) as acme:
        assert acme.organizations.me()["name"] == "acme"
        assert [k["name"] for k in acme.api_keys.list()] == ["admin"]

    # Re-running init creates no second admin key.
    again = subprocess.run(AIAAS + ["init"], env=server.env, capture_output=True, text=True, check=True)
    assert "aiaas_sk_" not in again.stdout


async def test_async_sdk_and_cli(server):
    async with AsyncClient(server.base_url, server.admin_key) as c:
        assert (await c.organizations.me())["name"] == "default"
        made = await c.api_keys.create("async", scopes=["infer"])
        names = [k["name"] async for k in c.api_keys.list()]
        assert "async" in names and made["scopes"] == ["infer"]

    env = server.env | {"AIAAS_BASE_URL": server.base_url, "AIAAS_API_KEY": server.admin_key}
    out = subprocess.run(AIAAS + ["keys", "create", "cli", "-s", "read"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    listed = subprocess.run(AIAAS + ["keys", "list", "--json"], env=env, capture_output=True, text=True)
    assert '"cli"' in listed.stdout and "aiaas_sk_" not in listed.stdout.replace('"prefix": "aiaas_sk_', "")
    bad = subprocess.run(AIAAS + ["keys", "revoke", "key-missing"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "not_found" in bad.stderr and "Traceback" not in bad.stderr


def test_serve_refuses_without_secret(tmp_path):
    env = base_env(tmp_path / "empty")
    out = subprocess.run(AIAAS + ["serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "aiaas init" in out.stderr
    assert not os.path.exists(tmp_path / "empty" / "aiaas.db")
