"""aiaas on a real local Ray session: training jobs dispatched as Ray tasks, the loopback-only
listener check, and serving through Ray Serve. One Ray session for the whole module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import POSTGRES_URL
from tests.ray.conftest import HAVE_RAY, NO_RAY, alive, events, freeze, job_row, task_pid, wait_for

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_RAY, reason=NO_RAY),
    pytest.mark.timeout(240),
    # Ray Serve 2.60's own pydantic models still use v1-style Field arguments.
    pytest.mark.filterwarnings("ignore:Using extra keyword arguments on `Field` is deprecated:DeprecationWarning"),
]


@pytest.fixture
def fast(settings):
    """Short heartbeats so a cancel is seen within a second."""
    return settings.model_copy(update={"heartbeat_seconds": 0.3, "poll_seconds": 0.2})


@pytest.fixture
def dispatcher(ray_session, fast):
    from aiaas.jobs.ray_backend import RayDispatcher

    d = RayDispatcher(fast, ray_session.ray, num_cpus=1, max_jobs=2, cancel_grace_s=60)
    yield d
    d.shutdown()


# One database per test, to keep the module inside its time budget: SQLite for most; the kill/resume
# test (the whole hand-over: claim, hand-over, death, take-back, re-claim) on PostgreSQL when the
# suite has one, and the cheap cancel-before-start test on both.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
postgres_if_available = pytest.mark.parametrize("database_url", ["postgres" if POSTGRES_URL else "sqlite"],
                                                indirect=True)


def _until_done(d, db, job_id: str, timeout: float = 90):
    from aiaas.store.jobs import TERMINAL

    return wait_for(lambda: (j := job_row(db, job_id)).status in TERMINAL and job_id not in d.runs and j,
                    timeout, every=d.run_once, what=f"job {job_id} to finish")


# ---- training ------------------------------------------------------------------------------------
@sqlite_only
def test_dispatcher_process_trains_and_serves_for_the_api(ray_session, settings, db, tiny_base, tmp_path):
    """`python -m aiaas.cli.dispatcher --gateway-port N` joins the cluster by address + token. The
    API (which holds no Ray driver) creates a job and reads its status and events from the store, as
    in embedded mode; then the trained model is deployed on Ray Serve and called through the gateway."""
    import asyncio

    from aiaas.api.app import create_app
    from aiaas.cluster.gateway import GatewayClient
    from aiaas.core.errors import AiaasError
    from aiaas.store import tenancy
    from tests.conftest import TEST_SECRET
    from tests.helpers.datasets import toy_csv
    from tests.ray.moto_server import free_port

    with db.session() as s:
        _, _, key = tenancy.create_organization(s, "api-org")
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    env = {**os.environ, "AIAAS_CLUSTER_ADDRESS": ray_session.address,
           "AIAAS_RAY_AUTH_TOKEN_PATH": str(ray_session.token_path), "AIAAS_DATABASE_URL": settings.database_url,
           "AIAAS_DATA_DIR": str(settings.data_dir), "AIAAS_ENV": "test", "AIAAS_HEARTBEAT_SECONDS": "0.5",
           "AIAAS_POLL_SECONDS": "0.2"}
    log = open(tmp_path / "dispatcher.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "aiaas.cli.dispatcher", "--max-jobs", "1",
                             "--gateway-port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)

    def dispatcher_log() -> str:
        return (tmp_path / "dispatcher.log").read_text(errors="replace")[-5000:]

    async def scenario() -> tuple[dict, tuple]:
        app = create_app(settings, db=db, migrate_db=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
            f = (await c.post("/v1/files", files={"file": ("t.csv", toy_csv())}, data={"purpose": "fine-tune"})).json()
            job = (await c.post("/v1/fine_tuning/jobs", json={"model": "tiny-bert", "training_file": f["id"],
                                                              "hyperparameters": {"n_epochs": 1}})).json()
            deadline = time.monotonic() + 90
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline and proc.poll() is None, dispatcher_log()
                await asyncio.sleep(0.3)
                job = (await c.get(f"/v1/fine_tuning/jobs/{job['id']}")).json()
            job["events"] = (await c.get(f"/v1/fine_tuning/jobs/{job['id']}/events")).json()["data"]
        assert job["status"] == "succeeded", (job, dispatcher_log())
        # The API with the gateway configured: a deployment becomes a Ray Serve application and answers
        # like the in-process runtime does for the same model.
        on_ray = create_app(settings.model_copy(update={"ray_gateway_url": f"http://127.0.0.1:{port}"}),
                            db=db, migrate_db=False)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=on_ray), base_url="http://test",
                                     headers=headers) as c:
            r = await c.post("/v1/deployments", json={"name": "on-ray", "model": job["fine_tuned_model"],
                                                      "min_replicas": 1})
            assert r.status_code == 201, r.text
            # Its readiness comes from Ray Serve: a replica runs (min_replicas=1).
            assert (await c.get("/v2/models/on-ray/ready")).json() == {"name": "on-ray", "ready": True}
            remote = (await c.post("/v1/deployments/on-ray/predict", json={"inputs": TEXTS})).json()
            local = (await c.post("/v1/classifications", json={"model": job["fine_tuned_model"],
                                                               "input": TEXTS})).json()
            assert [d["label"] for d in remote["data"]] == [d["label"] for d in local["data"]], (remote, local)
            assert np.allclose([d["score"] for d in remote["data"]], [d["score"] for d in local["data"]],
                               atol=1e-4)
            assert (await c.delete("/v1/deployments/on-ray")).status_code == 200
        await on_ray.state.aiaas.services.inference.aclose()
        gateway = GatewayClient(f"http://127.0.0.1:{port}", TEST_SECRET)
        intruder = GatewayClient(f"http://127.0.0.1:{port}", "some-other-secret-" + "y" * 30)
        try:
            uri = _artifact_uri(db, job["fine_tuned_model"])
            await gateway.deploy("trained", uri, min_replicas=1, max_replicas=1)
            served = await gateway.predict("trained", TEXTS)
            with pytest.raises(AiaasError) as denied:
                await intruder.predict("trained", TEXTS)
            assert denied.value.code == "invalid_api_key"
            await gateway.delete("trained")
            with pytest.raises(AiaasError) as gone:
                await gateway.predict("trained", TEXTS)
            assert gone.value.code == "not_found"
        finally:
            await gateway.aclose()
            await intruder.aclose()
        return job, (uri, served)

    try:
        job, (uri, served) = asyncio.run(scenario())
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
        log.close()
    messages = [e["message"] for e in job["events"]]
    assert any(m.startswith("Training runs on Ray node") for m in messages)
    assert "The job has successfully completed." in messages and job["fine_tuned_model"]
    pid = next(e["data"]["pid"] for e in job["events"] if (e.get("data") or {}).get("pid"))
    assert pid not in (os.getpid(), proc.pid)  # trained in a Ray worker, not in either driver
    assert rc == 0, dispatcher_log()
    row = job_row(db, job["id"])
    assert row.lease_owner is None and row.attempts == 1
    _check_same(_in_process_predictor(settings, db, uri), served)


def _artifact_uri(db, model_id: str) -> str:
    from aiaas.store.models import Model

    with db.session() as s:
        return s.get(Model, model_id).artifact_uri


def _in_process_predictor(settings, db, uri: str):
    from aiaas.serving.runtime import load_predictor
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.conftest import TEST_SECRET

    with encrypted(create_blob_store(settings.blobs_url), db, TEST_SECRET).open_local(uri + "/onnx") as onnx:
        return load_predictor(onnx)


@postgres_if_available
def test_killed_worker_resumes_from_checkpoint(dispatcher, db, make_job):
    """SIGKILL the training process after a checkpoint: the job is claimed again and resumes from it.
    Then a cancel, which the resumed task sees through its lease and obeys at its next step."""
    from aiaas.store import jobs as job_store

    job_id = make_job(rows_per_class=300, hyperparameters={"n_epochs": 50, "batch_size": 16})
    step = wait_for(lambda: job_row(db, job_id).status == "running" and _checkpoint_step(db, job_id), 90,
                    every=dispatcher.run_once, what="a first checkpoint")
    pid = task_pid(db, job_id)
    os.kill(pid, signal.SIGKILL)
    resumed = wait_for(lambda: [e for e in events(db, job_id) if e.message.startswith("Resumed from checkpoint")],
                       90, every=dispatcher.run_once, what="the job to resume")
    assert resumed[0].data["step"] >= step
    with db.session() as s:
        job_store.request_cancel(s, job_row(db, job_id).org_id, job_id)
    t0 = time.monotonic()
    job = _until_done(dispatcher, db, job_id, timeout=60)
    assert job.status == "cancelled" and job.attempts == 2 and not alive(pid)
    assert time.monotonic() - t0 < 20
    messages = [e.message for e in events(db, job_id)]
    assert messages[-1] == "Job cancelled."  # written by the task itself, not the dispatcher
    assert any("stopped unexpectedly" in m for m in messages)
    assert "Job picked up by another worker; resuming." in messages
    assert task_pid(db, job_id) != pid


def _checkpoint_step(db, job_id: str) -> int | None:
    from sqlalchemy import func, select

    from aiaas.store.models import JobCheckpoint

    with db.session() as s:
        return s.scalar(select(func.max(JobCheckpoint.step)).where(JobCheckpoint.job_id == job_id))


@sqlite_only
def test_hung_training_process_is_killed_after_the_grace_period(dispatcher, db, make_job):
    """A frozen (SIGSTOP) training process never sees the cancel; the dispatcher kills its task after
    `cancel_grace_s` and records the cancellation itself. (The graceful path, where the task stops
    at its next step, ends the kill/resume test above.)"""
    from aiaas.store import jobs as job_store

    job_id = make_job(hyperparameters={"n_epochs": 50})
    pid = wait_for(lambda: job_row(db, job_id).status == "running" and task_pid(db, job_id), 90,
                   every=dispatcher.run_once, what="the job running")
    freeze(pid, db, job_id)
    dispatcher.cancel_grace_s = 1
    with db.session() as s:
        job_store.request_cancel(s, job_row(db, job_id).org_id, job_id)
    job = _until_done(dispatcher, db, job_id, timeout=60)
    assert job.status == "cancelled" and job.lease_owner is None
    assert [e.message for e in events(db, job_id)][-1] == "Job cancelled (its training process was stopped)."
    assert not alive(pid)


def test_cancel_before_start_never_runs(ray_session, fast, db, make_job):
    """A job claimed while the cluster is full and cancelled before its task starts never trains."""
    from aiaas.jobs.ray_backend import RayDispatcher
    from aiaas.store import jobs as job_store

    # Ask for more CPUs per task than the session has, so the task stays pending.
    d = RayDispatcher(fast, ray_session.ray, num_cpus=3, max_jobs=1)
    try:
        job_id = make_job()
        d.run_once()
        assert job_id in d.runs and job_row(db, job_id).lease_owner == d.runs[job_id].claim_id
        time.sleep(1)
        d.run_once()  # still pending: the dispatcher keeps renewing its claim
        assert job_row(db, job_id).lease_owner == d.runs[job_id].claim_id
        with db.session() as s:
            job_store.request_cancel(s, job_row(db, job_id).org_id, job_id)
        job = _until_done(d, db, job_id, timeout=30)
    finally:
        d.shutdown()
    assert job.status == "cancelled" and job.lease_owner is None and job.started_at is None
    assert task_pid(db, job_id) is None


# ---- serving on Ray Serve ------------------------------------------------------------------------
TEXTS = ["great service thank you", "my card was charged twice please refund", "where is my package", "ok"]


@pytest.fixture(scope="module")
def model_artifact(tmp_path_factory):
    """A tiny exported classifier, stored encrypted in the blob store as a trained job would leave it."""
    import json

    from aiaas.core.settings import Settings
    from aiaas.registry.export import export_model
    from aiaas.serving.runtime import load_predictor
    from aiaas.store import migrate, tenancy
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted
    from tests.conftest import TEST_SECRET
    from tests.helpers.tiny_bert import build_tiny_bert

    root = tmp_path_factory.mktemp("serving")
    settings = Settings(env="test", data_dir=root / "data", database_url=f"sqlite:///{root / 'serve.db'}",
                        secret_key=TEST_SECRET)
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "serve-org")
    model_dir = build_tiny_bert(root / "tiny")
    (model_dir / "aiaas.json").write_text(json.dumps({"task": "single_label_classification", "max_length": 64,
                                                      "labels": ["negative", "positive"], "do_lower_case": True}))
    export_model(model_dir, root / "onnx")
    blobs = encrypted(create_blob_store(settings.blobs_url), db, TEST_SECRET)
    uri = blobs.put_dir(f"{org.id}/models/ftjob-serve/onnx", root / "onnx").rsplit("/onnx", 1)[0]
    db.dispose()
    return settings, uri, load_predictor(root / "onnx")


@pytest.fixture(scope="module")
def backend(ray_session, model_artifact):
    from aiaas.serving.ray_serve import RayServingBackend

    settings, _, _ = model_artifact
    b = RayServingBackend(settings, replica_cpus=0.25, idle_s=2, request_timeout_s=60)
    yield b
    b.serve.shutdown()


def _check_same(reference, prediction) -> None:
    import numpy as np

    scores, labels, task, tokens = prediction
    np.testing.assert_allclose(scores, reference.predict(TEXTS), rtol=1e-5, atol=1e-6)
    assert labels == reference.labels and task == reference.task
    assert tokens == sum(reference.count_tokens(TEXTS))


async def test_serve_answers_like_the_in_process_runtime(backend, model_artifact):
    from aiaas.core.errors import InvalidRequest, NotFound

    _, uri, reference = model_artifact
    backend.deploy("same", uri, min_replicas=1, max_replicas=2)
    _check_same(reference, await backend.predict("same", TEXTS))
    with pytest.raises(InvalidRequest):  # the runtime's own error, code intact
        await backend.predict("same", ["fine", 3])
    backend.delete("same")
    with pytest.raises(NotFound):
        await backend.predict("same", TEXTS)


async def test_scale_to_zero_and_back(backend, model_artifact):
    _, uri, reference = model_artifact
    backend.deploy("zero", uri, min_replicas=0, max_replicas=1)
    assert backend.replicas("zero") == 1  # started once, so a broken artifact fails at deploy
    wait_for(lambda: backend.replica_states("zero") == {}, 90, interval=0.5, what="scale to zero")
    t0 = time.monotonic()
    prediction = await backend.predict("zero", TEXTS)  # held while a replica starts
    cold_start = time.monotonic() - t0
    _check_same(reference, prediction)
    assert backend.replicas("zero") == 1
    print(f"cold start from zero replicas: {cold_start:.2f}s")
    assert cold_start < 60


@pytest.mark.timeout(480)  # the load, both scalings and the session's start on a busy 2-core box
async def test_replicas_scale_up_under_load_then_back_to_min_replicas(backend, model_artifact):
    """Autoscaling from the deployment's min/max replicas and a target of in-flight requests per replica:
    24 callers in flight (target 4 per replica) take it from 1 to max_replicas=2; once they stop, it goes
    back to min_replicas=0."""
    import asyncio

    _, uri, _ = model_artifact
    backend.deploy("scale", uri, min_replicas=0, max_replicas=2)
    seen: list[tuple[float, int]] = []
    stop = asyncio.Event()
    t0 = time.monotonic()

    async def caller() -> None:
        while not stop.is_set():
            await backend.predict("scale", TEXTS * 8)

    async def until(pred, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen.append((round(time.monotonic() - t0, 1), backend.replicas("scale")))
            if pred(seen[-1][1]):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; replicas over time: {seen}")

    callers = [asyncio.create_task(caller()) for _ in range(24)]
    try:
        await until(lambda n: n == 2, 120, "the scale-up to max_replicas")
    finally:
        stop.set()
        await asyncio.gather(*callers)
    up = seen[-1][0]
    await until(lambda n: n == 0 and backend.replica_states("scale") == {}, 120, "the scale-down to min_replicas")
    print(f"replicas over time (s, running): {seen}; 2 at {up}s under load, 0 at {seen[-1][0]}s")
    assert max(n for _, n in seen) == 2  # never above max_replicas
    backend.delete("scale")


async def test_killed_replica_is_replaced(backend, model_artifact):
    from aiaas.cluster.listeners import descendants

    _, uri, reference = model_artifact
    backend.deploy("crash", uri, min_replicas=1, max_replicas=1)
    replica_pids = _replica_pids("aiaas-crash")
    assert len(replica_pids) == 1
    os.kill(replica_pids[0], signal.SIGKILL)
    wait_for(lambda: not alive(replica_pids[0]), 10, what="the replica to die")
    _check_same(reference, await backend.predict("crash", TEXTS))  # held until the replacement runs
    new = wait_for(lambda: _replica_pids("aiaas-crash"), 30, what="a replacement replica")
    assert new != replica_pids and all(p in descendants(os.getpid()) for p in new)


def _replica_pids(app: str) -> list[int]:
    from aiaas.cluster.listeners import descendants

    out = []
    for pid in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(f"ray::ServeReplica:{app}:") and alive(pid):
            out.append(pid)
    return out


# ---- loopback only -------------------------------------------------------------------------------
def test_every_ray_listener_is_loopback(ray_session, backend, model_artifact):
    """List the listening sockets of every process of the session (GCS, raylet, agents, workers, the
    Serve controller and a replica) and fail on anything beyond loopback. A control deployment
    without our narrowing shows the check catches Serve's hard-coded `[::]:0` replica listener."""
    from aiaas.cluster.listeners import descendants, listening_sockets, non_loopback

    _, uri, _ = model_artifact
    assert ray_session.address.startswith("127.0.0.1:")
    backend.deploy("listen", uri, min_replicas=1, max_replicas=1)
    pids = descendants(os.getpid())
    listeners = listening_sockets(pids)
    by_name = " | ".join(str(x) for x in listeners)
    assert len({x.pid for x in listeners}) >= 5, by_name  # GCS, raylet, agents, workers, replica...
    assert any("gcs_server" in x.name for x in listeners) and any("raylet" in x.name for x in listeners), by_name
    assert any(x.name.startswith("ray::ServeReplica:aiaas-listen") for x in listeners), by_name
    assert not any("ProxyActor" in x.name for x in listeners), by_name  # no HTTP proxy at all
    assert non_loopback(listeners) == [], by_name

    # The control: a replica that does not narrow its gRPC server listens on every interface.
    from ray import serve

    class Plain:
        def __call__(self) -> str:
            return "ok"

    serve.run(serve.deployment(Plain, name="plain", ray_actor_options={"num_cpus": 0}).bind(), name="control",
              route_prefix=None)
    plain = _replica_pids("control")
    wild = non_loopback(listening_sockets(plain))
    assert [(x.ip, x.name.split()[0]) for x in wild] == [("::", "ray::ServeReplica:control:plain")]
