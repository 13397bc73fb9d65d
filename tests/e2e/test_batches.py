"""The Batch API on real processes with the official openai SDK: the API process only records a batch,
`aiaas worker` processes answer it; one is killed with SIGKILL mid-batch, another replaces it, and every
input line is answered exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from tests.e2e.chaos import MODEL, make_stack
from tests.e2e.server import AIAAS, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
LINES = 2000


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_openai_sdk_batch_survives_kill_9(tmp_path):
    openai = pytest.importorskip("openai")
    stack = make_stack(tmp_path, None, with_model=True, AIAAS_BATCH_CHUNK_LINES="20")
    srv = start_server(stack.env, tmp_path)  # no workers in it: batches never run in the API process
    workers: list[subprocess.Popen] = []

    def start_worker(n: int) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{n}.log", "wb")  # noqa: SIM115 - lives as long as the process
        p = subprocess.Popen(AIAAS + ["worker"], env=stack.env, stdout=log, stderr=subprocess.STDOUT)
        workers.append(p)
        return p

    try:
        client = openai.OpenAI(base_url=srv.base_url + "/v1", api_key=stack.key, max_retries=0)
        raw = "".join(json.dumps({"custom_id": f"row-{i}", "method": "POST", "url": "/v1/classifications",
                                  "body": {"model": MODEL, "input": f"customer message number {i}"}}) + "\n"
                      for i in range(LINES))
        f = client.files.create(file=("requests.jsonl", raw.encode()), purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/classifications",  # type: ignore[arg-type]
                                      completion_window="24h", metadata={"suite": "e2e"})
        assert batch.status == "validating" and batch.metadata == {"suite": "e2e"}
        time.sleep(1.0)
        assert client.batches.retrieve(batch.id).status == "validating"  # the API process did not start it

        first = start_worker(1)
        progress = _wait(lambda: (b := client.batches.retrieve(batch.id)).request_counts
                         and b.request_counts.completed >= 100 and b.request_counts, 120, "the first chunks")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        at_kill = client.batches.retrieve(batch.id)
        assert at_kill.status == "in_progress" and at_kill.request_counts.completed < LINES, at_kill
        start_worker(2)  # the replacement claims the batch once the dead worker's lease expires
        done = _wait(lambda: (b := client.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
                     180, "the batch to finish")
        assert done.status == "completed", done
        assert done.request_counts.total == LINES and done.request_counts.completed == LINES
        assert done.request_counts.failed == 0 and done.error_file_id is None
        text = client.files.content(done.output_file_id).text
        out = [json.loads(line) for line in text.splitlines()]
        ids = [o["custom_id"] for o in out]
        assert len(ids) == LINES and set(ids) == {f"row-{i}" for i in range(LINES)}  # each once, none missing
        assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in out)
        assert out[0]["response"]["body"]["data"][0]["label"] in ("negative", "positive")
        assert batch.id in [b.id for b in client.batches.list()]

        second = client.batches.create(input_file_id=f.id, endpoint="/v1/classifications",  # type: ignore[arg-type]
                                       completion_window="24h")
        cancelled = client.batches.cancel(second.id)
        assert cancelled.status in ("cancelled", "cancelling")
        _wait(lambda: client.batches.retrieve(second.id).status == "cancelled", 60, "the cancel")
        print(f"kill -9 trial: killed at {progress.completed}/{LINES} answered; finished with "
              f"{len(ids)} unique lines")
    finally:
        for p in workers:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        srv.stop()
