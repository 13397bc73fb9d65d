"""Fixtures for the Ray tests: one private single-host Ray session per module, jobs, waiting helpers.

The session is started through aiaas.cluster.session.connect, exactly as the dispatcher
starts one, so every test also exercises the loopback-only, token-authenticated setup.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_SECRET

HAVE_RAY = importlib.util.find_spec("ray") is not None
NO_RAY = "ray is not installed: pip install 'aiaas[ray]'"


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private Ray session (2 CPUs) shared by the module; workers inherit this environment."""
    if not HAVE_RAY:
        pytest.skip(NO_RAY)
    from aiaas.cluster.session import connect
    from aiaas.core.settings import Settings

    # Ray workers inherit the driver's environment when the session starts: each "node"
    # brings its own master secret, as a real one would.
    saved = {k: os.environ.get(k) for k in ("AIAAS_SECRET_KEY",)}
    os.environ["AIAAS_SECRET_KEY"] = TEST_SECRET
    root = tmp_path_factory.mktemp("ray")
    # Ray's unix socket paths must stay under 107 bytes: pytest's (xdist) tmp paths are too long.
    temp_dir = Path(tempfile.mkdtemp(prefix="aiaas-ray-"))
    settings = Settings(env="test", data_dir=root / "d")
    session = connect(settings, num_cpus=2, temp_dir=temp_dir)
    try:
        yield session
    finally:
        session.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def tiny_base(settings):
    from tests.helpers.tiny_bert import build_tiny_bert

    return build_tiny_bert(settings.base_models_dir / "tiny-bert")


@pytest.fixture
def make_job(settings, db, tiny_base) -> Callable[..., str]:
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service
    from aiaas.store import tenancy
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted
    from tests.helpers.datasets import toy_csv

    # Through the encrypting store, as the API writes them: the runner refuses plaintext blobs.
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        org, _, key = tenancy.create_organization(s, "ray-org")
        org_id = org.id

    def make(rows_per_class: int = 20, **fields: Any) -> str:
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(toy_csv(rows_per_class)),
                                    filename="train.csv",
                                    purpose="fine-tune", max_bytes=10**8)
            body = JobCreate(model="tiny-bert", training_file=f.id, **fields)
            return job_service.create_job(s, settings, org_id=org_id, body=body).id

    make.org_id = org_id  # type: ignore[attr-defined]
    make.api_key = key  # type: ignore[attr-defined]
    return make


def wait_for(pred: Callable[[], Any], timeout: float, *, every: Callable[[], Any] | None = None,
             interval: float = 0.2, what: str = "condition") -> Any:
    """Poll `pred` (calling `every` first, e.g. a dispatcher pass) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        if every is not None:
            every()
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def job_row(db, job_id: str):
    from aiaas.store.models import FineTuningJob

    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        s.expunge(job)
        return job


def events(db, job_id: str) -> list[Any]:
    from sqlalchemy import select

    from aiaas.store.models import JobEvent

    with db.session() as s:
        rows = list(s.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))
        s.expunge_all()
        return rows


def task_pid(db, job_id: str) -> int | None:
    """The pid of the Ray worker process now training the job (from its 'Training runs on' event)."""
    pids = [e.data["pid"] for e in events(db, job_id) if e.data and "pid" in e.data]
    return pids[-1] if pids else None


def alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stopped(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except OSError:
        return False


def _job_locked(db, job_id: str) -> bool:
    """Whether someone holds a write lock that a write to this job would wait for."""
    import sqlite3

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    if db.url.startswith("sqlite"):
        conn = sqlite3.connect(db.url.split("///", 1)[1], timeout=0.2)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.rollback()
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
    try:
        with db.engine.connect() as c, c.begin():
            c.execute(text("SET LOCAL lock_timeout = '200ms'"))
            c.execute(text("SELECT id FROM fine_tuning_jobs WHERE id = :id FOR UPDATE"), {"id": job_id})
        return False
    except OperationalError:
        return True


def freeze(pid: int, db, job_id: str) -> None:
    """SIGSTOP a training process at a moment it holds no database lock (a writer frozen inside a
    transaction would block every other writer: the whole file on SQLite, the job row on PostgreSQL)."""
    import signal

    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _stopped(pid), 5, interval=0.01, what=f"pid {pid} to stop")
        if not _job_locked(db, job_id):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.03)
    raise AssertionError(f"could not freeze pid {pid} outside a transaction")
