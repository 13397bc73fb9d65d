"""Fenced artifacts and poison jobs: a stale attempt publishes nothing; a job that keeps killing its worker fails."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

from sqlalchemy import select, update

from aiaas.core.settings import Settings
from aiaas.jobs import runner
from aiaas.jobs.lease import Lease
from aiaas.jobs.workdir import attempt_dir
from aiaas.store import jobs as job_store
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.models import File, FineTuningJob, JobEvent, Model
from tests.conftest import TEST_SECRET


def _die(db, job_id: str) -> None:
    """The lease holder stops heartbeating (killed): its lease runs out."""
    with db.session() as s:
        s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(lease_expires_at=time.time() - 1))


def test_job_whose_worker_dies_max_attempts_times_fails_worker_crashed(settings, db, make_job):
    assert settings.job_max_attempts == 3  # the default
    job_id = make_job()
    claims = []
    for n in range(1, 4):
        with db.session() as s:
            claims.append(job_store.try_claim(s, job_id, f"w{n}", 30, max_attempts=3))
        _die(db, job_id)
        if n == 2:  # a supervisor saw this one go: its reason is the one reported
            with db.session() as s:
                assert job_store.record_worker_exit(s, "w2", "was killed by SIGKILL (out of memory?)") == [job_id]
    assert claims == [1, 2, 3]
    with db.session() as s:
        # The fourth claim finds the third death: the job fails instead of running again.
        assert job_store.try_claim(s, job_id, "w4", 30, max_attempts=3) is None
        job = s.get(FineTuningJob, job_id)
        assert job.status == "failed" and job.crashes == 3 and job.lease_owner is None and job.finished_at
        assert job.error["code"] == "worker_crashed" and job.error["param"] is None
        assert "died 3 times" in job.error["message"] and "worker w3 stopped renewing its lease" in job.error["message"]
        messages = [e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))]
        assert any("w2 was killed by SIGKILL" in m for m in messages)  # attempt 2's reason, told to attempt 3
        assert sum("ended without finishing" in m for m in messages) == 2
        assert job_store.try_claim(s, job_id, "w5", 30, max_attempts=3) is None  # failed stays failed


def test_released_attempts_are_not_deaths(settings, db, make_job):
    job_id = make_job()
    for n in range(1, 6):  # stopped cleanly (SIGTERM) five times: still claimable, nothing counted
        with db.session() as s:
            assert job_store.try_claim(s, job_id, f"w{n}", 30, max_attempts=3) == n
            job_store.release(s, job_id, f"w{n}")
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.crashes == 0 and job.status == "validating_files"


def test_same_owner_reclaiming_fences_its_older_attempt(settings, db, make_job):
    """The attempt number is the fence token: an old claim is refused even under the same owner id."""
    job_id = make_job()
    with db.session() as s:
        first = job_store.try_claim(s, job_id, "dispatcher-1", 30)
    old = Lease(db, job_id, "dispatcher-1", lease_s=30, heartbeat_s=60, attempt=first)
    assert old.write(lambda s, job: "ok") == "ok"
    _die(db, job_id)
    with db.session() as s:
        assert job_store.try_claim(s, job_id, "dispatcher-1", 30) == first + 1
    assert old.write(lambda s, job: "written") is None and old.lost.is_set() and old.refused == 1


def _blob_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_stale_attempt_cannot_replace_the_published_artifact(settings, db, make_job, tiny_base, tmp_path,
                                                             monkeypatch):
    """Worker A is paused after training; B (another host) takes the job over and publishes. A then resumes,
    exports and uploads: its upload lands under its own attempt's key and its registration is refused."""
    job_id = make_job(suffix="fence", hyperparameters={"n_epochs": 1})
    blobs = create_blob_store(settings.blobs_url)
    blob_root = Path(settings.blobs_url.removeprefix("file://"))
    host_b = Settings(env="test", data_dir=tmp_path / "host-b", database_url=settings.database_url,
                      secret_key=TEST_SECRET, job_workers=0, blob_store_url=settings.blobs_url)
    shutil.copytree(tiny_base, host_b.base_models_dir / "tiny-bert")
    with db.session() as s:
        attempt_a = job_store.try_claim(s, job_id, "worker-a", 30)
    lease_a = Lease(db, job_id, "worker-a", lease_s=30, heartbeat_s=60, attempt=attempt_a)
    seen: dict = {}
    original_export = runner._export

    def export_then_pause(model_dir, out_dir, data):
        report = original_export(model_dir, out_dir, data)
        if "b" in seen:
            return report  # B's own export
        # A pauses here past its lease; B claims the job and runs it to a published model.
        _die(db, job_id)
        with db.session() as s:
            attempt_b = job_store.try_claim(s, job_id, "worker-b", 30)
        seen["b"] = attempt_b
        lease_b = Lease(db, job_id, "worker-b", lease_s=30, heartbeat_s=0.5, attempt=attempt_b)
        with lease_b:
            assert runner.run_job(lease_b, host_b, blobs) == "succeeded"
        seen["published"] = _blob_hashes(blob_root)
        return report

    monkeypatch.setattr(runner, "_export", export_then_pause)
    with lease_a:
        assert runner.run_job(lease_a, settings, blobs) == "lost"
    assert seen["b"] == attempt_a + 1 and lease_a.refused >= 1
    after = _blob_hashes(blob_root)
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        model = s.get(Model, job.fine_tuned_model)
        assert job.status == "succeeded" and model.artifact_uri.endswith(f"/attempt-{seen['b']}")
        assert len(job.result_files) == 1
        assert len(list(s.scalars(select(File).where(File.purpose == "fine-tune-results")))) == 1
    # Nothing B published changed (the blobs are encrypted with a fresh nonce: any rewrite shows) ...
    assert {k: after[k] for k in seen["published"]} == seen["published"]
    # ... and A did upload, but only under its own attempt's key: an orphan nobody reads.
    orphans = set(after) - set(seen["published"])
    assert orphans and all(f"/attempt-{attempt_a}/" in k for k in orphans), sorted(orphans)[:3]
    # A's local directory is gone; the job's files were removed when B finished.
    assert not (settings.jobs_dir / job_id).exists()


