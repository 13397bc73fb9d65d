"""`aiaas batch create|wait|download` against a real server whose worker pool scores a CSV."""

from __future__ import annotations

import csv
import io
import subprocess

import httpx
import pytest

from tests.e2e.chaos import MODEL, make_stack
from tests.e2e.server import AIAAS, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_cli_scores_a_csv(tmp_path):
    stack = make_stack(tmp_path, None, with_model=True, AIAAS_BATCH_CHUNK_LINES="7")
    srv = start_server(stack.env, tmp_path, job_workers=1)
    try:
        r = httpx.post(srv.base_url + "/v1/deployments", json={"model": MODEL, "name": "support"},
                       headers={"Authorization": f"Bearer {stack.key}"}, timeout=30)
        assert r.status_code == 201, r.text
        src = tmp_path / "scores.csv"
        rows = [["id", "body"], *[[str(i), f"ticket {i} about a late parcel"] for i in range(30)], ["30", "@SUM(1)"]]
        with open(src, "w", newline="") as fh:
            csv.writer(fh).writerows(rows)
        env = stack.env | {"AIAAS_API_KEY": stack.key, "AIAAS_BASE_URL": srv.base_url}
        out = subprocess.run(AIAAS + ["batch", "create", str(src), "--deployment", "support", "--text-column", "body",
                                      "--no-wait"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        batch_id = next(w for w in out.stdout.split() if w.startswith("batch-"))
        waited = subprocess.run(AIAAS + ["batch", "wait", batch_id, "--timeout", "120"], env=env,
                                capture_output=True, text=True, timeout=150)
        assert waited.returncode == 0 and "completed: 31 answered, 0 failed of 31" in waited.stdout, (
            waited.stdout + waited.stderr)
        dest = tmp_path / "out.csv"
        got = subprocess.run(AIAAS + ["batch", "download", batch_id, "-o", str(dest)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert got.returncode == 0, got.stdout + got.stderr
        table = list(csv.reader(io.StringIO(dest.read_text())))
        assert table[0][:4] == ["id", "body", "label", "score"] and len(table) == 32
        assert [row[0] for row in table[1:]] == [str(i) for i in range(31)]
        assert all(row[2] in ("negative", "positive") for row in table[1:])
        assert table[-1][1] == "'@SUM(1)"
    finally:
        srv.stop()
