"""Encryption at rest through the API and the operator CLI, and no API key plaintext at rest or in logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text
from typer.testing import CliRunner

from aiaas.core.settings import get_settings
from aiaas.registry import models as registry
from aiaas.security import crypto
from aiaas.security.keys import generate_key, hash_key
from aiaas.services import audit
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import EncryptedBlobStore, Keyring
from aiaas.store.models import AuditLog, Organization
from tests.conftest import TEST_SECRET
from tests.helpers.datasets import toy_csv

SECRET_ROW = "my card number is 4111 1111 1111 1111"


def csv_with_secret() -> bytes:
    return toy_csv() + f'"{SECRET_ROW}",negative\n'.encode()


def blob_files(settings, org_id: str) -> list[Path]:
    return sorted(p for p in (settings.data_dir / "blobs" / org_id).rglob("*") if p.is_file())


async def test_uploads_are_ciphertext_on_disk_and_plaintext_through_the_api(client, settings, org_a):
    content = csv_with_secret()
    r = await client.post("/v1/files", headers=org_a.headers, files={"file": ("pii.csv", content)},
                          data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["bytes"] == len(content) and f["summary"]["rows"] == 41
    [stored] = blob_files(settings, org_a.id)
    raw = stored.read_bytes()
    assert raw.startswith(crypto.MAGIC) and b"4111" not in raw and b"text,label" not in raw
    r = await client.get(f"/v1/files/{f['id']}/content", headers=org_a.headers)
    assert r.status_code == 200 and r.content == content
    assert r.headers["content-length"] == str(len(content)) and "pii.csv" in r.headers["content-disposition"]


@pytest.fixture
def cli_env(settings, monkeypatch):
    monkeypatch.setenv("AIAAS_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("AIAAS_DATABASE_URL", settings.sqlalchemy_url)
    monkeypatch.setenv("AIAAS_SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("AIAAS_ENV", "test")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def test_orgs_delete_destroys_the_data_key_and_blobs(client, app, settings, db, org_a, org_b, cli_env,
                                                           tmp_path):
    from aiaas.cli.main import app as cli

    blobs: EncryptedBlobStore = app.state.aiaas.services.blobs
    r = await client.post("/v1/files", headers=org_a.headers, files={"file": ("pii.csv", csv_with_secret())},
                          data={"purpose": "fine-tune"})
    assert r.status_code == 200
    artifact = tmp_path / "artifact"
    (artifact / "onnx").mkdir(parents=True)
    (artifact / "onnx" / "aiaas.json").write_text('{"labels": ["secret-label-xyz"]}')
    uri = blobs.put_dir(f"{org_a.id}/models/ftjob-del", artifact)
    with db.session() as s:
        registry.register_model(s, model_id="ft:t:org-a::ftjob-del", org_id=org_a.id, job_id="ftjob-del",
                                base_model="t", task="single_label_classification", artifact_uri=uri,
                                lineage={}, card={})
    kept = (await client.post("/v1/files", headers=org_b.headers, files={"file": ("b.csv", toy_csv())},
                              data={"purpose": "fine-tune"})).json()
    # A "backup" of org A's blobs, taken before the deletion.
    backup = {p: p.read_bytes() for p in blob_files(settings, org_a.id)}
    assert len(backup) == 2
    assert all(b"4111" not in data and b"secret-label-xyz" not in data for data in backup.values())

    result = CliRunner().invoke(cli, ["orgs", "delete", "org-a", "--yes"])
    assert result.exit_code == 0, result.output
    assert "deleted organisation org-a" in result.output

    assert blob_files(settings, org_a.id) == []
    with db.session() as s:
        assert s.get(Organization, org_a.id) is None
        rows, _ = audit.list_logs(s, None, after=None, limit=10)
        assert [(r.action, r.target_id) for r in rows] == [("organization.deleted", org_a.id)]
        assert s.scalars(select(AuditLog).where(AuditLog.org_id == org_a.id)).all() == []
    # Restore the backup: with the data key gone, nothing (this process, a fresh one) can read it.
    raw = create_blob_store(settings.blobs_url)
    for path, data in backup.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for reader in (blobs, EncryptedBlobStore(raw, Keyring(db, TEST_SECRET))):
        reader.keyring.forget(org_a.id)
        for path in backup:
            with pytest.raises(crypto.DecryptionError):
                with reader.open_local(f"file://{path}"):
                    pass
    # The other organisation is untouched.
    r = await client.get(f"/v1/files/{kept['id']}/content", headers=org_b.headers)
    assert r.status_code == 200 and r.content == toy_csv()
    # A second delete names the problem.
    result = CliRunner().invoke(cli, ["orgs", "delete", "org-a", "--yes"])
    assert result.exit_code == 1 and "not_found" in result.output


def test_orgs_limits_cli(db, org_a, cli_env):
    from aiaas.cli.main import app as cli

    result = CliRunner().invoke(cli, ["orgs", "limits", "org-a", "--set", "quota_deployments=7",
                                      "--set", "rate_limit_requests_per_minute=0"])
    assert result.exit_code == 0, result.output
    with db.session() as s:
        assert s.get(Organization, org_a.id).settings == {"quota_deployments": 7,
                                                          "rate_limit_requests_per_minute": 0}
    assert "organisation" in result.output and "unlimited" in result.output
    result = CliRunner().invoke(cli, ["orgs", "limits", "org-a", "--set", "quota_deployments=default"])
    with db.session() as s:
        assert s.get(Organization, org_a.id).settings == {"rate_limit_requests_per_minute": 0}
    result = CliRunner().invoke(cli, ["orgs", "limits", "org-a", "--set", "bogus=1"])
    assert result.exit_code == 1 and "quota_deployments" in result.output


def database_dump(db) -> bytes:
    """Everything the database holds: the SQLite files' bytes, or every row of every PostgreSQL table."""
    if db.engine.dialect.name == "sqlite":
        path = Path(db.engine.url.database)
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    out = []
    with db.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            out += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    return "\n".join(out).encode()


