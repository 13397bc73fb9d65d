"""Blobs encrypted at rest with per-organisation data keys (aiaas/store/encrypted.py), on a real store."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from aiaas.core.errors import PayloadTooLarge
from aiaas.security import crypto
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import EncryptedBlobError, EncryptedBlobStore, Keyring, encrypted
from aiaas.store.models import Organization
from tests.conftest import TEST_SECRET

PLAIN = b"text,label\nmy card number is 4111 1111 1111 1111,billing\n" * 50


@pytest.fixture
def orgs(db):
    with db.session() as s:
        a, _, _ = tenancy.create_organization(s, "enc-a")
        b, _, _ = tenancy.create_organization(s, "enc-b")
        return a.id, b.id


@pytest.fixture
def raw(settings):
    return create_blob_store(settings.blobs_url)


@pytest.fixture
def store(raw, db):
    return encrypted(raw, db, TEST_SECRET)


def test_file_round_trip_stores_only_ciphertext(store, raw, orgs, db):
    org_a, _ = orgs
    blob = store.put(f"{org_a}/files/file-1", io.BytesIO(PLAIN), max_bytes=10**6)
    assert blob.size == len(PLAIN)  # the plaintext's size and digest, as the API reports them
    on_disk = raw.local_path(blob.uri).read_bytes()
    assert on_disk.startswith(crypto.MAGIC) and b"4111" not in on_disk and len(on_disk) > len(PLAIN)
    with store.open_local(blob.uri) as path:
        assert path.read_bytes() == PLAIN
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        assert str(path).startswith("/dev/shm/") or not Path("/dev/shm").is_dir()
    assert not path.exists() and not path.parent.exists()  # the plaintext copy is gone afterwards
    assert b"".join(store.read_stream(blob.uri)) == PLAIN
    with pytest.raises(EncryptedBlobError, match="open_local"):
        store.local_path(blob.uri)
    # The data key was created on first use and is stored only wrapped.
    with db.session() as s:
        wrapped = s.scalar(select(Organization.wrapped_data_key).where(Organization.id == org_a))
    assert wrapped is not None and len(wrapped) == 1 + 12 + 32 + 16


def test_directory_round_trip_and_sub_paths(store, raw, orgs, tmp_path):
    org_a, _ = orgs
    src = tmp_path / "artifact"
    (src / "onnx").mkdir(parents=True)
    (src / "onnx" / "model.onnx").write_bytes(b"weights-" * 1000)
    (src / "onnx" / "aiaas.json").write_text('{"task": "secret-task"}')
    (src / "empty").mkdir()
    uri = store.put_dir(f"{org_a}/models/ftjob-1", src)
    for path in Path(raw.local_path(uri)).rglob("*"):
        if path.is_file():
            assert path.read_bytes().startswith(crypto.MAGIC) and b"secret-task" not in path.read_bytes()
    with store.open_local(uri) as root:
        assert (root / "onnx" / "model.onnx").read_bytes() == b"weights-" * 1000
        assert (root / "empty").is_dir()
    # A sub-directory opens alone (the serving runtime needs only onnx/), bound to the same keys.
    with store.open_local(uri + "/onnx") as onnx:
        assert (onnx / "aiaas.json").read_text() == '{"task": "secret-task"}'
        assert sorted(p.name for p in onnx.iterdir()) == ["aiaas.json", "model.onnx"]


def test_ciphertext_is_bound_to_its_key_and_organisation(store, raw, orgs, tmp_path):
    org_a, org_b = orgs
    a = store.put(f"{org_a}/files/file-a", io.BytesIO(b"alpha,1\n"))
    store.put(f"{org_b}/files/file-b", io.BytesIO(b"bravo,2\n"))
    # Copy A's ciphertext over another record of A, and over a record of B: neither decrypts.
    for target in (f"{org_a}/files/file-other", f"{org_b}/files/file-b"):
        moved = raw.put(target, io.BytesIO(raw.local_path(a.uri).read_bytes()))
        with pytest.raises(crypto.DecryptionError):
            with store.open_local(moved.uri):
                pass
    # A flipped bit anywhere fails authentication too.
    data = bytearray(raw.local_path(a.uri).read_bytes())
    data[-5] ^= 1
    tampered = raw.put(f"{org_a}/files/file-a", io.BytesIO(bytes(data)))
    with pytest.raises(crypto.DecryptionError):
        b"".join(store.read_stream(tampered.uri))


def test_plaintext_blobs_are_refused_not_read(store, raw, orgs, tmp_path):
    """No plaintext fallback: a header-less blob (old data, or planted) is refused with a stable code."""
    from aiaas.core.errors import UnencryptedBlob

    org_a, _ = orgs
    old = raw.put(f"{org_a}/files/legacy", io.BytesIO(b"text,label\nold,1\n"))
    with pytest.raises(UnencryptedBlob, match="migrate-blobs") as err:
        with store.open_local(old.uri):
            pass
    assert err.value.code == "unencrypted_blob" and err.value.status == 500
    with pytest.raises(UnencryptedBlob):
        b"".join(store.read_stream(old.uri))
    with pytest.raises(UnencryptedBlob):
        store.local_path(old.uri)


def test_upload_limit_keeps_nothing(store, raw, orgs, settings):
    org_a, _ = orgs
    with pytest.raises(PayloadTooLarge):
        store.put(f"{org_a}/files/big", io.BytesIO(b"x" * 5000), max_bytes=1000)
    root = settings.data_dir / "blobs" / org_a / "files"
    assert not root.exists() or list(root.iterdir()) == []


def test_wrong_master_secret_cannot_read(store, raw, orgs, db):
    org_a, _ = orgs
    blob = store.put(f"{org_a}/files/f", io.BytesIO(b"a,b\n"))
    other = encrypted(raw, db, "another-secret-" + "y" * 40)
    with pytest.raises(crypto.DecryptionError):
        with other.open_local(blob.uri):
            pass


def test_concurrent_first_use_creates_one_data_key(raw, orgs, db):
    """Several processes (here: keyrings in threads) creating the key at once agree on one."""
    org_a, _ = orgs
    keys: list[bytes] = []
    barrier = threading.Barrier(4)

    def first_use() -> None:
        ring = Keyring(db, TEST_SECRET)
        barrier.wait()
        keys.append(ring.data_key(org_a, create=True))

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 4 and len(set(keys)) == 1


def test_deleted_organisation_key_is_gone(store, raw, orgs, db):
    org_a, _ = orgs
    blob = store.put(f"{org_a}/files/f", io.BytesIO(PLAIN))
    copy = raw.local_path(blob.uri).read_bytes()
    with db.session() as s:
        tenancy.delete_organization(s, org_a)
    fresh = EncryptedBlobStore(raw, Keyring(db, TEST_SECRET))
    with pytest.raises(crypto.DecryptionError, match="does not exist"):
        with fresh.open_local(blob.uri):
            pass
    assert b"4111" not in copy and os.path.getsize(raw.local_path(blob.uri)) == len(copy)
