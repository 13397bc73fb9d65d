"""Encryption lifecycle (issue 13, deliverable 8): the master secret file's mode, private directories,
no plaintext fallback and the migration command, plaintext left by killed processes, secret rotation.

Cross-process revocation (an organisation deleted by another process) is in
tests/e2e/test_two_process_revocation.py.
"""

from __future__ import annotations

import io
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from aiaas.core.errors import ConfigurationError, UnencryptedBlob
from aiaas.core.settings import Settings, get_settings
from aiaas.security import crypto
from aiaas.store import files as file_store
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import (
    PLAIN_PREFIX,
    Keyring,
    encrypted,
    is_encrypted,
    private_tempdir,
    sweep_stale_plaintext,
)
from aiaas.store.models import FineTuningJob, Organization
from tests.conftest import TEST_SECRET
from tests.helpers.datasets import toy_csv

SECRET = "s" * 48


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def cli_env(settings, monkeypatch):
    monkeypatch.setenv("AIAAS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AIAAS_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("AIAAS_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("AIAAS_ENV", "test")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# ---- the master secret file and private directories ---------------------------------------------


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o644])
def test_group_or_other_readable_secret_is_refused_in_production(tmp_path, bits, caplog):
    data = tmp_path / "data"
    data.mkdir()
    secret_file = data / "secret.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(bits)
    with pytest.raises(ConfigurationError) as err:
        Settings(env="production", data_dir=data, secret_key=None).master_secret()
    assert str(secret_file) in err.value.message and f"chmod 600 {secret_file}" in err.value.message
    # Development warns, naming the file and the fix, and goes on.
    with caplog.at_level(logging.WARNING, logger="aiaas.core.settings"):
        assert Settings(env="development", data_dir=data, secret_key=None).master_secret() == SECRET
    assert f"chmod 600 {secret_file}" in caplog.text
    secret_file.chmod(0o600)
    assert Settings(env="production", data_dir=data, secret_key=None).master_secret() == SECRET


def test_init_creates_a_private_data_dir_and_secret(tmp_path, monkeypatch):
    from aiaas.cli.main import app as cli

    data = tmp_path / "fresh" / "data"
    for name in list(os.environ):
        if name.startswith("AIAAS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AIAAS_ENV", "production")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["init", "--data-dir", str(data)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert mode(data) == 0o700 and mode(data / "secret.key") == 0o600
    # A data dir that already exists with a looser mode is tightened.
    data.chmod(0o755)
    from aiaas.cli.admin import sweep_at_start

    sweep_at_start(Settings(env="production", data_dir=data, secret_key=None))
    assert mode(data) == 0o700


# ---- job work directories ---------------------------------------------------------------------


@pytest.fixture
def tfidf_job(settings, db):
    """Queue a tfidf-linear job (trains in about a second) on a real upload; returns a job maker."""
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service

    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "life-org")
        org_id = org.id

    def make() -> str:
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(toy_csv()), filename="train.csv",
                                    purpose="fine-tune", max_bytes=10**8)
            return job_service.create_job(s, settings, org_id=org_id,
                                          body=JobCreate(model="tfidf-linear", training_file=f.id)).id

    return make


@pytest.mark.slow
@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
def test_job_work_dir_is_private_and_removed_whatever_the_ending(settings, db, tfidf_job, monkeypatch, ending):
    from aiaas.jobs.worker import Worker
    from aiaas.training import TrainingStopped, families

    real = families.train_family
    seen: dict[str, int] = {}

    def spy(family, config, data, work_dir, callbacks, **kw):  # the real trainer, watched
        seen["dir"], seen["parent"] = mode(work_dir), mode(work_dir.parent)
        (work_dir / "plaintext-checkpoint").write_text("text of a tenant")
        if ending == "failed":
            raise RuntimeError("the trainer crashed")
        if ending == "cancelled":
            with db.session() as s:
                s.execute(update(FineTuningJob).values(cancel_requested=True))
            deadline = time.monotonic() + 20
            while not callbacks.should_stop() and time.monotonic() < deadline:
                time.sleep(0.05)
            raise TrainingStopped()
        return real(family, config, data, work_dir, callbacks, **kw)

    monkeypatch.setattr(families, "train_family", spy)
    monkeypatch.setattr(settings, "heartbeat_seconds", 0.1)
    job_id = tfidf_job()
    with Worker(settings) as w:
        assert w.run_once() == ending
    assert seen == {"dir": 0o700, "parent": 0o700}
    assert not (settings.jobs_dir / job_id).exists()


