from __future__ import annotations

import io

import pytest

from aiaas.protocol.jobs import JobCreate
from aiaas.services import files as file_service
from aiaas.services import jobs as job_service
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert


@pytest.fixture
def tiny_base(settings):
    return build_tiny_bert(settings.base_models_dir / "tiny-bert")


@pytest.fixture
def make_job(settings, db, tiny_base):
    # Through the encrypting store, as the API writes them: the runner refuses plaintext blobs.
    blobs = encrypted(create_blob_store(settings.data_dir / "blobs"), db, settings.master_secret())
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "jobs-org")
        org_id = org.id

    def make(content: bytes | None = None, **fields):
        with db.session() as s:
            f = file_service.upload(s, blobs, org_id=org_id, src=io.BytesIO(content or toy_csv()),
                                    filename="train.csv", purpose="fine-tune", max_bytes=10**8)
            body = JobCreate(model="tiny-bert", training_file=f.id, **fields)
            return job_service.create_job(s, settings, org_id=org_id, body=body).id

    make.org_id = org_id  # type: ignore[attr-defined]
    return make
