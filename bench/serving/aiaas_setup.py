"""Config (c): a real `aiaas serve` with a real organisation, an infer-scoped API key and a
deployment of the registered fine-tuned classifier, called as a client would.

Steps: `aiaas init` (data dir, master secret, first organisation + admin key) -> register
the exported artifact in the model registry (as the fine-tuning worker does after its
export) -> `aiaas serve` -> with the admin key, create an `infer` key and a deployment
(min_replicas=1, so the model stays loaded) -> the benchmark calls
`POST /v1/deployments/{name}/predict` with the infer key.

The organisation's rate limits are raised through the operator settings
(AIAAS_RATE_LIMIT_*) rather than disabled: the limiter still runs on every request,
it just never refuses one (the defaults, 3000 requests/min, would cap the run at 50 rps).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.serving import model as bench_model
from bench.serving import named_serve, procs

DEPLOYMENT = "support-topics"
JOB_ID = "ftjob-bench0001"
HIGH_RPM = "100000000"
HIGH_TPM = "100000000000"


@dataclass
class Aiaas:
    server: procs.Server
    infer_key: str
    model_id: str
    deployment: str = DEPLOYMENT


def _init(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "aiaas.cli.main", "init"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    keys = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("aiaas_sk_")]
    if len(keys) != 1:
        raise RuntimeError(f"`aiaas init` printed no admin key:\n{out.stdout}\n{out.stderr}")
    return keys[0]


def _register(data_dir: Path, admin_key: str, entry: Path, staging: Path) -> str:
    """Put model/ + onnx/ in the (encrypted) blob store and register the version, as the job runner does."""
    from aiaas.core.settings import Settings
    from aiaas.registry import models as registry
    from aiaas.services import authn
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted

    settings = Settings(data_dir=data_dir)
    db = Database(settings.sqlalchemy_url)
    try:
        with db.session() as s:
            org_id = authn.authenticate(s, admin_key).org_id
        shutil.rmtree(staging, ignore_errors=True)
        for part in ("model", "onnx"):
            shutil.copytree(entry / part, staging / part)
        # Encrypted at rest with the organisation's data key, as the job runner stores artifacts.
        blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
        uri = blobs.put_dir(f"{org_id}/models/{JOB_ID}", staging)
        model_id = registry.fine_tuned_model_id(
            base=bench_model.BASE_MODEL, org_name="default", suffix="topics", job_id=JOB_ID
        )
        with db.session() as s:
            registry.register_model(
                s,
                model_id=model_id,
                org_id=org_id,
                job_id=JOB_ID,
                base_model=bench_model.BASE_MODEL,
                task="single_label_classification",
                artifact_uri=uri,
                lineage={"benchmark": "bench/serving"},
                card={"labels": list(bench_model.sentences.LABELS)},
            )
        return model_id
    finally:
        db.dispose()
        shutil.rmtree(staging, ignore_errors=True)


def start(
    entry: Path, work: Path, log_dir: Path, *, cprofile: Path | None = None, server_env: dict[str, str] | None = None
) -> tuple[procs.Server, str, str, dict[str, str]]:
    """Init + register + launch; returns (server, admin key, model id, env). Health is checked later.
    The server is `aiaas serve` run by bench/serving/named_serve.py (thread names on SIGUSR2; with
    `cprofile`, the event loop under cProfile)."""
    data_dir = work / "aiaas-data"
    port = procs.free_port()
    env = procs.bench_env(
        AIAAS_DATA_DIR=str(data_dir),
        AIAAS_ENV="production",
        AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE=HIGH_RPM,
        AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE=HIGH_TPM,
    )
    admin_key = _init(env)
    model_id = _register(data_dir, admin_key, entry, work / "staging")
    run_env = env | (server_env or {}) | {named_serve.NAMES_ENV: str(work / "thread-names.json")}
    if cprofile is not None:
        run_env[named_serve.CPROFILE_ENV] = str(cprofile)
    server = procs.start(
        "aiaas",
        ["-m", "bench.serving.named_serve", "serve", "--port", str(port), "--job-workers", "0"],
        env=run_env,
        log_dir=log_dir,
        port=port,
    )
    return server, admin_key, model_id, env


def thread_names(server: procs.Server, work: Path) -> dict[int, str]:
    """{OS thread id: Python thread name} of the aiaas server (see bench/serving/named_serve.py)."""
    path = work / "thread-names.json"
    path.unlink(missing_ok=True)
    server.proc.send_signal(signal.SIGUSR2)
    for _ in range(100):
        if path.exists():
            return {int(k): v for k, v in json.loads(path.read_text()).items()}
        time.sleep(0.05)
    return {}


def finish(server: procs.Server, admin_key: str, model_id: str) -> Aiaas:
    """Once healthy: an infer-only key and the deployment, through the public API."""
    procs.wait_healthy(server, "/readyz")
    admin = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.base_url, headers=admin, timeout=60) as client:
        r = client.post("/v1/api_keys", json={"name": "bench-infer", "scopes": ["infer"]})
        r.raise_for_status()
        infer_key = r.json()["key"]
        r = client.post("/v1/deployments", json={"name": DEPLOYMENT, "model": model_id, "min_replicas": 1})
        r.raise_for_status()
    return Aiaas(server=server, infer_key=infer_key, model_id=model_id)
