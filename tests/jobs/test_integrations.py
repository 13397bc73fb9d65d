"""A job's `integrations`: MLflow works (a real file store, read back with MLflow's own client), anything
else is refused with a code naming the item, a worker without the extra fails the job before training,
and a tracking store that is slow or broken neither slows the step loop nor fails the job."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from aiaas.core.errors import AiaasError
from aiaas.jobs.tracking import TrackingCallbacks, Tracker
from aiaas.jobs.worker import Worker
from aiaas.protocol.jobs import JobCreate, job_public
from aiaas.services import jobs as job_service
from aiaas.store.models import FineTuningJob, JobCheckpoint, JobEvent


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    root = tmp_path / "mlruns-root"
    root.mkdir()
    return root


@pytest.fixture
def settings(settings, store_root: Path):
    return settings.model_copy(update={"mlflow_file_root": store_root})


@pytest.fixture
def create(settings, db):
    """Creates a tfidf-linear job through the service (no base model to build: refusals come first)."""
    from aiaas.services import files as file_service
    from aiaas.store import tenancy
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.helpers.datasets import toy_csv

    blobs = encrypted(create_blob_store(settings.data_dir / "blobs"), db, settings.master_secret())
    with db.session() as s:
        org_id = tenancy.create_organization(s, "refusals")[0].id
    with db.session() as s:  # the organisation committed first: its data key encrypts the file
        file_id = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(toy_csv()), filename="t.csv",
                                      purpose="fine-tune", max_bytes=10**8).id

    def make(integrations, job_settings=settings):
        with db.session() as s:
            body = JobCreate(model="tfidf-linear", training_file=file_id, integrations=integrations)
            return job_service.create_job(s, job_settings, org_id=org_id, body=body).id

    return make


def mlflow_item(uri: str, **extra) -> dict:
    return {"type": "mlflow", "mlflow": {"tracking_uri": uri, **extra}}


# ---- refused at creation, with the item and field named ----------------------------------------

REFUSED = [
    ([{"type": "wandb", "wandb": {"project": "p"}}], "unsupported_integration", "integrations[0].type"),
    ([mlflow_item("file:///tmp/x"), {"mlflow": {}}], "unsupported_integration", "integrations[1].type"),
    (["mlflow"], "unsupported_integration", "integrations[0].type"),
    ([{"type": "mlflow", "mlflow": {"tracking_uri": "https://example.com", "colour": 1}}], "validation_error",
     "integrations[0].mlflow.colour"),
    ([{"type": "mlflow"}], "validation_error", "integrations[0].mlflow"),
    ([mlflow_item("file:///etc/mlruns")], "integration_not_allowed", "integrations[0].mlflow.tracking_uri"),
    ([mlflow_item("{root}/../escape")], "integration_not_allowed", "integrations[0].mlflow.tracking_uri"),
    ([mlflow_item("ftp://example.com/runs")], "integration_not_allowed", "integrations[0].mlflow.tracking_uri"),
    ([mlflow_item("https://user:pw@example.com")], "integration_not_allowed", "integrations[0].mlflow.tracking_uri"),
    ([mlflow_item("http://127.0.0.1:5000")], "integration_not_allowed", "integrations[0].mlflow.tracking_uri"),
]


@pytest.mark.parametrize(("integrations", "code", "param"), REFUSED)
def test_integrations_refused_with_a_code_naming_the_item(create, store_root, integrations, code, param):
    raw = json.loads(json.dumps(integrations).replace("{root}", f"file://{store_root}"))
    with pytest.raises(AiaasError) as e:
        create(raw)
    assert (e.value.code, e.value.param) == (code, param), e.value.message
    assert e.value.status == 400 and len(e.value.message) > 30


def test_file_stores_are_refused_unless_the_operator_names_a_root(settings, db, create, store_root):
    job_id = create([mlflow_item(f"file://{store_root}/team-a")])  # allowed under the root
    with db.session() as s:
        shown = job_public(s.get(FineTuningJob, job_id))["integrations"]
    assert shown == [mlflow_item(f"file://{store_root}/team-a", experiment_name="aiaas", run_name=None, tags={})]
    closed = settings.model_copy(update={"mlflow_file_root": None})
    with pytest.raises(AiaasError) as e:
        create([mlflow_item(f"file://{store_root}/team-a")], job_settings=closed)
    assert e.value.code == "integration_not_allowed" and "AIAAS_MLFLOW_FILE_ROOT" in e.value.message


# ---- the tracker: off the hot path, and never failing the job -----------------------------------

class RecordingCallbacks:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, level, message, *, type="message", data=None):
        self.events.append((level, message))

    def checkpoint(self, step, path, metrics):
        pass

    def should_stop(self):
        return False

    def seconds_to_save_before_stop(self):
        return None


class SlowSink:
    name = "slow"

    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.points: list = []
        self.params: dict = {}
        self.status = None
        self.thread_ids: set[int] = set()

    def open(self, params):
        self.params.update(params)

    def log_metrics(self, points):
        self.thread_ids.add(threading.get_ident())
        time.sleep(self.delay)
        if self.fail:
            raise OSError("the tracking server went away")
        self.points.extend(points)

    def log_params(self, params):
        self.params.update(params)

    def log_text(self, path, text):
        pass

    def close(self, status):
        self.status = status


def _steps(callbacks, n: int) -> float:
    """n step reports and an epoch's evaluation, as the loop sends them; the seconds the calls took."""
    t0 = time.perf_counter()
    for step in range(1, n + 1):
        callbacks.event("info", f"Step {step}", type="metrics",
                        data={"split": "train", "step": step, "loss": 1.0 / step, "learning_rate": 1e-4})
        if step % 50 == 0:
            callbacks.event("info", "eval", type="metrics",
                            data={"split": "validation", "step": step, "epoch": step // 50, "accuracy": 0.5})
    return time.perf_counter() - t0


def test_a_slow_tracking_store_does_not_slow_the_step_loop():
    sink = SlowSink(delay=0.2)
    inner = RecordingCallbacks()
    callbacks = TrackingCallbacks(inner, Tracker([sink], {"model": "tiny"}))
    spent = _steps(callbacks, 200)
    # 200 reports against a store taking 0.2 s a call: sent synchronously they would take >= 40 s.
    print(f"200 step reports with a 0.2 s/call tracking store: {spent * 1000:.1f} ms in the loop")
    assert spent < 0.5
    warnings = callbacks.tracker.close("FINISHED")
    assert not warnings and sink.status == "FINISHED"
    assert threading.get_ident() not in sink.thread_ids
    train = [p for p in sink.points if p[0] == "train/loss"]
    assert [p[2] for p in train] == list(range(1, 201))  # every step, in order, under its step number
    assert [p[2] for p in sink.points if p[0] == "validation/accuracy"] == [50, 100, 150, 200]
    assert sink.params == {"model": "tiny"}


def test_a_failing_store_becomes_warnings_and_is_dropped():
    sink = SlowSink(delay=0.0, fail=True)
    inner = RecordingCallbacks()
    callbacks = TrackingCallbacks(inner, Tracker([sink], {}))
    _steps(callbacks, 200)  # four evaluation points: four flushes, the third failure drops the sink
    callbacks.report_warnings(callbacks.tracker.close("FINISHED"))
    warnings = [m for level, m in inner.events if level == "warning"]
    assert len(warnings) == 3, warnings
    assert "went away" in warnings[0] and "trying again" in warnings[0]
    assert "no more data goes there" in warnings[-1]
    assert sink.status is None  # dropped: not called again


# ---- real jobs against a real MLflow file store -------------------------------------------------

def _mlflow_client(uri: str):
    import os

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.mark.slow
def test_a_job_tracks_metrics_params_and_card_in_mlflow(settings, db, make_job, store_root):
    pytest.importorskip("mlflow", reason="MLFLOW EXTRA NOT INSTALLED: pip install 'aiaas[mlflow]'")
    uri = f"file://{store_root}/store"
    job_id = make_job(hyperparameters={"n_epochs": 2},
                      integrations=[mlflow_item(uri, experiment_name="support", tags={"team": "a"})])
    with Worker(settings) as w:
        assert w.run_once() == "succeeded"
    client = _mlflow_client(uri)
    experiment = client.get_experiment_by_name("support")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == f"{job_id}-attempt-1"
    assert run.data.tags["aiaas.job_id"] == job_id and run.data.tags["team"] == "a"
    params = run.data.params
    assert params["model"] == "tiny-bert" and params["requested.n_epochs"] == "2"
    assert params["hp.n_epochs"] == "2" and float(params["hp.learning_rate"]) > 0 and "final.batch_size" in params
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    epochs = client.get_metric_history(run.info.run_id, "validation/accuracy")
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        step_events = [e for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
                       if e.type == "metrics" and (e.data or {}).get("split") == "train"]
        assert not [e for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)) if e.level == "warn"]
        card_labels = ["negative", "positive"]
        assert job.status == "succeeded"
    print(f"MLflow run: {len(steps)} step points, {len(epochs)} epoch points, {len(params)} params")
    assert len(steps) == len(step_events) >= 2 and sorted(m.step for m in steps) == [m.step for m in steps]
    assert len(epochs) == 2
    assert client.get_metric_history(run.info.run_id, "final/accuracy")
    card_path = client.download_artifacts(run.info.run_id, "model_card.json", str(store_root / "dl"))
    card = json.loads(Path(card_path).read_text())
    assert card["labels"] == card_labels and "accuracy" in card["metrics"]