def test_start_sweep_removes_work_dirs_of_ended_and_unknown_jobs(settings, db, tfidf_job):
    """A job that ended while no worker held it (cancelled after its worker died, failed by another
    worker) leaves its directory behind on this host: the next start removes it, keeping live jobs'."""
    from aiaas.cli.admin import sweep_at_start

    ids = [tfidf_job() for _ in range(4)]
    with db.session() as s:
        for job_id, status in zip(ids, ["running", "failed", "cancelled", "succeeded"], strict=True):
            s.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(status=status))
    for job_id in [*ids, "ftjob-deleted-org"]:
        (settings.jobs_dir / job_id).mkdir(parents=True)
        (settings.jobs_dir / job_id / "checkpoint.bin").write_bytes(b"plaintext weights")
    sweep_at_start(settings)
    assert sorted(p.name for p in settings.jobs_dir.iterdir()) == [ids[0]]


# ---- no plaintext fallback; the migration command -----------------------------------------------


def test_plaintext_blobs_are_refused_then_migrated_by_the_admin_command(settings, db, cli_env, tmp_path):
    from aiaas.cli.main import app as cli
    from aiaas.registry import models as registry

    raw = create_blob_store(settings.blobs_url)
    store = encrypted(raw, db, TEST_SECRET)
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "legacy-org")
    # Written as before encryption at rest: straight into the store, no header.
    upload = raw.put(f"{org.id}/files/file-old", io.BytesIO(toy_csv()))
    artifact = tmp_path / "artifact"
    (artifact / "onnx").mkdir(parents=True)
    (artifact / "onnx" / "aiaas.json").write_text('{"labels": ["a", "b"]}')
    (artifact / "model").mkdir()
    (artifact / "model" / "weights.bin").write_bytes(os.urandom(3000))
    model_uri = raw.put_dir(f"{org.id}/models/ftjob-old", artifact)
    with db.session() as s:
        file_store.add_file(s, file_id="file-old", org_id=org.id, filename="old.csv", purpose="fine-tune",
                            size=upload.size, sha256=upload.sha256, storage_uri=upload.uri, summary={})
        registry.register_model(s, model_id="ft:t:legacy::ftjob-old", org_id=org.id, job_id="ftjob-old",
                                base_model="t", task="single_label_classification", artifact_uri=model_uri,
                                lineage={}, card={})
    for uri in (upload.uri, model_uri + "/onnx"):
        with pytest.raises(UnencryptedBlob):
            with store.open_local(uri):
                pass

    dry = CliRunner().invoke(cli, ["secrets", "migrate-blobs", "--dry-run"])
    assert dry.exit_code == 0 and "would encrypt 3 plaintext files" in dry.output, dry.output
    assert not is_encrypted(raw.local_path(upload.uri))
    result = CliRunner().invoke(cli, ["secrets", "migrate-blobs"])
    assert result.exit_code == 0 and "encrypted 3 plaintext files" in result.output, result.output

    on_disk = [raw.local_path(upload.uri), *[p for p in raw.local_path(model_uri).rglob("*") if p.is_file()]]
    assert len(on_disk) == 3 and all(is_encrypted(p) for p in on_disk)
    assert b"negative" not in raw.local_path(upload.uri).read_bytes()
    with store.open_local(upload.uri) as path:
        assert path.read_bytes() == toy_csv()
    with store.open_local(model_uri + "/onnx") as onnx:  # bound to the keys the server reads them by
        assert (onnx / "aiaas.json").read_text() == '{"labels": ["a", "b"]}'
    with store.open_local(model_uri) as root:
        assert (root / "model" / "weights.bin").read_bytes() == (artifact / "model" / "weights.bin").read_bytes()
    again = CliRunner().invoke(cli, ["secrets", "migrate-blobs"])
    assert "encrypted 0 plaintext files" in again.output


# ---- plaintext left by a killed process ---------------------------------------------------------

KILLED_READER = textwrap.dedent("""
    import sys, time
    from aiaas.store.encrypted import private_tempdir
    with private_tempdir() as tmp:
        (tmp / "train.csv").write_text("a tenant's plaintext")
        print(tmp, flush=True)
        time.sleep(600)
""")


