"""The background check of a large upload under a lease: a file left 'uploaded' by a server that stopped is
checked again by a running one, exactly one of several API processes takes it, and a check that lost its
lease writes nothing (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import threading
import time

import pytest
from sqlalchemy import select

from aiaas.services import file_checks
from aiaas.services import files as file_service
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.models import File
from tests.api.test_upload_streaming import EMAIL, big_csv


@pytest.fixture
def org_id(db) -> str:
    with db.session() as s:
        org, _row, _key = tenancy.create_organization(s, "org-leases")
        return org.id


@pytest.fixture
def blobs(settings):
    return create_blob_store(settings.blobs_url)


def left_uploaded(db, blobs, settings, org_id: str, content: bytes, pii_policy: str = "allow") -> str:
    """An upload recorded 'uploaded' with its check not started (as a killed server leaves it)."""
    received = file_service.receive(blobs, org_id=org_id, src=io.BytesIO(content), max_bytes=10**8)
    with db.session() as s:
        row = file_service.accept(s, blobs, received, org_id=org_id, filename="big.csv", purpose="fine-tune",
                                  settings=settings, pii_policy=pii_policy, defer_over=1024)
        assert row.status == "uploaded"
        return row.id


def row(db, file_id: str) -> File:
    with db.session() as s:
        found = s.scalars(select(File).where(File.id == file_id)).one()
        s.expunge(found)
        return found


def wait_settled(db, file_id: str, timeout: float = 30.0) -> File:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (r := row(db, file_id)).status != "uploaded":
            return r
        time.sleep(0.05)
    raise AssertionError(f"{file_id} still uploaded")


def test_each_left_file_is_taken_by_exactly_one_of_two_processes(db, blobs, settings, org_id):
    ids = [left_uploaded(db, blobs, settings, org_id, big_csv(rows=50 + i)) for i in range(6)]
    # A lease that ran out (its server died) is free; a live one is not.
    assert file_checks.claim(db, ids[0], "dead-server", 0.01)
    assert file_checks.claim(db, ids[1], "live-server", 3600)
    time.sleep(0.05)
    one, two = (file_checks.FileChecker(db, blobs, settings) for _ in range(2))
    taken: dict[str, int] = {}
    barrier = threading.Barrier(2)

    def take(checker: file_checks.FileChecker, name: str) -> None:
        barrier.wait()
        taken[name] = checker.recover()

    threads = [threading.Thread(target=take, args=(c, n)) for c, n in ((one, "one"), (two, "two"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert taken["one"] + taken["two"] == 5, taken  # all but the one under a live lease, once each
    for file_id in ids[:1] + ids[2:]:
        done = wait_settled(db, file_id)
        assert done.status == "processed" and done.summary["rows"] >= 50
        assert done.check_owner is None and done.check_lease_until is None
    assert row(db, ids[1]).status == "uploaded"  # another server is checking it
    assert one.recover() == 0 and two.recover() == 0
    one.close()
    two.close()


def test_a_check_that_lost_its_lease_writes_nothing(db, blobs, settings, org_id):
    file_id = left_uploaded(db, blobs, settings, org_id, big_csv(pii_every=10), pii_policy="redact")
    assert file_checks.claim(db, file_id, "stalled", 0.01)
    time.sleep(0.05)
    assert file_checks.claim(db, file_id, "taker", 60)
    assert not file_checks.claim(db, file_id, "third", 60)  # held now
    status = file_checks.process(db, blobs, settings, org_id=org_id, file_id=file_id, owner="stalled")
    assert status == "uploaded" and row(db, file_id).status == "uploaded"  # dropped, nothing written
    assert file_checks.process(db, blobs, settings, org_id=org_id, file_id=file_id, owner="taker") == "processed"
    done = row(db, file_id)
    assert done.summary["pii"]["redacted"] == 40 and done.check_owner is None
    stored = b"".join(blobs.read_stream(done.storage_uri))
    assert EMAIL.encode() not in stored and b"[EMAIL]" in stored


def test_a_queued_check_keeps_its_lease_renewed(db, blobs, settings, org_id):
    settings = settings.model_copy(update={"upload_check_lease_seconds": 0.3})
    checker = file_checks.FileChecker(db, blobs, settings)
    gate = threading.Event()
    checker._pool.submit(gate.wait)  # the one check thread is busy: the next file waits in the queue
    file_id = left_uploaded(db, blobs, settings, org_id, big_csv())
    assert checker.submit(org_id, file_id)
    time.sleep(0.4)
    assert file_checks.claim(db, file_id, "other", 60)  # not renewed: it ran out, another server may take it
    with db.session() as s:
        s.get(File, file_id).check_owner, s.get(File, file_id).check_lease_until = checker.owner, time.time() + 0.3
    for _ in range(4):  # the lifespan's loop renews every third of the lease
        time.sleep(0.1)
        checker.recover()
    assert not file_checks.claim(db, file_id, "other", 60)
    gate.set()
    assert wait_settled(db, file_id).status == "processed"
    checker.close()
