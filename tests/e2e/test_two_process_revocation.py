"""Deleting an organisation makes its data key unusable in every running process (issue 13, deliverable 8).

Each process caches the data keys it unwrapped. Here one process (this test) holds the organisation's key
in its cache, and another (`aiaas orgs delete`, a real CLI process on the same database) deletes the
organisation; a copy of the ciphertext (a backup) put back afterwards must not decrypt in the first one.
"""

from __future__ import annotations

import io
import subprocess

import pytest

from aiaas.security import crypto
from aiaas.store import files as file_store
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted
from tests.conftest import TEST_SECRET
from tests.e2e.server import AIAAS, base_env

pytestmark = pytest.mark.e2e

PLAIN = b"text,label\nmy card is 4111 1111 1111 1111,billing\n" * 20


def test_org_deleted_by_another_process_cannot_be_read_here(settings, db, tmp_path):
    store = encrypted(create_blob_store(settings.blobs_url), db, TEST_SECRET)
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "revoked")
        kept, _, _ = tenancy.create_organization(s, "kept")
    blob = store.put(f"{org.id}/files/file-1", io.BytesIO(PLAIN))
    other = store.put(f"{kept.id}/files/file-2", io.BytesIO(b"a,b\n"))
    with db.session() as s:
        file_store.add_file(s, file_id="file-1", org_id=org.id, filename="x.csv", purpose="fine-tune",
                            size=blob.size, sha256=blob.sha256, storage_uri=blob.uri, summary={})
    assert b"".join(store.read_stream(blob.uri)) == PLAIN  # this process now holds the unwrapped key
    path = store.inner.local_path(blob.uri)
    backup = path.read_bytes()

    env = base_env(settings.data_dir, settings.sqlalchemy_url, AIAAS_SECRET_KEY=TEST_SECRET)
    out = subprocess.run(AIAAS + ["orgs", "delete", "revoked", "--yes"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert not path.exists()  # the other process removed the ciphertext too

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(backup)  # ... but a backup of it survives somewhere
    for read in (lambda: b"".join(store.read_stream(blob.uri)),
                 lambda: store.open_local(blob.uri).__enter__()):
        with pytest.raises(crypto.DecryptionError, match="does not exist"):
            read()
    assert b"".join(store.read_stream(other.uri)) == b"a,b\n"  # other organisations are unaffected
