"""Behind a reverse proxy: forwarded headers count only from AIAAS_TRUSTED_PROXIES (real `aiaas serve`)."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.server import base_env, init, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT = "203.0.113.7"  # what a proxy would put in X-Forwarded-For (TEST-NET-3)


@pytest.mark.parametrize(
    ("trusted", "honoured"),
    [
        ("", False),  # the default: nobody's forwarded headers count
        ("10.9.9.9", False),  # a proxy is configured, but the test client (127.0.0.1) is not it
        ("10.9.9.9, 127.0.0.0/8", True),  # the test client connects from a trusted network
    ],
)
def test_forwarded_client_address_only_from_trusted_proxies(tmp_path, trusted, honoured):
    env = base_env(tmp_path / "data", AIAAS_TRUSTED_PROXIES=trusted)
    admin_key = init(env)
    server = start_server(env, tmp_path)
    try:
        headers = {
            "Authorization": f"Bearer {admin_key}",
            "X-Forwarded-For": f"198.51.100.1, {CLIENT}",  # spoofed first hop, then the client the proxy saw
            "X-Forwarded-Proto": "https",
        }
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            r = http.post("/v1/api_keys", json={"name": "via-proxy", "scopes": ["read"]}, headers=headers)
            assert r.status_code in (200, 201), r.text
            logs = http.get(
                "/v1/audit_logs", params={"action": "api_key.created"}, headers={"Authorization": f"Bearer {admin_key}"}
            )
            assert logs.status_code == 200, logs.text
        [record] = logs.json()["data"]
        # Trusted: the right-most address not itself a trusted proxy (the spoofed one is never taken).
        assert record["client_ip"] == (CLIENT if honoured else "127.0.0.1")
    finally:
        server.stop()


def test_trusted_proxies_setting_is_checked(tmp_path):
    from pydantic import ValidationError

    from aiaas.core.settings import Settings

    s = Settings(env="test", data_dir=tmp_path, trusted_proxies=" 10.0.0.5 , 172.16.0.0/12,,fd00::/8 ")
    assert s.trusted_proxies == "10.0.0.5,172.16.0.0/12,fd00::/8"
    with pytest.raises(ValidationError, match="AIAAS_TRUSTED_PROXIES: 'proxy.internal' is not an IP"):
        Settings(env="test", data_dir=tmp_path, trusted_proxies="10.0.0.5,proxy.internal")
