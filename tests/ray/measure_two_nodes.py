"""Measure what a second Ray node adds: training jobs through the dispatcher, and served predictions.

Run it by hand (not collected by pytest), inside a network namespace that has only loopback,
because Ray's multi-node mode binds its servers to every interface (docs/cluster.md):

    sudo unshare -n sh -c 'ip link set lo up && .venv/bin/python -m tests.ray.measure_two_nodes'

Two node processes on this host, each `ray start --block` with its own temp dir and 1 CPU,
at 127.0.0.2 (head) and 127.0.0.3; stopped by pid (never `ray stop`). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.ray.moto_server import free_port

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
SECRET = "measure-secret-" + "x" * 40


def start_node(temp_dir: Path, env: dict[str, str], *, head: bool, address: str, ip: str) -> subprocess.Popen:
    ray = str(Path(sys.executable).with_name("ray"))
    args = [ray, "start", "--block", f"--node-ip-address={ip}", "--num-cpus=1", f"--temp-dir={temp_dir}",
            "--disable-usage-stats"]
    args += ["--head", f"--port={address.rsplit(':', 1)[1]}", "--include-dashboard=false"] if head else \
        [f"--address={address}"]
    log = open(temp_dir.parent / f"{temp_dir.name}.log", "wb")  # noqa: SIM115 - lives as long as the node
    return subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # `ray start --block` stops the processes it started
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def make_jobs(settings: Any, db: Any, n: int) -> list[str]:
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service
    from aiaas.store import tenancy
    from aiaas.store.blob_factory import create_blob_store
    from tests.helpers.datasets import toy_csv

    blobs = create_blob_store(settings.blobs_url)
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, f"m-{time.time_ns()}")
    ids = []
    for _ in range(n):
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org.id, src=io.BytesIO(toy_csv()), filename="t.csv",
                                    purpose="fine-tune", max_bytes=10**8)
            ids.append(job_service.create_job(s, settings, org_id=org.id, body=JobCreate(
                model="tiny-bert", training_file=f.id, hyperparameters={"n_epochs": 3})).id)
    return ids


def run_jobs(dispatcher: Any, db: Any, ids: list[str]) -> float:
    from aiaas.store.models import FineTuningJob

    t0 = time.monotonic()
    while True:
        dispatcher.run_once()
        with db.session() as s:
            done = [s.get(FineTuningJob, j).status for j in ids]
        if all(d in ("succeeded", "failed", "cancelled") for d in done) and not dispatcher.runs:
            assert set(done) == {"succeeded"}, done
            return time.monotonic() - t0
        time.sleep(0.2)


def artifact_of(db: Any, job_id: str) -> str:
    from aiaas.store.models import FineTuningJob, Model

    with db.session() as s:
        return s.get(Model, s.get(FineTuningJob, job_id).fine_tuned_model).artifact_uri


async def hammer(backend: Any, name: str, seconds: float, concurrency: int) -> float:
    texts = ["my card was charged twice please refund", "great service thank you very much"] * 4
    done = 0
    deadline = time.monotonic() + seconds

    async def one() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await backend.predict(name, texts)
            done += 1

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--serve-seconds", type=float, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aiaas-2n-"))
    token = root / "token"
    token.write_text(os.urandom(16).hex())
    token.chmod(0o600)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_USAGE_STATS_ENABLED": "0", "AIAAS_SECRET_KEY": SECRET}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # multi-node mode: a worker node may join
    os.environ["AIAAS_SECRET_KEY"] = SECRET
    address = f"{HEAD_IP}:{free_port()}"

    from aiaas.core.settings import Settings
    from aiaas.store import migrate
    from aiaas.store.db import Database
    from tests.helpers.tiny_bert import build_tiny_bert

    settings = Settings(env="test", data_dir=root / "data", database_url=f"sqlite:///{root / 'a.db'}",
                        cluster_address=address, ray_bind_host=HEAD_IP, ray_auth_token_path=token,
                        training_threads=1)
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    nodes = [start_node(root / "head", env, head=True, address=address, ip=HEAD_IP)]
    result: dict[str, Any] = {"jobs": args.jobs, "cpus_per_node": 1, "host_cores": os.cpu_count(),
                              "load_avg_at_start": os.getloadavg()}
    try:
        from aiaas.cluster.session import connect
        from aiaas.jobs.ray_backend import RayDispatcher
        from aiaas.serving.ray_serve import RayServingBackend

        deadline = time.monotonic() + 120
        while True:
            try:
                session = connect(settings)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        ray = session.ray
        dispatcher = RayDispatcher(settings, ray, num_cpus=1)
        first = make_jobs(settings, db, args.jobs)
        result["one_node_s"] = run_jobs(dispatcher, db, first)
        uri = artifact_of(db, first[0])
        backend = RayServingBackend(settings, replica_cpus=1)
        backend.deploy("one", uri, min_replicas=1, max_replicas=1)
        result["serve_one_replica_rps"] = round(asyncio.run(hammer(backend, "one", args.serve_seconds, 8)), 1)
        backend.delete("one")  # give the CPU back to training

        nodes.append(start_node(root / "worker", env, head=False, address=address, ip=WORKER_IP))
        while ray.cluster_resources().get("CPU", 0) < 2:
            time.sleep(0.5)
        result["two_nodes_s"] = run_jobs(dispatcher, db, make_jobs(settings, db, args.jobs))
        result["training_speedup"] = round(result["one_node_s"] / result["two_nodes_s"], 2)
        backend.deploy("two", uri, min_replicas=2, max_replicas=2)  # 1 CPU each: one replica per node
        result["serve_two_replicas_rps"] = round(asyncio.run(hammer(backend, "two", args.serve_seconds, 8)), 1)
        result["serving_speedup"] = round(result["serve_two_replicas_rps"] / result["serve_one_replica_rps"], 2)
        backend.delete("two")
        result["nodes"] = sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"])
        backend.serve.shutdown()  # stops the handles' metrics threads before the driver goes
        dispatcher.shutdown()
        session.shutdown()
    finally:
        for proc in reversed(nodes):
            stop_node(proc)
        shutil.rmtree(root, ignore_errors=True)
    result["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
