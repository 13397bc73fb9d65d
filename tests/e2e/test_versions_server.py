"""Registered models against a real `aiaas serve` process with a training worker (issue 14):

- a job names its registered model (`registered_model`), checked against the naming rules, shown on the job;
  a job with only a suffix derives it;
- a kept checkpoint of the succeeded job becomes the next version (lineage: the checkpoint and its step),
  served under `support/2`;
- `GET /v1/models/{model}/content` takes `support/2` with its slash as is or encoded, and `support@production`,
  through raw HTTP, the SDK and the CLI (`aiaas models register`, `aiaas models download`).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time

import httpx
import pytest

from aiaas.sdk import Client
from tests.e2e.server import AIAAS, base_env, init, start_server
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("versions")
    data = tmp / "data"
    build_tiny_bert(data / "base_models" / "tiny-bert")
    env = base_env(data, AIAAS_POLL_SECONDS="0.2")
    key = init(env)
    srv = start_server(env, tmp, job_workers=1)
    srv.key, srv.env = key, env  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _wait(c: httpx.Client, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/v1/fine_tuning/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not end: {job}")


def _readme(content: bytes) -> str:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as t:
        (member,) = [m for m in t.getmembers() if m.name.endswith("/README.md")]
        f = t.extractfile(member)
        assert f is not None
        return f.read().decode()


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    env = server.env | {"AIAAS_BASE_URL": server.base_url, "AIAAS_API_KEY": server.key}
    return subprocess.run(AIAAS + list(args), env=env, capture_output=True, text=True, timeout=120)


def test_job_names_its_model_checkpoint_becomes_a_version_and_downloads_by_ref(server, tmp_path):
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.base_url, timeout=60, headers=h) as c:
        f = c.post("/v1/files", files={"file": ("train.csv", toy_csv(20))}, data={"purpose": "fine-tune"}).json()
        body = {"model": "tiny-bert", "training_file": f["id"], "hyperparameters": {"n_epochs": 2}, "seed": 1}

        # The name is checked before anything is queued.
        r = c.post("/v1/fine_tuning/jobs", json=body | {"registered_model": "Support Bot"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "invalid_name" and err["param"] == "registered_model" and "lowercase" in err["message"]
        r = c.post("/v1/fine_tuning/jobs", json=body | {"registered_model": "-support"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name"

        job = c.post("/v1/fine_tuning/jobs", json=body | {"registered_model": "support", "suffix": "ignored"}).json()
        assert job["registered_model"] == "support"
        job = _wait(c, job["id"])
        assert job["status"] == "succeeded", job
        final = job["fine_tuned_model"]
        assert c.get("/v1/registered_models/support/versions/1").json()["model"] == final

        # A kept checkpoint becomes version 2, its lineage naming the checkpoint and the step.
        ckpts = c.get(f"/v1/fine_tuning/jobs/{job['id']}/checkpoints").json()["data"]
        kept = [k for k in ckpts if k["registrable"]]
        assert kept and len(kept) <= 3, ckpts
        ckpt = min(kept, key=lambda k: k["step_number"])  # the earliest kept one
        r = _cli(server, "models", "register", "support", "--checkpoint", ckpt["id"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "support/2" in r.stdout
        v2 = c.get("/v1/registered_models/support/versions/2").json()
        assert v2["model"] == ckpt["fine_tuned_model_checkpoint"] == f"{final}:ckpt-step-{ckpt['step_number']}"
        assert v2["lineage"]["checkpoint"] == ckpt["id"] and v2["lineage"]["step"] == ckpt["step_number"]
        assert v2["lineage"]["job_id"] == job["id"] and v2["previous"]["version"] == 1
        r = c.post("/v1/registered_models/support/versions", json={"checkpoint": ckpt["id"]})
        assert r.status_code == 409 and "support/2" in r.json()["error"]["message"]
        r = c.post("/v1/registered_models/support/versions", json={"checkpoint": "ftckpt-nope"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "checkpoint"
        r = c.post("/v1/registered_models/Bad Name/versions", json={"checkpoint": ckpt["id"]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name"
        r = c.post("/v1/classifications", json={"model": "support/2", "input": ["great service"]})
        assert r.status_code == 200 and r.json()["model"] == v2["model"], r.text

        # Download by `name/N` (slash as is, and encoded) and by `name@alias`.
        for path in ("/v1/models/support/2/content", "/v1/models/support%2F2/content"):
            r = c.get(path, params={"format": "hf"})
            assert r.status_code == 200, (path, r.text)
            assert v2["model"] in _readme(r.content)
        r = c.get("/v1/models/support/1/content")
        assert r.status_code == 200 and final in _readme(r.content) and v2["model"] not in _readme(r.content)
        assert c.get("/v1/models/support/9/content").status_code == 404
        assert c.put("/v1/registered_models/support/aliases/production", json={"version": 2}).status_code == 200
        r = c.get("/v1/models/support@production/content", params={"format": "onnx", "archive": "zip"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"

        # A job with only a suffix derives its registered model, and its model becomes support-bot/1.
        job2 = c.post("/v1/fine_tuning/jobs", json=body | {"suffix": "Support_Bot"}).json()
        assert job2["registered_model"] == "support_bot"
        c.post(f"/v1/fine_tuning/jobs/{job2['id']}/cancel")

    with Client(base_url=server.base_url, api_key=server.key) as sdk:
        assert v2["model"] in _readme(sdk.registered_models.download("support/2"))
    r = _cli(server, "models", "download", "support/2", "--format", "onnx", "-o", str(tmp_path / "onnx"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "onnx" / "labels.json").exists() and list((tmp_path / "onnx").glob("*.onnx"))
