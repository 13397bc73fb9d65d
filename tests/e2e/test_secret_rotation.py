"""`aiaas secrets rotate` on a real installation: the server works after a restart with the new secret."""

from __future__ import annotations

import stat
import subprocess

import httpx
import pytest

from tests.e2e.server import AIAAS, base_env, init, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CSV = b"text,label\n" + b"".join(b"row %d,%s\n" % (i, b"ab"[i % 2 : i % 2 + 1]) for i in range(40))


def test_rotate_then_restart(tmp_path, database_url):
    env = base_env(tmp_path / "data", database_url)
    key = init(env)
    headers = {"Authorization": f"Bearer {key}"}
    secret_file = tmp_path / "data" / "secret.key"
    old = secret_file.read_text()

    server = start_server(env, tmp_path)
    try:
        r = httpx.post(server.base_url + "/v1/files", headers=headers, files={"file": ("t.csv", CSV)},
                       data={"purpose": "fine-tune"}, timeout=60)
        assert r.status_code == 200, r.text
        file_id = r.json()["id"]
    finally:
        server.stop()

    out = subprocess.run(AIAAS + ["secrets", "rotate"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "re-wrapped 1 data keys" in out.stdout and "restart" in out.stdout
    assert secret_file.read_text() != old and stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    backups = list(secret_file.parent.glob("secret.key.bak-*"))
    assert len(backups) == 1 and backups[0].read_text() == old and stat.S_IMODE(backups[0].stat().st_mode) == 0o600

    server = start_server(env, tmp_path)
    try:
        r = httpx.get(f"{server.base_url}/v1/files/{file_id}/content", headers=headers, timeout=60)
        assert r.status_code == 200 and r.content == CSV  # written before the rotation, read after it
        r = httpx.post(server.base_url + "/v1/files", headers=headers, files={"file": ("u.csv", CSV)},
                       data={"purpose": "fine-tune"}, timeout=60)
        assert r.status_code == 200, r.text
        r = httpx.get(f"{server.base_url}/v1/files/{r.json()['id']}/content", headers=headers, timeout=60)
        assert r.status_code == 200 and r.content == CSV
    finally:
        server.stop()
    # The old secret opens nothing any more: with it the server refuses to serve the old file.
    secret_file.write_text(old)
    server = start_server(env, tmp_path)
    try:
        r = httpx.get(f"{server.base_url}/v1/files/{file_id}/content", headers=headers, timeout=60)
        assert r.status_code == 500
    finally:
        server.stop()
