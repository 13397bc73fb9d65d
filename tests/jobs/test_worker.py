"""A worker claims a job, trains it, registers the model; leases fence stale workers."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, update

from aiaas.jobs.lease import Lease
from aiaas.jobs.worker import Worker
from aiaas.store import jobs as job_store
from aiaas.store.models import FineTuningJob, JobCheckpoint, JobEvent, Model

pytestmark = pytest.mark.slow


def test_worker_runs_job_to_a_registered_model(settings, db, make_job):
    job_id = make_job(suffix="toy", hyperparameters={"n_epochs": 2, "freeze_layers": 1})
    with Worker(settings) as w:
        assert w.run_once() == "succeeded"
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.status == "succeeded" and job.error is None and job.lease_owner is None
        assert job.fine_tuned_model.startswith("ft:tiny-bert:jobs-org:toy:ftjob-")
        assert job.trained_tokens > 0 and job.hyperparameters["n_epochs"] == 2
        assert job.data_report["n_train"] + job.data_report["n_validation"] == 40
        model = s.get(Model, job.fine_tuned_model)
        assert model.lineage["training_file"]["sha256"] and model.lineage["labels"] == ["negative", "positive"]
        assert model.card["labels"] == ["negative", "positive"] and "accuracy" in model.card["metrics"]
        # The job's hyperparameters reach the engine: the tiny BERT's lower layer was frozen as asked.
        trained = model.card["hyperparameters"]
        assert trained["freeze_layers"] == 1 and trained["reasons"]["freeze_layers"] == "requested"
        kinds = {e.type for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))}
        assert kinds == {"message", "metrics"}
        assert s.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).first() is not None
        assert len(job.result_files) == 1
    with Worker(settings) as w:
        assert w.run_once() is None  # nothing left to do


def test_invalid_data_fails_job_with_precise_error(settings, db, make_job):
    job_id = make_job(b"text,label\nhello,a\nworld,a\nagain,a\nmore,a\nsome,a\nthing,a\nelse,a\nlast,a\n")
    with Worker(settings) as w:
        assert w.run_once() == "failed"
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.error["code"] == "invalid_file" and job.error["param"] == "training_file"
        assert "class" in job.error["message"]


def test_stale_worker_cannot_write_after_losing_lease(settings, db, make_job):
    job_id = make_job()
    with db.session() as s:
        assert job_store.try_claim(s, job_id, "worker-a", lease_s=30)
        assert not job_store.try_claim(s, job_id, "worker-b", lease_s=30)  # live lease: refused
    stale = Lease(db, job_id, "worker-a", lease_s=30, heartbeat_s=60)
    assert stale.write(lambda s, job: "ok") == "ok"
    # Worker A stalls; its lease expires and worker B takes over.
    with db.session() as s:
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(lease_expires_at=time.time() - 1))
        assert job_store.try_claim(s, job_id, "worker-b", lease_s=30)

    def sneaky(s, job):
        job.status = "failed"
        return "written"

    assert stale.write(sneaky) is None and stale.lost.is_set() and stale.should_stop
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.status == "validating_files" and job.lease_owner == "worker-b"


def test_cancel_running_job_stops_it(settings, db, make_job):
    job_id = make_job(hyperparameters={"n_epochs": 50})
    worker = Worker(settings)
    worker.close()  # only its id and blob store are used here
    with db.session() as s:
        assert job_store.try_claim(s, job_id, worker.worker_id, lease_s=30)
    lease = Lease(db, job_id, worker.worker_id, lease_s=30, heartbeat_s=0.1)
    with db.session() as s:
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(cancel_requested=True))
    from aiaas.jobs.runner import run_job

    t0 = time.monotonic()
    with lease:
        assert run_job(lease, settings, worker.blobs) == "cancelled"
    assert time.monotonic() - t0 < 30
    with db.session() as s:
        assert s.get(FineTuningJob, job_id).status == "cancelled"
