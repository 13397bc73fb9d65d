"""aiaas on a real local Ray session: training jobs dispatched as Ray tasks, the loopback-only
listener check, and serving through Ray Serve. One Ray session for the whole module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.ray.conftest import HAVE_RAY, NO_RAY, alive, events, freeze, job_row, task_pid, wait_for

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_RAY, reason=NO_RAY),
    pytest.mark.timeout(240),
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


# The lease hand-over is SQL: the kill/resume test runs on PostgreSQL too; the others on SQLite
# only, to keep the module inside its time budget.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _until_done(d, db, job_id: str, timeout: float = 90):
    from aiaas.store.jobs import TERMINAL

    return wait_for(lambda: (j := job_row(db, job_id)).status in TERMINAL and job_id not in d.runs and j,
                    timeout, every=d.run_once, what=f"job {job_id} to finish")


# ---- training ------------------------------------------------------------------------------------
@sqlite_only
def test_dispatcher_process_joins_cluster_and_api_sees_the_job(ray_session, settings, db, tiny_base, tmp_path):
    """`python -m aiaas.cluster.dispatcher` joins the cluster by address + token; the API (which holds no
    Ray driver) creates the job and reads its status and events from the store, as in embedded mode."""
    import asyncio

    from aiaas.api.app import create_app
    from aiaas.store import tenancy
    from tests.helpers.datasets import toy_csv

    with db.session() as s:
        _, _, key = tenancy.create_organization(s, "api-org")
    headers = {"Authorization": f"Bearer {key}"}
    env = {**os.environ, "AIAAS_CLUSTER_ADDRESS": ray_session.address,
           "AIAAS_RAY_AUTH_TOKEN_PATH": str(ray_session.token_path), "AIAAS_DATABASE_URL": settings.database_url,
           "AIAAS_DATA_DIR": str(settings.data_dir), "AIAAS_ENV": "test", "AIAAS_HEARTBEAT_SECONDS": "0.5",
           "AIAAS_POLL_SECONDS": "0.2"}
    log = open(tmp_path / "dispatcher.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "aiaas.cluster.dispatcher", "--max-jobs", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)

    async def scenario() -> dict:
        app = create_app(settings, db=db, migrate_db=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as c:
            f = (await c.post("/v1/files", files={"file": ("t.csv", toy_csv())}, data={"purpose": "fine-tune"})).json()
            job = (await c.post("/v1/fine_tuning/jobs", json={"model": "tiny-bert", "training_file": f["id"],
                                                              "hyperparameters": {"n_epochs": 1}})).json()
            deadline = time.monotonic() + 90
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "dispatcher.log").read_text()
                await asyncio.sleep(0.3)
                job = (await c.get(f"/v1/fine_tuning/jobs/{job['id']}")).json()
            job["events"] = (await c.get(f"/v1/fine_tuning/jobs/{job['id']}/events")).json()["data"]
            return job

    try:
        job = asyncio.run(scenario())
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        log.close()
    assert job["status"] == "succeeded", (job, (tmp_path / "dispatcher.log").read_text())
    messages = [e["message"] for e in job["events"]]
    assert any(m.startswith("Training runs on Ray node") for m in messages)
    assert "The job has successfully completed." in messages and job["fine_tuned_model"]
    pid = next(e["data"]["pid"] for e in job["events"] if (e.get("data") or {}).get("pid"))
    assert pid not in (os.getpid(), proc.pid)  # trained in a Ray worker, not in either driver
    assert rc == 0
    row = job_row(db, job["id"])
    assert row.lease_owner is None and row.attempts == 1


def test_killed_worker_resumes_from_checkpoint(dispatcher, db, make_job):
    """SIGKILL the training process after a checkpoint: the job is claimed again and resumes from it.
    (Then cancelled, so the test does not wait for 50 epochs.)"""
    from aiaas.store import jobs as job_store

    job_id = make_job(hyperparameters={"n_epochs": 50, "batch_size": 16})
    step = wait_for(lambda: job_row(db, job_id).status == "running" and _checkpoint_step(db, job_id), 90,
                    every=dispatcher.run_once, what="a first checkpoint")
    pid = task_pid(db, job_id)
    os.kill(pid, signal.SIGKILL)
    resumed = wait_for(lambda: [e for e in events(db, job_id) if e.message.startswith("Resumed from checkpoint")],
                       90, every=dispatcher.run_once, what="the job to resume")
    assert resumed[0].data["step"] >= step
    with db.session() as s:
        job_store.request_cancel(s, job_row(db, job_id).org_id, job_id)
    job = _until_done(dispatcher, db, job_id, timeout=60)
    assert job.status == "cancelled" and job.attempts == 2 and not alive(pid)
    messages = [e.message for e in events(db, job_id)]
    assert any("stopped unexpectedly" in m for m in messages)
    assert "Job picked up by another worker; resuming." in messages
    assert task_pid(db, job_id) != pid


def _checkpoint_step(db, job_id: str) -> int | None:
    from sqlalchemy import func, select

    from aiaas.store.models import JobCheckpoint

    with db.session() as s:
        return s.scalar(select(func.max(JobCheckpoint.step)).where(JobCheckpoint.job_id == job_id))


@sqlite_only
def test_cancel_stops_gracefully_or_is_forced(dispatcher, db, make_job):
    """Two jobs at once: one stops by itself when cancelled; the other is frozen (SIGSTOP), so only
    the dispatcher's force-cancel after the grace period can end it."""
    from aiaas.store import jobs as job_store

    graceful, frozen = make_job(hyperparameters={"n_epochs": 50}), make_job(hyperparameters={"n_epochs": 50})
    wait_for(lambda: all(job_row(db, j).status == "running" and task_pid(db, j) for j in (graceful, frozen)), 90,
             every=dispatcher.run_once, what="both jobs running")
    org_id = job_row(db, graceful).org_id
    with db.session() as s:
        job_store.request_cancel(s, org_id, graceful)
    t0 = time.monotonic()
    a = _until_done(dispatcher, db, graceful, timeout=30)
    assert a.status == "cancelled" and time.monotonic() - t0 < 15
    assert [e.message for e in events(db, graceful)][-1] == "Job cancelled."  # written by the task itself

    frozen_pid = task_pid(db, frozen)
    freeze(frozen_pid, db, frozen)
    dispatcher.cancel_grace_s = 1
    with db.session() as s:
        job_store.request_cancel(s, org_id, frozen)
    b = _until_done(dispatcher, db, frozen, timeout=60)
    assert b.status == "cancelled" and b.lease_owner is None
    assert [e.message for e in events(db, frozen)][-1] == "Job cancelled (its training process was stopped)."
    assert not alive(frozen_pid)


@sqlite_only
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
