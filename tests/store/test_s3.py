"""The s3:// blob store against a real moto S3 server process on loopback, including a whole job."""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("boto3", reason="the s3 extra is not installed: pip install 'aiaas[s3]'")

from aiaas.core.errors import PayloadTooLarge, Unavailable
from aiaas.core.settings import get_settings
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.s3 import PART_BYTES, S3BlobStore, parse_s3_url
from tests.ray.moto_server import S3_ENV, make_bucket, moto_server


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    try:
        with moto_server(tmp_path_factory.mktemp("moto")) as url:
            yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    name = "b-" + uuid.uuid4().hex[:12]
    make_bucket(s3_endpoint, name)
    return name


@pytest.fixture
def store(s3_endpoint: str, bucket: str, tmp_path: Path) -> S3BlobStore:
    return S3BlobStore(f"s3://{bucket}/tenant-data", endpoint_url=s3_endpoint, cache_dir=tmp_path / "cache")


def _keys(store: S3BlobStore) -> list[str]:
    resp = store.client.list_objects_v2(Bucket=store.bucket)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def test_put_then_local_path_round_trip(store: S3BlobStore) -> None:
    data = b"text,label\nhello,a\n"
    blob = store.put("org1/files/file-1", io.BytesIO(data), max_bytes=1000)
    assert blob.uri == f"s3://{store.bucket}/tenant-data/org1/files/file-1"
    assert blob.size == len(data) and blob.sha256 == hashlib.sha256(data).hexdigest()
    assert store.key_of(blob.uri) == "org1/files/file-1"
    path = store.local_path(blob.uri)
    assert path.read_bytes() == data and store.cache_dir in path.parents
    # A second read is served from the cache; a rewritten object is fetched again.
    assert store.local_path(blob.uri) == path
    store.put("org1/files/file-1", io.BytesIO(b"changed"))
    assert store.local_path(blob.uri).read_bytes() == b"changed"


def test_large_upload_streams_in_parts(store: S3BlobStore) -> None:
    data = os.urandom(2 * PART_BYTES + 12345)
    blob = store.put("big", io.BytesIO(data), max_bytes=len(data))
    assert blob.size == len(data) and blob.sha256 == hashlib.sha256(data).hexdigest()
    head = store.client.head_object(Bucket=store.bucket, Key="tenant-data/big")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-3"')  # three parts
    assert store.local_path(blob.uri).read_bytes() == data


@pytest.mark.parametrize("size", [100, PART_BYTES + 5])
def test_over_the_limit_keeps_nothing(store: S3BlobStore, size: int) -> None:
    with pytest.raises(PayloadTooLarge):
        store.put("org1/files/too-big", io.BytesIO(b"x" * (size + 1)), max_bytes=size)
    assert _keys(store) == []
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket)
    assert uploads.get("Uploads", []) == []  # the started multipart upload was aborted


def test_put_dir_local_path_and_replace(store: S3BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "artifact"
    (src / "onnx").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "onnx" / "model.onnx").write_bytes(b"\x00" * 10)
    uri = store.put_dir("org1/models/job-1/model", src)
    assert uri == f"s3://{store.bucket}/tenant-data/org1/models/job-1/model"
    local = store.local_path(uri)
    assert (local / "config.json").read_text() == "{}" and (local / "onnx" / "model.onnx").stat().st_size == 10
    # A parent prefix is a directory too (the artifact URI the registry records).
    parent = store.local_path(uri.rsplit("/model", 1)[0])
    assert (parent / "model" / "config.json").is_file()

    # Uploading the directory again (a resumed job) replaces it: stale files go, in S3 and in the cache.
    (src / "onnx" / "model.onnx").unlink()
    (src / "config.json").write_text('{"v": 2}')
    store.put_dir("org1/models/job-1/model", src)
    assert _keys(store) == ["tenant-data/org1/models/job-1/model/config.json"]
    local = store.local_path(uri)
    assert (local / "config.json").read_text() == '{"v": 2}' and not (local / "onnx" / "model.onnx").exists()


def test_delete_object_and_prefix(store: S3BlobStore, tmp_path: Path) -> None:
    blob = store.put("org1/files/a", io.BytesIO(b"a"))
    store.put("org1/files/ab", io.BytesIO(b"ab"))  # shares a string prefix, not a path prefix
    src = tmp_path / "d"
    src.mkdir()
    (src / "f").write_text("f")
    uri = store.put_dir("org1/models/m", src)
    cached = store.local_path(uri)
    store.delete(blob.uri)
    store.delete(uri)
    store.delete(uri)  # missing is fine
    assert _keys(store) == ["tenant-data/org1/files/ab"]
    assert not cached.exists()
    assert not store.local_path(uri).exists()  # a URI naming nothing: a path that does not exist


