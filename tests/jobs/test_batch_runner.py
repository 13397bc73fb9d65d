"""Batches in workers: a worker that lost its lease can answer a chunk but never record it (the next
claim answers those lines and each appears once), and a worker's claims alternate jobs and batches."""

from __future__ import annotations

import io
import json
import time

import pytest
from sqlalchemy import update

from aiaas.jobs.batch_runner import BatchLease, BatchRunner, _Input, _Snapshot
from aiaas.jobs.worker import Worker
from aiaas.protocol.batches import BatchCreate
from aiaas.services import batches as batch_service
from aiaas.services import files as file_service
from aiaas.store import batches as batch_store
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted
from aiaas.store.models import Batch, File
from tests.helpers.deployed import export_tiny_classifier, register

pytestmark = pytest.mark.slow
MODEL = "ft:tiny-bert:jobs-org:b:ftjob-1"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def make_batch(settings, db, make_job, artifact):
    org_id = make_job.org_id
    register(settings, db, org_id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())

    def make(n: int) -> str:
        raw = "".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/classifications",
                                  "body": {"model": MODEL, "input": f"line {i}"}}) + "\n" for i in range(n))
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(raw.encode()), filename="in.jsonl",
                                    purpose="batch", max_bytes=10**8)
            body = BatchCreate(input_file_id=f.id, endpoint="/v1/classifications")
            return batch_service.create(s, settings, org_id=org_id, key_id=None, body=body).id

    return make


def _output_ids(settings, db, batch_id: str) -> list[str]:
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        row = s.get(Batch, batch_id)
        f = s.get(File, row.output_file_id)
        text = b"".join(blobs.read_stream(f.storage_uri)).decode()
    return [json.loads(line)["custom_id"] for line in text.splitlines()]


def test_stale_worker_chunk_is_never_recorded(settings, db, make_batch):
    settings = settings.model_copy(update={"batch_chunk_lines": 3})
    batch_id = make_batch(10)
    runner = BatchRunner(settings, db, create_blob_store(settings.blobs_url))
    try:
        with db.session() as s:
            first = batch_store.try_claim(s, batch_id, "worker-a", 30)
        stale = BatchLease(db, batch_id, "worker-a", first, lease_s=30, heartbeat_s=30)
        # Worker A is paused past its lease; worker B claims the batch (attempt 2).
        with db.session() as s:
            s.execute(update(Batch).where(Batch.id == batch_id).values(lease_expires_at=time.time() - 1))
            second = batch_store.try_claim(s, batch_id, "worker-b", 30)
        assert second == first + 1
        # A wakes up and answers a chunk: it is answered, but not recorded.
        with db.session() as s:
            snap = _Snapshot(s.get(Batch, batch_id))
        lines = [json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/classifications",
                             "body": {"model": MODEL, "input": f"line {i}"}}) for i in range(10)]
        assert runner._chunk(stale, snap, _Input(lines), 0, 3) is None
        assert stale.lost.is_set()
        with db.session() as s:
            assert s.get(Batch, batch_id).cursor == 0 and s.get(Batch, batch_id).parts == []
        with BatchLease(db, batch_id, "worker-b", second, lease_s=30, heartbeat_s=30) as lease:
            assert runner.run(lease) == "completed"
    finally:
        runner.close()
    ids = _output_ids(settings, db, batch_id)
    assert sorted(ids) == sorted(f"c{i}" for i in range(10)) and len(ids) == 10
    with db.session() as s:
        row = s.get(Batch, batch_id)
        assert (row.total, row.completed, row.failed, row.cursor) == (10, 10, 0, 10)


def test_claims_alternate_between_jobs_and_batches(settings, db, make_job, make_batch):
    b1, b2 = make_batch(2), make_batch(2)
    job_id = make_job(hyperparameters={"n_epochs": 1})
    claimed = []
    with Worker(settings) as w:
        for _ in range(3):
            with db.session() as s:
                before = {b: s.get(Batch, b).status for b in (b1, b2)}
            status = w.run_once()
            with db.session() as s:
                after = {b: s.get(Batch, b).status for b in (b1, b2)}
            claimed.append("batch" if before != after else "job")
            assert status in ("completed", "succeeded")
    # The job, queued after two batches, runs second, not after every batch is done.
    assert claimed == ["batch", "job", "batch"], (claimed, job_id)


def test_a_long_batch_yields_its_worker_to_a_waiting_job_at_a_chunk_boundary(settings, db, make_job, make_batch):
    settings = settings.model_copy(update={"batch_chunk_lines": 2, "batch_yield_seconds": 0.0})
    alone = make_batch(5)
    with Worker(settings) as w:
        assert w.run_once() == "completed"  # nothing waits: no needless yield
        batch_id = make_batch(10)
        job_id = make_job(hyperparameters={"n_epochs": 1})
        w._batch_first = False  # the next claim tries batches first: the batch starts before the job
        assert w.run_once() == "yielded"
        with db.session() as s:
            row = s.get(Batch, batch_id)
            # one chunk answered and recorded, the lease handed back, the batch still active
            assert (row.status, row.cursor, row.completed, row.lease_owner) == ("in_progress", 2, 2, None)
        assert w.run_once() == "succeeded"  # the job, not the batch again
        assert w.run_once() == "completed"  # the batch resumes from its cursor once no job waits
    with db.session() as s:
        row = s.get(Batch, batch_id)
        assert (row.total, row.completed, row.failed, row.cursor) == (10, 10, 0, 10)
    assert _output_ids(settings, db, batch_id) == [f"c{i}" for i in range(10)]  # every line exactly once
    assert len(_output_ids(settings, db, alone)) == 5
    assert job_id


def test_output_files_count_against_the_storage_quota(settings, db, make_job, make_batch):
    from aiaas.services import quotas
    from aiaas.store import tenancy

    batch_id = make_batch(6)
    org_id = make_job.org_id
    with db.session() as s:
        used = quotas.stored_bytes(s, org_id)
        tenancy.update_organization_settings(s, org_id, {"quota_stored_bytes": used + 10})  # not room for 6 answers
    with Worker(settings) as w:
        assert w.run_once() == "failed"
    with db.session() as s:
        row = s.get(Batch, batch_id)
        assert row.output_file_id is None and row.status == "failed"
        error = row.errors["data"][0]
        assert error["code"] == "quota_exceeded" and error["param"] == "output_file_id"
        assert "quota_stored_bytes" in error["message"] and "output files" in error["message"]
        assert quotas.stored_bytes(s, org_id) == used  # nothing was added