async def test_no_api_key_plaintext_in_the_database_or_logs(client, db, org_a, caplog):
    caplog.set_level(logging.DEBUG)
    keys = [org_a.key]
    for i, scopes in enumerate((["read"], ["infer"], ["write"])):
        r = await client.post("/v1/api_keys", headers=org_a.headers, json={"name": f"k{i}", "scopes": scopes})
        keys.append(r.json()["key"])
    for key in keys:
        await client.get("/v1/organizations/me", headers={"Authorization": f"Bearer {key}"})
        await client.get("/v1/api_keys", headers={"Authorization": f"Bearer {key}"})  # 403 for most
    revoked = keys[1]
    listed = (await client.get("/v1/api_keys", headers=org_a.headers)).json()["data"]
    k0 = next(k["id"] for k in listed if k["name"] == "k0")
    await client.delete(f"/v1/api_keys/{k0}", headers=org_a.headers)
    unknown = generate_key()
    for bad in (revoked, unknown, unknown[:-1] + "x"):
        assert (await client.get("/v1/files", headers={"Authorization": f"Bearer {bad}"})).status_code == 401
    keys += [unknown]
    with db.session() as s:
        assert s.scalar(select(AuditLog.id).where(AuditLog.action == "auth.failed")) is not None

    dump = database_dump(db)
    logged = caplog.text + "\n".join(repr(r.__dict__) for r in caplog.records)
    assert hash_key(org_a.key).encode() in dump  # the dump is real: it holds the keys' hashes
    for key in keys:
        body = key.split("_")[2]  # the 32 secret characters
        assert body.encode() not in dump, "an API key's secret part is stored in the database"
        assert body not in logged, "an API key's secret part was logged"
