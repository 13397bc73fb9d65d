"""Real fine-tuning jobs (the worker, a tiny BERT) add versions 1 and 2 of the registered model their
`suffix` names, with lineage (job, data hash, base model, parent version) and metrics."""

from __future__ import annotations

import pytest

from aiaas.jobs.worker import Worker
from aiaas.store import versions
from aiaas.store.models import FineTuningJob
from tests.jobs.conftest import make_job, tiny_base  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_two_jobs_make_two_versions(settings, db, make_job):  # noqa: F811
    jobs = [make_job(suffix="support", hyperparameters={"n_epochs": 1}) for _ in range(2)]
    with Worker(settings) as w:
        assert w.run_once() == "succeeded" and w.run_once() == "succeeded"
    with db.session() as s:
        rm = versions.get_registered(s, make_job.org_id, "support")
        v2, v1 = versions.list_versions(s, rm)
        models = {j: s.get(FineTuningJob, j).fine_tuned_model for j in jobs}
        assert (v1.version, v2.version) == (1, 2) and {v1.job_id, v2.job_id} == set(jobs)
        assert v1.model_id == models[v1.job_id] and v2.model_id == models[v2.job_id]
        assert v2.parent_version == 1 and v2.lineage["parent_version"] == 1 and v1.parent_version is None
        assert v2.lineage["base_model"] == "tiny-bert" and len(v2.lineage["training_file_sha256"]) == 64
        assert "accuracy" in v1.metrics and "accuracy" in v2.metrics
