"""Chaos R3 on real processes: a training worker paused (SIGSTOP) past its lease loses the job to another
worker within lease + one heartbeat, and when it resumes (SIGCONT) every write it tries is refused."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from aiaas.sdk import Client
from aiaas.store.models import FineTuningJob, JobCheckpoint, JobEvent, Model
from tests.e2e.chaos import make_stack, wait_for
from tests.e2e.server import AIAAS, start_server
from tests.helpers.datasets import toy_csv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LEASE_S, HEARTBEAT_S = 4.0, 0.5


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
            os.kill(a.pid, signal.SIGSTOP)
            stopped_at = time.monotonic()
            owner = wait_for(lambda: _snapshot(db, job_id)[3] not in (None, "") and
                             _snapshot(db, job_id)[4] == 2, LEASE_S + 10, interval=0.02)
            reclaim_s = time.monotonic() - stopped_at
            assert owner, "the job was not re-claimed"
            # B has resumed the job. Pause B briefly (well within its lease) so that any row written
            # while A runs again can only be A's, then let A go.
            assert wait_for(lambda: "Resumed from checkpoint" in " ".join(
                e["message"] for e in c.fine_tuning.jobs.list_events(job_id, limit=100)), 120), b_log.read_text()
            os.kill(b.pid, signal.SIGSTOP)
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
