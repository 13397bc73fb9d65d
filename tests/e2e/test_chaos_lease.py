"""Chaos R3 on real processes: a training worker paused (SIGSTOP) past its lease loses the job to another
worker within lease + one heartbeat, and when it resumes (SIGCONT) every write it tries is refused."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, make_url, select
from sqlalchemy.exc import OperationalError

from aiaas.sdk import Client
from aiaas.store.models import FineTuningJob, JobCheckpoint, JobEvent, Model
from tests.e2e.chaos import make_stack, wait_for
from tests.e2e.server import AIAAS, start_server
from tests.helpers.datasets import toy_csv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LEASE_S, HEARTBEAT_S = 6.0, 0.5


def _holds_no_write_lock(database_url: str, job_id: str) -> bool:
    """True when no open transaction holds what a fenced write on the job needs: SQLite's write lock, or
    the job's row in PostgreSQL. A worker stopped inside such a transaction would block every other writer."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        conn = sqlite3.connect(url.database or "", timeout=0.05, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()
    engine = create_engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL lock_timeout = '100ms'")
            conn.execute(select(FineTuningJob.id).where(FineTuningJob.id == job_id).with_for_update())
            return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def _pause_outside_transaction(pid: int, database_url: str, job_id: str) -> None:
    """SIGSTOP `pid` at a moment it is not inside a write transaction (resume it briefly and retry until so)."""
    for _ in range(200):
        os.kill(pid, signal.SIGSTOP)
        if _holds_no_write_lock(database_url, job_id):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError("the worker was inside a write transaction at each of 200 pauses")


def _worker(stack, name: str) -> tuple[subprocess.Popen, Path]:  # type: ignore[no-untyped-def]
    log = stack.tmp / f"worker-{name}.log"
    proc = subprocess.Popen(AIAAS + ["--log-level", "INFO", "worker"],
                            env=stack.env | {"AIAAS_TRAINING_THREADS": "1"},
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)  # noqa: SIM115
    return proc, log


def _snapshot(db, job_id: str) -> tuple:  # type: ignore[no-untyped-def]
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        return (
            s.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)),
            s.scalar(select(func.count()).select_from(JobCheckpoint).where(JobCheckpoint.job_id == job_id)),
            job.status, job.lease_owner, job.attempts, job.metrics, job.fine_tuned_model, job.estimated_finish,
        )


def test_r3_paused_worker_is_replaced_and_fenced(tmp_path, database_url):
    stack = make_stack(tmp_path, database_url, AIAAS_LEASE_SECONDS=str(LEASE_S),
                       AIAAS_HEARTBEAT_SECONDS=str(HEARTBEAT_S))
    server = start_server(stack.env, tmp_path)
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(toy_csv(100, seed=4))
    procs: list[subprocess.Popen] = []
    db = stack.db()
    try:
        with Client(server.base_url, stack.key) as c:
            f = c.files.create(csv_path)
            job_id = c.fine_tuning.jobs.create(model="tiny-bert", training_file=f["id"], seed=1,
                                               hyperparameters={"n_epochs": 4, "batch_size": 8})["id"]
            a, a_log = _worker(stack, "a")
            procs.append(a)
            assert wait_for(lambda: list(c.fine_tuning.jobs.list_checkpoints(job_id)), 180), a_log.read_text()
            b, b_log = _worker(stack, "b")  # idle: nothing to claim while A holds the lease
            procs.append(b)
            time.sleep(1.0)
            _pause_outside_transaction(a.pid, stack.database_url, job_id)  # else B could not claim at all
            stopped_at = time.monotonic()
            owner = wait_for(lambda: _snapshot(db, job_id)[3] not in (None, "") and
                             _snapshot(db, job_id)[4] == 2, LEASE_S + 10, interval=0.02)
            reclaim_s = time.monotonic() - stopped_at
            assert owner, "the job was not re-claimed"
            # B has resumed the job. Pause B briefly (well within its lease) so that any row written
            # while A runs again can only be A's, then let A go. B is paused between transactions: paused
            # inside one it would hold the lock A's heartbeat needs, and A could not even learn it lost.
            assert wait_for(lambda: "Resumed from checkpoint" in " ".join(
                e["message"] for e in c.fine_tuning.jobs.list_events(job_id, limit=100)), 120), b_log.read_text()
            _pause_outside_transaction(b.pid, stack.database_url, job_id)
            before = _snapshot(db, job_id)
            os.kill(a.pid, signal.SIGCONT)
            refused = wait_for(lambda: "writes refused" in a_log.read_text(), LEASE_S - 1.5, interval=0.02)
            after = _snapshot(db, job_id)
            os.kill(b.pid, signal.SIGCONT)
            assert refused, a_log.read_text()[-2000:]
            final = wait_for(lambda: c.fine_tuning.jobs.retrieve(job_id)["status"] in ("succeeded", "failed"), 240)
            assert final, b_log.read_text()[-2000:]
            job = c.fine_tuning.jobs.retrieve(job_id)
    finally:
        for p in procs:
            with contextlib.suppress(OSError):
                os.kill(p.pid, signal.SIGCONT)
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        server.stop()
    a_text = a_log.read_text()
    n_refused = int(a_text.split(" writes refused")[0].rsplit(" ", 1)[-1])
    print(f"R3: re-claimed {reclaim_s:.2f} s after SIGSTOP (lease {LEASE_S} + heartbeat {HEARTBEAT_S}); "
          f"the resumed worker had {n_refused} writes refused, 0 applied")
    assert reclaim_s <= LEASE_S + HEARTBEAT_S
    assert before == after, (before, after)  # nothing A tried after resuming reached the database
    assert "(attempt 1) lost" in a_text and n_refused >= 1
    assert job["status"] == "succeeded", job["error"]
    with db.session() as s:
        row = s.get(FineTuningJob, job_id)
        model = s.get(Model, row.fine_tuned_model)
        assert row.attempts == 2 and row.crashes == 1 and model.artifact_uri.endswith("/attempt-2")
    db.dispose()
    # A wrote no artifact anyone sees: its attempt's directory is gone and the blob store holds no key of it.
    assert not (stack.data / "jobs" / job_id).exists()
    assert not [p for p in (stack.data / "blobs").rglob("*") if "attempt-1" in p.parts]
