"""client.batches: create (CSV scoring and JSONL), retrieve, list, cancel and wait, typed, against the real
app in process; a real worker (aiaas.jobs.worker) answers the batch."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import pytest

from aiaas.jobs.worker import Worker
from aiaas.sdk import Client
from aiaas.sdk.batches import Batch, BatchRequestCounts, BatchWaitTimeout
from tests.api.conftest import Org, app, make_org  # noqa: F401 - fixtures used by name
from tests.helpers.deployed import export_tiny_classifier, register

pytestmark = pytest.mark.slow
MODEL = "ft:tiny-bert:org-a:sdkb:ftjob-9"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


@pytest.fixture
def org_a(db) -> Org:
    return make_org(db, "org-a")


@pytest.fixture
def sync_client(app, org_a):  # noqa: F811 - `app` is the imported fixture
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://test") as http, \
            Client("http://test", org_a.key, http_client=http, max_retries=0) as c:
        yield c


def test_batches_resource_is_typed_and_waits(settings, db, org_a, sync_client, tmp_path):
    register(settings, db, org_a.id, export_tiny_classifier(tmp_path / "art"), model_id=MODEL,
             task="single_label_classification", labels=["negative", "positive"])
    c = sync_client
    c.deployments.create("sdkb", model=MODEL)
    f = c.files.create(io.BytesIO(b"id,body\n1,great service\n2,awful\n3,fine\n"), purpose="batch",
                       filename="scores.csv")
    batch = c.batches.create(input_file_id=f.id, endpoint="/v1/classifications", text_column="body",
                             deployment="sdkb", metadata={"run": "sdk"})
    assert isinstance(batch, Batch) and batch.status == "validating" and batch.metadata == {"run": "sdk"}
    assert not batch.done and isinstance(batch.request_counts, BatchRequestCounts)
    with pytest.raises(BatchWaitTimeout) as waited:  # nobody runs it yet
        c.batches.wait(batch.id, timeout=0.3, poll_seconds=0.1)
    assert waited.value.batch.id == batch.id

    worker = threading.Thread(target=lambda: Worker(settings).run_once())
    worker.start()
    done = c.batches.wait(batch.id, timeout=300, poll_seconds=0.2)
    worker.join(60)
    assert isinstance(done, Batch) and done.status == "completed" and done.done
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    scored = c.files.content(done.output_file_id).decode().splitlines()
    assert scored[0].startswith("id,body,label,score") and len(scored) == 4
    assert batch.id in [b.id for b in c.batches.list()]

    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/classifications",
                       "body": {"model": MODEL, "input": "hi"}})
    g = c.files.create(io.BytesIO(line.encode() + b"\n"), purpose="batch", filename="req.jsonl")
    second = c.batches.create(input_file_id=g.id, endpoint="/v1/classifications")
    cancelled = c.batches.cancel(second.id)
    assert isinstance(cancelled, Batch) and cancelled.status in ("cancelling", "cancelled")
    assert c.batches.wait(second.id, timeout=30, poll_seconds=0.1).status == "cancelled"
    missing = c.batches.retrieve
    with pytest.raises(Exception) as nf:
        missing("batch_nope")
    assert getattr(nf.value, "status", None) == 404


async def test_async_client_waits_too(app, org_a):  # noqa: F811 - `app` is the imported fixture
    import httpx

    from aiaas.sdk import AsyncClient

    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    async with AsyncClient("http://test", org_a.key, http_client=http, max_retries=0) as c:
        line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/classifications",
                           "body": {"model": MODEL, "input": "hi"}})
        f = await c.files.create(io.BytesIO(line.encode() + b"\n"), purpose="batch", filename="req.jsonl")
        batch = await c.batches.create(input_file_id=f.id, endpoint="/v1/classifications")
        assert isinstance(batch, Batch) and batch.status == "validating"
        with pytest.raises(BatchWaitTimeout):  # no worker here
            await c.batches.wait(batch.id, timeout=0.2, poll_seconds=0.05)
        await c.batches.cancel(batch.id)
        done = await c.batches.wait(batch.id, timeout=30, poll_seconds=0.05)
        assert isinstance(done, Batch) and done.status == "cancelled" and done.done
        assert batch.id in [b.id async for b in c.batches.list()]
