"""A large upload's background check cut short by `kill -9` of the server is taken up again by the next
server: the file, left 'uploaded' under a lease that runs out, ends 'processed' with its whole summary."""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
from sqlalchemy import select

from aiaas.core.settings import Settings
from aiaas.store.db import Database
from aiaas.store.models import File
from tests.e2e.server import base_env, init, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROWS = 120_000


def big_csv() -> bytes:
    lines = [b"text,label"]
    for i in range(ROWS):  # an address every 10 rows: the PII scan has work to do
        text = f"write to jane.doe{i}@example.com about order {i}" if i % 10 == 0 else f"order {i} arrived fine"
        lines.append(f"{text},{'positive' if i % 2 else 'negative'}".encode())
    return b"\n".join(lines) + b"\n"


def test_a_check_killed_with_its_server_ends_processed_after_a_restart(tmp_path):
    data = tmp_path / "data"
    env = base_env(data, AIAAS_UPLOAD_INLINE_BYTES="1024", AIAAS_UPLOAD_CHECK_LEASE_SECONDS="2")
    key = init(env)
    db = Database(Settings(data_dir=data).sqlalchemy_url)
    content = big_csv()
    h = {"Authorization": f"Bearer {key}"}
    server = start_server(env, tmp_path)
    try:
        r = httpx.post(server.base_url + "/v1/files", headers=h, files={"file": ("big.csv", content)},
                       data={"purpose": "fine-tune"}, timeout=60)
        assert r.status_code == 200 and r.json()["status"] == "uploaded", r.text
        file_id = r.json()["id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the check has its lease: it is under way
            with db.session() as s:
                if s.scalar(select(File.check_owner).where(File.id == file_id)):
                    break
            time.sleep(0.02)
        os.killpg(server.proc.pid, signal.SIGKILL)  # kill -9, mid-check
        server.proc.wait(timeout=10)
    finally:
        server.stop()
    with db.session() as s:
        left = s.scalars(select(File).where(File.id == file_id)).one()
        assert left.status == "uploaded" and left.check_owner, "the check ended before the kill: make it longer"

    server = start_server(env, tmp_path)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            f = httpx.get(f"{server.base_url}/v1/files/{file_id}", headers=h, timeout=10).json()
            if f["status"] != "uploaded":
                break
            time.sleep(0.2)
        body = httpx.get(f"{server.base_url}/v1/files/{file_id}/content", headers=h, timeout=60).content
    finally:
        server.stop()
    db.dispose()
    assert f["status"] == "processed", f
    assert f["summary"]["rows"] == ROWS and f["summary"]["pii"]["counts"]["email"] == ROWS // 10
    assert body == content