def test_plaintext_of_a_killed_process_is_swept_and_a_live_ones_kept(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", KILLED_READER], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        dead_dir = Path(proc.stdout.readline().strip())
        assert dead_dir.name.startswith(f"{PLAIN_PREFIX}{proc.pid}.") and (dead_dir / "train.csv").exists()
    finally:
        proc.send_signal(signal.SIGKILL)  # no `finally` of its own runs: the plaintext stays behind
        proc.wait()
    assert (dead_dir / "train.csv").exists()
    with private_tempdir() as mine:
        # A directory tagged with a live pid but another start time: that pid was reused, the owner is dead.
        reused = dead_dir.parent / f"{PLAIN_PREFIX}{os.getpid()}.1-reused"
        reused.mkdir(mode=0o700)
        removed = sweep_stale_plaintext()
        assert dead_dir in removed and reused in removed
        assert not dead_dir.exists() and not reused.exists()
        assert mine.exists() and mine not in removed  # this (live) process's directory stays


@pytest.mark.e2e
def test_serve_sweeps_at_start(tmp_path):
    """`aiaas serve` runs the sweep when it starts: a killed reader's plaintext and an ended job's
    work directory are gone once the server is up."""
    from tests.e2e.server import base_env, init, start_server

    env = base_env(tmp_path / "data")
    init(env)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_READER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        dead_dir = Path(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    leftover = tmp_path / "data" / "jobs" / "ftjob-gone"
    leftover.mkdir(parents=True)
    assert dead_dir.exists()
    server = start_server(env, tmp_path)
    server.stop()
    assert not dead_dir.exists() and not leftover.exists()


# ---- master secret rotation ---------------------------------------------------------------------


@pytest.fixture
def file_secret(settings, db):
    """The settings with the master secret in <data dir>/secret.key, as `aiaas init` writes it."""
    from aiaas.core.settings import write_secret

    file_settings = settings.model_copy(update={"secret_key": None, "env": "production"})
    write_secret(file_settings)
    return file_settings


def _orgs_with_keys(db, secret: str, n: int) -> list[str]:
    ring = Keyring(db, secret)
    ids = []
    with db.session() as s:
        for i in range(n):
            org, _, _ = tenancy.create_organization(s, f"rot-{i}")
            ids.append(org.id)
    for org_id in ids:
        ring.data_key(org_id, create=True)
    return ids


def test_rotate_rewraps_every_key_and_keeps_the_old_secret(file_secret, db):
    from aiaas.store.rekey import rotate_master_secret

    old = file_secret.master_secret()
    ids = _orgs_with_keys(db, old, 3)
    with db.session() as s:
        tenancy.create_organization(s, "no-key-yet")
        before = dict(s.execute(select(Organization.id, Organization.wrapped_data_key)).all())
    keys = {o: crypto.unwrap_key(crypto.derive_kek(old), before[o], org_id=o) for o in ids}

    done = rotate_master_secret(file_secret, db)
    new = file_secret.master_secret()
    assert new != old and done.rewrapped == 3 and done.created == 1
    assert mode(file_secret.secret_file) == 0o600 and mode(done.backup_file) == 0o600
    assert done.backup_file.read_text().strip() == old
    assert not file_secret.secret_file.with_name("secret.key.new").exists()
    with db.session() as s:
        after = dict(s.execute(select(Organization.id, Organization.wrapped_data_key)).all())
    for org_id, key in keys.items():  # same data key (blobs unchanged), wrapped under the new secret only
        assert crypto.unwrap_key(crypto.derive_kek(new), after[org_id], org_id=org_id) == key
        with pytest.raises(crypto.DecryptionError):
            crypto.unwrap_key(crypto.derive_kek(old), after[org_id], org_id=org_id)
    assert all(w is not None for w in after.values())  # the key-less org got one under the new secret


def test_rotate_is_all_or_nothing(file_secret, db):
    """One key that does not unwrap aborts the whole rotation: no key re-wrapped, the secret unchanged."""
    from aiaas.store.rekey import rotate_master_secret

    old = file_secret.master_secret()
    ids = _orgs_with_keys(db, old, 3)
    with db.session() as s:  # the last organisation's key was wrapped under some other secret
        s.execute(update(Organization).where(Organization.id == ids[-1]).values(
            wrapped_data_key=crypto.wrap_key(crypto.derive_kek("x" * 40), crypto.new_data_key(), org_id=ids[-1])))
        before = dict(s.execute(select(Organization.id, Organization.wrapped_data_key)).all())
    with pytest.raises(crypto.DecryptionError, match="nothing was changed"):
        rotate_master_secret(file_secret, db)
    with db.session() as s:
        assert dict(s.execute(select(Organization.id, Organization.wrapped_data_key)).all()) == before
    assert file_secret.master_secret() == old
    assert sorted(p.name for p in file_secret.data_dir.glob("secret.key*")) == ["secret.key"]


def test_rotate_finishes_an_interrupted_swap(file_secret, db):
    """Killed after the transaction committed but before the swap: the next run completes the swap."""
    from aiaas.store.rekey import rewrap_all, rotate_master_secret

    old = file_secret.master_secret()
    ids = _orgs_with_keys(db, old, 2)
    pending = file_secret.secret_file.with_name("secret.key.new")
    pending.write_text("n" * 48 + "\n")
    pending.chmod(0o600)
    rewrap_all(db, old, "n" * 48)  # committed; then the process died
    done = rotate_master_secret(file_secret, db)
    assert done.recovered and file_secret.master_secret() == "n" * 48 and not pending.exists()
    assert done.backup_file.read_text().strip() == old
    store = encrypted(create_blob_store(file_secret.blobs_url), db, file_secret.master_secret())
    assert all(len(store.keyring.data_key(o)) == 32 for o in ids)
