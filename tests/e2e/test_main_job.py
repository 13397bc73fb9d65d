"""The main job end to end: real server and worker processes, the official openai SDK and our SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import openai
import pytest

from aiaas.sdk import Client, NotFoundError
from tests.e2e.server import AIAAS, base_env, init, start_server
from tests.helpers.datasets import toy_csv
from tests.helpers.tiny_bert import build_tiny_bert

openai = pytest.importorskip("openai")
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def wait_job(client, job_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        status = job.status if hasattr(job, "status") else job["status"]
        if status in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not reach {statuses}: {job}")


@pytest.fixture
def stack(tmp_path, database_url):
    data = tmp_path / "data"
    build_tiny_bert(data / "base_models" / "tiny-bert")
    env = base_env(data, database_url, AIAAS_LEASE_SECONDS="4", AIAAS_HEARTBEAT_SECONDS="0.5",
                   AIAAS_POLL_SECONDS="0.2")
    key = init(env)
    csv_path = tmp_path / "train.csv"
    csv_path.write_bytes(toy_csv(30))
    yield env, key, csv_path, tmp_path


def test_openai_sdk_and_our_sdk_end_to_end(stack):
    env, key, csv_path, tmp_path = stack
    server = start_server(env, tmp_path, job_workers=1)
    try:
        oa = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        with open(csv_path, "rb") as fh:
            f = oa.files.create(file=fh, purpose="fine-tune")
        assert f.object == "file" and f.bytes == csv_path.stat().st_size and f.filename == "train.csv"
        assert [x.id for x in oa.files.list()] == [f.id]
        assert oa.files.retrieve(f.id).id == f.id
        assert oa.files.content(f.id).content == csv_path.read_bytes()

        job = oa.fine_tuning.jobs.create(model="tiny-bert", training_file=f.id, suffix="e2e", seed=3,
                                         hyperparameters={"n_epochs": 3})
        assert job.object == "fine_tuning.job" and job.status in ("validating_files", "queued", "running")
        assert job.id in [j.id for j in oa.fine_tuning.jobs.list()]
        done = wait_job(oa, job.id)
        assert done.status == "succeeded", (done.error, server.logs()[-3000:])
        assert done.fine_tuned_model.startswith("ft:tiny-bert:default:e2e:")
        assert done.trained_tokens > 0 and done.result_files

        events = list(oa.fine_tuning.jobs.list_events(job.id, limit=100))
        assert any(e.type == "metrics" for e in events) and events[0].created_at >= events[-1].created_at
        assert any("successfully completed" in e.message for e in events)
        checkpoints = list(oa.fine_tuning.jobs.checkpoints.list(job.id))
        assert checkpoints and checkpoints[0].step_number > 0
        ids = [m.id for m in oa.models.list()]
        assert done.fine_tuned_model in ids and "tiny-bert" in ids
        assert oa.models.retrieve(done.fine_tuned_model).owned_by

        # Our SDK: data report, deploy and predict.
        with Client(server.base_url, key) as c:
            report = c.fine_tuning.jobs.retrieve(job.id)["data_report"]
            assert report["rows_read"] == 60 and report["token_length"]["p50"] > 0
            streamed = list(c.fine_tuning.jobs.stream_events(job.id))
            assert len(streamed) == len(events)
            c.deployments.create("toy", model=done.fine_tuned_model)
            out = c.deployments.predict("toy", ["great service thank you", "the app crashes on login"], top_k=2)
            assert out["model"] == done.fine_tuned_model and len(out["data"]) == 2
            assert {r["label"] for r in out["data"]} <= {"positive", "negative"}
            assert abs(sum(s["score"] for s in out["data"][0]["scores"]) - 1) < 1e-3
            assert out["usage"]["prompt_tokens"] > 4

            # A model a deployment serves cannot be deleted (409, naming the deployment); once the deployment
            # is gone it can, and nothing serves it any more.
            with pytest.raises(openai.ConflictError, match="toy"):
                oa.models.delete(done.fine_tuned_model)
            c.deployments.delete("toy")
            assert oa.models.delete(done.fine_tuned_model).deleted
            with pytest.raises(NotFoundError):
                c.deployments.predict("toy", ["hello"])

        # Cancel a long job while it runs: it ends within seconds.
        # Enough data that 50 epochs take minutes, so the cancel cannot lose a race with the job's end.
        big = tmp_path / "big.csv"
        big.write_bytes(toy_csv(1000, seed=7))
        with open(big, "rb") as fh:
            big_file = oa.files.create(file=fh, purpose="fine-tune")
        long_job = oa.fine_tuning.jobs.create(model="tiny-bert", training_file=big_file.id,
                                              hyperparameters={"n_epochs": 50})
        wait_job(oa, long_job.id, statuses=("running",), timeout=60)
        t0 = time.monotonic()
        oa.fine_tuning.jobs.cancel(long_job.id)
        assert wait_job(oa, long_job.id, timeout=30).status == "cancelled"
        assert time.monotonic() - t0 < 15
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_worker_killed_mid_training_resumes_from_checkpoint(stack):
    env, key, csv_path, tmp_path = stack
    server = start_server(env, tmp_path, job_workers=0)
    workers: list[subprocess.Popen] = []
    try:
        def start_worker() -> subprocess.Popen:
            p = subprocess.Popen(AIAAS + ["worker"], env=env | {"AIAAS_TRAINING_THREADS": "1"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            workers.append(p)
            return p

        with Client(server.base_url, key) as c:
            f = c.files.create(csv_path)
            job = c.fine_tuning.jobs.create(model="tiny-bert", training_file=f["id"], seed=5,
                                            hyperparameters={"n_epochs": 40, "batch_size": 8})
            first = start_worker()
            deadline = time.monotonic() + 120
            checkpoints: list = []
            while time.monotonic() < deadline and not checkpoints:
                checkpoints = list(c.fine_tuning.jobs.list_checkpoints(job["id"]))
                time.sleep(0.2)
            assert checkpoints, "no checkpoint was written"
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
            killed_at = max(cp["step_number"] for cp in checkpoints)
            assert c.fine_tuning.jobs.retrieve(job["id"])["status"] == "running"

            start_worker()
            final = wait_job(c, job["id"], timeout=300)
            assert final["status"] == "succeeded", final["error"]
            events = list(c.fine_tuning.jobs.list_events(job["id"], limit=1000))
            resumed = [e for e in events if e["message"].startswith("Resumed from checkpoint")]
            assert resumed and resumed[0]["data"]["step"] >= killed_at > 0
            # Steps continued from the checkpoint, not from zero: nothing after resuming reports an earlier
            # step, and the run ended at or past it (early stopping may end it right at the checkpoint).
            start = resumed[0]["data"]["step"]
            after = [e for e in reversed(events) if e["id"] > resumed[0]["id"]]
            steps = [e["data"]["step"] for e in after if e["type"] == "metrics" and "step" in (e["data"] or {})]
            assert all(step >= start for step in steps), (start, steps)
            written = [e for e in after if e["message"].startswith("Model written after")]
            assert written and int(written[0]["message"].split()[3]) >= start
    finally:
        for p in workers:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=30)
        server.stop()
