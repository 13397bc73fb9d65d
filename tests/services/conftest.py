"""The inference service without HTTP: real database, real blob store, real limiter and usage recorder."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aiaas.security.ratelimit import MemoryRateLimiter
from aiaas.services.inference import InferenceService
from aiaas.services.usage import UsageRecorder
from aiaas.store import deployments as dep_store
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted
from tests.conftest import TEST_SECRET
from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org:svc:ftjob-svc"


@dataclass
class World:
    service: InferenceService
    limiter: MemoryRateLimiter
    usage: UsageRecorder
    org_id: str
    key_id: str
    uri: str


@pytest.fixture(scope="session")
def classifier_artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("svc-art"))


@pytest.fixture
async def world(settings, db, classifier_artifact):
    with db.session() as s:
        org, row, _key = tenancy.create_organization(s, "svc")
        org_id, key_id = org.id, row.id
    uri = register(settings, db, org_id, classifier_artifact, model_id=MODEL, task="single_label_classification",
                   labels=["negative", "positive"])
    with db.session() as s:
        dep_store.create_deployment(s, org_id, name="svc", model=MODEL, min_replicas=0)
    limiter = MemoryRateLimiter(clock=lambda: 1000.0)  # frozen: buckets never refill during a test
    usage = UsageRecorder(db, flush_seconds=3600)
    blobs = encrypted(create_blob_store(settings.blobs_url, settings), db, TEST_SECRET)
    service = InferenceService(settings, db, blobs, limiter=limiter, usage=usage)
    yield World(service, limiter, usage, org_id, key_id, uri)
    await service.aclose()
    await usage.aclose()