def test_attempt_dir_starts_from_the_newest_attempt_and_isolates_the_stale_one(tmp_path):
    jobs = tmp_path / "jobs"
    first = attempt_dir(jobs, "ftjob-x", 1)
    ckpt = first / "transformer" / "checkpoints" / "step-4"
    ckpt.mkdir(parents=True)
    (ckpt / "state.pt").write_bytes(b"weights-at-4")
    (first / "transformer" / "auto_plan.json").write_text("{}")
    (first / "model").mkdir()
    (first / "model" / "model.safetensors").write_bytes(b"final")
    second = attempt_dir(jobs, "ftjob-x", 2)
    assert (second / "transformer" / "checkpoints" / "step-4" / "state.pt").read_bytes() == b"weights-at-4"
    assert (second / "transformer" / "auto_plan.json").read_text() == "{}"
    assert not (second / "model").exists()  # outputs are the attempt's own
    assert not first.exists()  # the older attempt's directory is dropped
    assert (second.stat().st_mode & 0o777) == 0o700 and (jobs / "ftjob-x").stat().st_mode & 0o077 == 0
    # The stale worker resumes and writes where it always did: the live attempt does not see it.
    stale = first / "transformer" / "checkpoints" / "step-9"
    stale.mkdir(parents=True)
    (stale / "state.pt").write_bytes(b"stale")
    assert not (second / "transformer" / "checkpoints" / "step-9").exists()
    assert attempt_dir(jobs, "ftjob-x", 2) == second  # the same attempt again: as it is
    # A third attempt starts from the second (its newest predecessor), not from the stale writes.
    third = attempt_dir(jobs, "ftjob-x", 3)
    assert sorted(p.name for p in (third / "transformer" / "checkpoints").iterdir()) == ["step-4"]


def test_carried_checkpoints_are_links_not_copies(tmp_path):
    first = attempt_dir(tmp_path, "j", 1)
    (first / "checkpoints" / "step-1").mkdir(parents=True)
    weights = first / "checkpoints" / "step-1" / "model.safetensors"
    weights.write_bytes(b"x" * 1000)
    os.link(weights, tmp_path / "probe")
    second = attempt_dir(tmp_path, "j", 2)
    assert (second / "checkpoints" / "step-1" / "model.safetensors").stat().st_ino == (tmp_path / "probe").stat().st_ino