def test_keys_and_uris_cannot_escape_the_store(store: S3BlobStore) -> None:
    for key in ("../x", "/abs", "a/../../b", "", "a\\b"):
        with pytest.raises(ValueError):
            store.put(key, io.BytesIO(b"x"))
    for uri in ("s3://other-bucket/tenant-data/x", f"s3://{store.bucket}/elsewhere/x",
                f"s3://{store.bucket}/tenant-data/../x", "file:///etc/passwd"):
        with pytest.raises(ValueError):
            store.local_path(uri)
        with pytest.raises(ValueError):
            store.delete(uri)
    assert parse_s3_url("s3://b") == ("b", "")


def test_unreachable_endpoint_is_unavailable(tmp_path: Path, s3_endpoint: str) -> None:
    from tests.ray.moto_server import free_port

    dead = S3BlobStore("s3://b/p", endpoint_url=f"http://127.0.0.1:{free_port()}", cache_dir=tmp_path)
    with pytest.raises(Unavailable) as err:
        dead.put("k", io.BytesIO(b"x"))
    assert "s3://b/p" in err.value.message


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, tmp_path: Path) -> Iterator[Path]:
    """How a deployment configures it: environment variables read by the process settings."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("AIAAS_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AIAAS_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


def test_create_blob_store_reads_endpoint_from_settings(s3_env: Path, bucket: str) -> None:
    store = create_blob_store(f"s3://{bucket}/p/")
    assert isinstance(store, S3BlobStore)
    assert store.prefix == "p" and store.endpoint_url == os.environ["AIAAS_S3_ENDPOINT_URL"]
    assert store.cache_dir == s3_env / "cache" / "s3"
    blob = store.put("k", io.BytesIO(b"hello"))
    assert store.local_path(blob.uri).read_bytes() == b"hello"


@pytest.mark.slow
def test_whole_job_flow_with_s3_blobs(s3_env: Path, bucket: str, database_url: str) -> None:
    """Upload → Worker trains → artifact and results in S3 (encrypted) → a fresh cache serves the model files."""
    from aiaas.core.settings import Settings
    from aiaas.jobs.worker import Worker
    from aiaas.protocol.jobs import JobCreate
    from aiaas.services import files as file_service
    from aiaas.services import jobs as job_service
    from aiaas.store import migrate, tenancy
    from aiaas.store.db import Database
    from aiaas.store.models import File, FineTuningJob, Model
    from tests.conftest import TEST_SECRET
    from tests.helpers.datasets import toy_csv
    from tests.helpers.tiny_bert import build_tiny_bert

    settings = Settings(env="test", data_dir=s3_env, database_url=database_url, secret_key=TEST_SECRET,
                        job_workers=0, blob_store_url=f"s3://{bucket}/aiaas")
    build_tiny_bert(settings.base_models_dir / "tiny-bert")
    db = Database(settings.sqlalchemy_url)
    migrate.upgrade(db.engine)
    from aiaas.store.encrypted import encrypted, is_encrypted

    blobs = encrypted(create_blob_store(settings.blobs_url), db, TEST_SECRET)  # as the API writes uploads
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "s3-org")
    with db.session() as s:
        f = file_service.upload(s, blobs, org_id=org.id, src=io.BytesIO(toy_csv()), filename="train.csv",
                                purpose="fine-tune", max_bytes=10**8)
        job_id = job_service.create_job(s, settings, org_id=org.id,
                                        body=JobCreate(model="tiny-bert", training_file=f.id,
                                                       hyperparameters={"n_epochs": 1})).id
        assert f.storage_uri.startswith(f"s3://{bucket}/aiaas/{org.id}/files/")
    with Worker(settings) as w:
        assert isinstance(w.blobs, S3BlobStore)
        assert w.run_once() == "succeeded"
    with db.session() as s:
        job = s.get(FineTuningJob, job_id)
        assert job.status == "succeeded", job.error
        model = s.get(Model, job.fine_tuned_model)
        artifact_uri = model.artifact_uri
        results = s.get(File, job.result_files[0])
        assert artifact_uri.startswith(f"s3://{bucket}/aiaas/") and results.storage_uri.startswith("s3://")
    # Another node (an empty cache) finds everything by URI alone; S3 holds only ciphertext.
    other = S3BlobStore(f"s3://{bucket}/aiaas", settings=settings.model_copy(update={"data_dir": s3_env / "n2"}))
    assert is_encrypted(other.local_path(results.storage_uri)) and is_encrypted(other.local_path(f.storage_uri))
    reader = encrypted(other, db, TEST_SECRET)
    with reader.open_local(artifact_uri + "/onnx") as onnx_dir:
        assert (onnx_dir / "aiaas.json").is_file()
    with reader.open_local(results.storage_uri) as path:
        assert b"step" in path.read_bytes()
    db.dispose()