@pytest.mark.slow
def test_a_broken_store_never_fails_the_job(settings, db, make_job, store_root):
    pytest.importorskip("mlflow", reason="MLFLOW EXTRA NOT INSTALLED: pip install 'aiaas[mlflow]'")
    (store_root / "not-a-dir").write_text("a file where the store should be")
    job_id = make_job(integrations=[mlflow_item(f"file://{store_root}/not-a-dir")])
    with Worker(settings) as w:
        assert w.run_once() == "succeeded"
    with db.session() as s:
        warnings = [e.message for e in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id))
                    if e.level == "warn"]
    assert any(m.startswith("Tracking: MLflow open failed") for m in warnings), warnings


def test_a_worker_without_the_extra_fails_the_job_before_training(settings, db, create, store_root, monkeypatch):
    import aiaas.jobs.mlflow_tracker as mlflow_tracker

    monkeypatch.setattr(mlflow_tracker, "EXTRA_MODULES", ("aiaas_test_absent_module",))  # as if not installed
    job_id = create([mlflow_item(f"file://{store_root}/s")])
    with Worker(settings) as w:
        assert w.run_once() == "failed"
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.error["code"] == "integration_unavailable" and job.error["param"] == "integrations[0]"
        assert "aiaas[mlflow]" in job.error["message"]
        assert s.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).first() is None
