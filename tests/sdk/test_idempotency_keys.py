"""The SDK sends an Idempotency-Key per logical POST and reuses it on that call's retries.

The unit tests stand an httpx MockTransport in for the network edge; the end-to-end test lets the
first POST reach a real server, then loses its answer (as a dropped connection would): the retry
with the same key gets the first answer replayed, and the server holds one job, not two.
"""

from __future__ import annotations

import io

import httpx
import pytest

from aiaas.sdk import Client
from tests.e2e.server import base_env, init, start_server
from tests.helpers.datasets import toy_csv


# Whole objects: the SDK parses answers into its typed results.
JOB = {"id": "ftjob-1", "created_at": 0, "status": "queued", "model": "tfidf-linear", "training_file": "file-1"}
FILE = {"id": "file-1", "bytes": 15, "created_at": 0, "filename": "t.csv", "purpose": "fine-tune"}


def _mock(handler) -> Client:
    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x")
    return Client("http://x", "aiaas_sk_test", http_client=http, max_retries=3)


def test_a_post_retried_after_a_connection_error_keeps_its_key():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("idempotency-key"))
        if len(seen) == 1:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(200, json=JOB)

    c = _mock(handler)
    assert c.fine_tuning.jobs.create(model="tfidf-linear", training_file="file-1")["id"] == "ftjob-1"
    assert len(seen) == 2 and seen[0] and seen[0] == seen[1]
    c.fine_tuning.jobs.create(model="tfidf-linear", training_file="file-1")
    assert seen[2] != seen[0]  # a new call, a new key


def test_409_in_progress_is_retried_with_the_same_key_and_gets_get_no_key():
    seen: list[tuple[str, str | None]] = []
    busy = {"error": {"message": "running", "type": "conflict_error", "code": "idempotency_key_in_progress",
                      "param": "Idempotency-Key"}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.headers.get("idempotency-key")))
        if request.method == "POST" and len(seen) == 1:
            return httpx.Response(409, json=busy, headers={"retry-after": "0"})
        return httpx.Response(200, json=FILE)

    c = _mock(handler)
    c.files.create(io.BytesIO(b"text,label\na,b\n"), filename="t.csv")
    assert [m for m, _ in seen] == ["POST", "POST"] and seen[0][1] == seen[1][1]
    c.files.retrieve("file-1")
    assert seen[-1] == ("GET", None)


def test_other_409s_are_not_retried():
    calls = []
    conflict = {"error": {"message": "exists", "type": "conflict_error", "code": "conflict", "param": "name"}}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(409, json=conflict)

    with pytest.raises(Exception, match="exists"):
        _mock(handler).deployments.create("d", model="m")
    assert len(calls) == 1


class _LoseFirstAnswer(httpx.HTTPTransport):
    """The network edge: the first POST reaches the server and runs; its answer is lost on the way back."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        if request.method == "POST":
            self.keys.append(request.headers.get("idempotency-key"))
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection lost before the answer arrived", request=request)
        return response


@pytest.mark.e2e
@pytest.mark.slow
def test_a_retried_job_create_runs_once_on_a_real_server(tmp_path):
    env = base_env(tmp_path / "data")
    key = init(env)
    server = start_server(env, tmp_path)
    try:
        with Client(server.base_url, key) as c:
            file_id = c.files.create(io.BytesIO(toy_csv()), filename="t.csv")["id"]
        edge = _LoseFirstAnswer()
        http = httpx.Client(transport=edge, base_url=server.base_url)
        with Client(server.base_url, key, http_client=http) as c:
            job = c.fine_tuning.jobs.create(model="tfidf-linear", training_file=file_id, text_column="text",
                                            label_column="label")
            assert [j["id"] for j in c.fine_tuning.jobs.list()] == [job["id"]]  # one job, not two
            assert len(edge.keys) == 2 and edge.keys[0] == edge.keys[1]
    finally:
        server.stop()
