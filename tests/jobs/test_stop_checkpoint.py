"""Graceful stop on a real worker process: SIGTERM mid-epoch saves a checkpoint at the step it stopped at,
hands the lease back at once, and the next worker resumes from that very step."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from sqlalchemy import select

from aiaas.jobs.lease import Lease
from aiaas.jobs.runner import JobCallbacks
from aiaas.store import jobs as job_store
from aiaas.store.models import FineTuningJob, JobEvent
from aiaas.training import TrainConfig, TrainingStopped, checkpoints, train
from aiaas.training.loop import LOGS_PER_RUN
from tests.conftest import TEST_SECRET
from tests.helpers.datasets import toy_csv
from tests.training.conftest import Recorder, single_label_data

pytestmark = [pytest.mark.slow]
# One database is enough here: leases and releases are tested on both in test_worker.py / test_fencing.py.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
LEASE_S = 120  # far longer than the test: a job claimable again was released, not expired


def _worker(settings, database_url, log_path):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIAAS_")}
    env |= {
        "AIAAS_ENV": "test", "AIAAS_DATA_DIR": str(settings.data_dir), "AIAAS_DATABASE_URL": database_url,
        "AIAAS_SECRET_KEY": TEST_SECRET, "AIAAS_LEASE_SECONDS": str(LEASE_S), "AIAAS_HEARTBEAT_SECONDS": "0.5",
        "AIAAS_POLL_SECONDS": "0.2", "AIAAS_TRAINING_THREADS": "1", "AIAAS_SHUTDOWN_GRACE_SECONDS": "15",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
    }
    return subprocess.Popen([sys.executable, "-m", "aiaas.cli.main", "--log-level", "INFO", "worker"], env=env,
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)


def _events(db, job_id: str) -> list[JobEvent]:  # type: ignore[no-untyped-def]
    with db.session() as s:
        rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        s.expunge_all()
        return rows


def _wait(pred, timeout: float, what: str, log_path):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{log_path.read_text()[-3000:]}")


def _steps(events: list[JobEvent]) -> list[int]:
    return [int(e.data["step"]) for e in events if e.type == "metrics" and e.data and e.data.get("split") == "train"]


@SQLITE
def test_sigterm_mid_epoch_checkpoints_releases_and_resumes_from_that_step(settings, db, make_job, database_url,
                                                                           tmp_path):
    # 2 x 600 examples, batch 4: ~270 steps an epoch; the automatic periodic cadence waits 60 s between
    # saves, so without the stop's own save the newest checkpoint would be none (or an epoch's end).
    job_id = make_job(toy_csv(600, seed=5), seed=3, hyperparameters={"n_epochs": 3, "batch_size": 4})
    procs: list[subprocess.Popen] = []
    try:
        a_log = tmp_path / "worker-a.log"
        a = _worker(settings, settings.sqlalchemy_url, a_log)
        procs.append(a)
        _wait(lambda: _steps(_events(db, job_id)), 180, "a first training step", a_log)
        sigterm_at = time.monotonic()
        a.send_signal(signal.SIGTERM)
        assert a.wait(timeout=20) == 0, a_log.read_text()[-3000:]
        stop_s = time.monotonic() - sigterm_at

        ckpt_root = settings.jobs_dir / job_id / "attempt-1" / "checkpoints"
        on_disk = [step for step, _ in checkpoints.list_checkpoints(ckpt_root)]
        assert on_disk, "no checkpoint: the stop did not save one"
        stop_step = max(on_disk)
        state = checkpoints.load_checkpoint(checkpoints.checkpoint_dir(ckpt_root, stop_step))["state"]
        assert state["step"] == stop_step and state["batch_in_epoch"] > 0, state  # mid-epoch, not an epoch end
        # It kept every step trained: none after the last metrics event is lost (the stop can land on a step
        # that also logged metrics, every 15th).
        assert stop_step >= max(_steps(_events(db, job_id)))
        saved = [e for e in _events(db, job_id) if e.message.startswith("Stopping: checkpoint saved at step")]
        assert [int(e.data["step"]) for e in saved] == [stop_step]
        with db.session() as s:
            job = s.get(FineTuningJob, job_id)
            assert job.status == "running" and job.lease_owner is None and job.crashes == 0
            assert job_id in job_store.claimable(s)  # at once: not after the lease expires (LEASE_S)

        b_log = tmp_path / "worker-b.log"
        b = _worker(settings, settings.sqlalchemy_url, b_log)
        procs.append(b)
        n_before = len(_events(db, job_id))

        def resumed_and_stepped() -> list[JobEvent] | None:
            new = _events(db, job_id)[n_before:]
            return new if _steps(new) else None

        new = _wait(resumed_and_stepped, 180, "the second worker's first step", b_log)
        resumed = [e for e in new if e.message.startswith("Resumed from checkpoint")]
        assert resumed and int(resumed[0].data["step"]) == stop_step
        first = _steps(new)[0]
        total = next(int(e.data["total_steps"]) for e in new if e.type == "metrics")
        log_every = max(1, total // LOGS_PER_RUN)
        # The first train-metrics event of the new worker is the next one after the stop step.
        assert stop_step < first <= stop_step + log_every, (stop_step, first, log_every)
        b.send_signal(signal.SIGTERM)
        assert b.wait(timeout=20) == 0
        print(f"stopped at step {stop_step} {stop_s:.2f} s after SIGTERM (checkpoint included); "
              f"resumed at {stop_step}, first step event {first}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


# ---- in process: the loop's side (budget, skip, cancel) and the lease's answer ----

# 48 examples, batch 8: 6 steps an epoch, 18 in all; no periodic checkpoint (only epoch ends).
CONFIG = {"n_epochs": 3, "batch_size": 8, "learning_rate": 3e-3, "early_stopping_patience": None,
          "precision": "fp32", "checkpoint_every_steps": 1000}


class StopRecorder(Recorder):
    """Asks to stop once step `stop_at` is done, giving `budget` seconds to save (None: a cancel)."""

    def __init__(self, stop_at: int, budget: float | None) -> None:
        super().__init__()
        self.stop_at, self.budget = stop_at, budget

    def should_stop(self) -> bool:
        return any(d.get("split") == "train" and d["step"] >= self.stop_at for d in self.metrics_events())

    def seconds_to_save_before_stop(self) -> float | None:
        return self.budget


def _stopped(tmp_path: Path, base: Path, rec: Recorder) -> list[int]:
    with pytest.raises(TrainingStopped):
        train(TrainConfig(base_model="tiny-bert", **CONFIG), single_label_data(48, 16), tmp_path, rec,
              base_models_dir=base.parent)
    return [step for step, _ in checkpoints.list_checkpoints(tmp_path / "checkpoints")]


@SQLITE
def test_stop_saves_at_the_current_step_and_the_resumed_run_equals_a_straight_one(tmp_path, tiny_base):
    import torch

    data = single_label_data(48, 16)
    config = TrainConfig(base_model="tiny-bert", **CONFIG)
    straight = train(config, data, tmp_path / "a", Recorder(), base_models_dir=tiny_base.parent)
    # Every step logs (18 steps < 50 events a run): the stop comes right after step 8, mid-epoch 2.
    saved = _stopped(tmp_path / "b", tiny_base, StopRecorder(8, math.inf))
    assert saved == [6, 8]  # epoch 1's end, and the stop's own at step 8
    rec = Recorder()
    resumed = train(config, data, tmp_path / "b", rec, base_models_dir=tiny_base.parent)
    assert any("Resumed from checkpoint at step 8" in e["message"] for e in rec.events)
    assert resumed.steps == straight.steps and resumed.trained_tokens == straight.trained_tokens
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]
    a = load_file(str(straight.model_dir / "model.safetensors"))
    b = load_file(str(resumed.model_dir / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


@SQLITE
def test_cancel_or_too_little_time_stops_without_a_checkpoint(tmp_path, tiny_base):
    assert _stopped(tmp_path / "cancel", tiny_base, StopRecorder(8, None)) == [6]
    rec = StopRecorder(8, 0.5)
    assert _stopped(tmp_path / "short", tiny_base, rec) == [6]
    warned = [e for e in rec.events if e["level"] == "warning" and "without a checkpoint" in e["message"]]
    assert len(warned) == 1 and warned[0]["data"] == {"step": 8}
    assert "resumes from step 6" in warned[0]["message"]


@SQLITE
def test_job_callbacks_give_save_time_only_to_a_shutdown(db):
    lease = Lease(db, "ftjob-x", "w", lease_s=60, heartbeat_s=1)
    callbacks = JobCallbacks(lease)
    assert callbacks.seconds_to_save_before_stop() is None  # not stopping at all
    lease.shutdown.set()
    assert callbacks.seconds_to_save_before_stop() == math.inf  # no hard-exit deadline
    lease.shutdown_deadline = time.monotonic() + 10
    assert 9 < callbacks.seconds_to_save_before_stop() <= 10
    lease.cancelled.set()
    assert callbacks.seconds_to_save_before_stop() is None  # a cancel just stops
    lease.cancelled.clear()
    lease.lost.set()
    assert callbacks.seconds_to_save_before_stop() is None  # another worker owns it now
