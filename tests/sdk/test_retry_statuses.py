"""Which answers the SDK retries (408, 429, 5xx, connection errors), which it does not, and how long
it waits (Retry-After in seconds or as an HTTP date). An httpx MockTransport stands in for the server:
a real one cannot be made to answer 502 or 408 on demand."""

from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import pytest

from aiaas.sdk import APIError, AsyncClient, Client

ORG = {"id": "org-1", "name": "a", "created_at": 0}
JOB = {"id": "ftjob-1", "created_at": 0, "status": "queued", "model": "tfidf-linear", "training_file": "file-1"}


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, headers={"retry-after": "0"},
                          json={"error": {"message": code, "type": "server_error", "code": code, "param": None}})


class Script:
    """Answers in order; records each request's method, time and Idempotency-Key."""

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, float, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.method, time.monotonic(), request.headers.get("idempotency-key")))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _client(script: Script) -> Client:
    http = httpx.Client(transport=httpx.MockTransport(script), base_url="http://x")
    return Client("http://x", "aiaas_sk_test", http_client=http, max_retries=3)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_a_get_is_retried_on(status: int) -> None:
    script = Script([_error(status, "unavailable"), httpx.Response(200, json=ORG)])
    assert _client(script).organizations.me().id == "org-1"
    assert len(script.seen) == 2


@pytest.mark.parametrize("status", [500, 502, 504, 408])
def test_a_post_is_retried_on_5xx_with_its_key(status: int) -> None:
    script = Script([_error(status, "internal_error"), _error(502, "bad_gateway"), httpx.Response(200, json=JOB)])
    assert _client(script).fine_tuning.jobs.create(model="tfidf-linear", training_file="file-1").id == "ftjob-1"
    keys = [key for _m, _t, key in script.seen]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1


def test_a_patch_is_not_repeated_after_a_502_but_is_after_a_503() -> None:
    """A PATCH carries no key: after a 502 it may have run, so sending it again could apply it twice."""
    script = Script([_error(502, "bad_gateway")])
    with pytest.raises(APIError) as e:
        _client(script).registered_models.update_deployment("support", min_replicas=1)
    assert e.value.status == 502 and len(script.seen) == 1
    script = Script([_error(503, "unavailable"), httpx.Response(200, json={"name": "support"})])
    _client(script).registered_models.update_deployment("support", min_replicas=1)
    assert len(script.seen) == 2


def test_4xx_other_than_408_and_429_are_not_retried() -> None:
    for status, code in [(400, "validation_error"), (404, "not_found"), (409, "conflict"), (422, "x")]:
        script = Script([_error(status, code)])
        with pytest.raises(APIError):
            _client(script).organizations.me()
        assert len(script.seen) == 1, status


def test_retry_after_as_an_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1 to 2 s
    busy = httpx.Response(503, headers={"retry-after": when},
                          json={"error": {"message": "busy", "type": "server_error", "code": "unavailable"}})
    script = Script([busy, httpx.Response(200, json=ORG)])
    _client(script).organizations.me()
    waited = script.seen[1][1] - script.seen[0][1]
    assert 0.9 <= waited <= 3.0, waited


def test_retry_after_ms_wins_and_a_past_date_means_now() -> None:
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    answers = [httpx.Response(429, headers={"retry-after-ms": "250", "retry-after": "30"}, json={}),
               httpx.Response(429, headers={"retry-after": past}, json={}), httpx.Response(200, json=ORG)]
    script = Script(answers)
    _client(script).organizations.me()
    t = [seen[1] for seen in script.seen]
    assert 0.24 <= t[1] - t[0] < 2.0 and t[2] - t[1] < 0.5


def test_connection_errors_are_retried_then_reported() -> None:
    from aiaas.sdk import APIConnectionError

    script = Script([httpx.ConnectError("refused"), httpx.Response(200, json=ORG)])
    assert _client(script).organizations.me().id == "org-1"
    script = Script([httpx.ReadTimeout("slow")] * 4)
    with pytest.raises(APIConnectionError):
        _client(script).organizations.me()
    assert len(script.seen) == 4  # the first try and max_retries=3 more


def test_the_async_client_retries_the_same_way() -> None:
    script = Script([_error(504, "timeout"), httpx.ConnectError("reset"), httpx.Response(200, json=JOB)])

    async def main() -> str:
        http = httpx.AsyncClient(transport=httpx.MockTransport(script), base_url="http://x")
        async with AsyncClient("http://x", "aiaas_sk_test", http_client=http, max_retries=3) as c:
            job = await c.fine_tuning.jobs.create(model="tfidf-linear", training_file="file-1")
            return job.id

    assert asyncio.run(main()) == "ftjob-1"
    keys = {key for _m, _t, key in script.seen}
    assert len(script.seen) == 3 and len(keys) == 1 and None not in keys
