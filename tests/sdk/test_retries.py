"""SDK retries on 429/503 honouring Retry-After, and typed errors rebuilt from the body.

The server side here is an httpx MockTransport standing in for a remote server's
429/503 answers (timing behaviour a real server can't be made to produce on demand).
"""

from __future__ import annotations

import time

import httpx
import pytest

from aiaas.sdk import BadRequestError, Client, RateLimitError


def make_client(responses: list[httpx.Response], calls: list[float], max_retries: int = 3) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        return responses.pop(0)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url="http://x")
    return Client("http://x", "aiaas_sk_test", http_client=http, max_retries=max_retries)


def test_retry_after_honoured():
    calls: list[float] = []
    limited = httpx.Response(429, headers={"retry-after": "0.3"}, json={"error": {"message": "slow", "code": "rate_limit_exceeded"}})
    ok = httpx.Response(200, json={"id": "org-1", "name": "a", "created_at": 0})  # a whole organisation
    c = make_client([limited, ok], calls)
    assert c.organizations.me()["id"] == "org-1"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.29


def test_gives_up_with_typed_error():
    calls: list[float] = []
    body = {"error": {"message": "Too many", "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": None}}
    c = make_client([httpx.Response(429, headers={"retry-after": "0"}, json=body) for _ in range(3)], calls, 2)
    with pytest.raises(RateLimitError) as e:
        c.organizations.me()
    assert len(calls) == 3 and e.value.code == "rate_limit_exceeded" and e.value.status == 429


def test_400_not_retried_and_param_kept():
    calls: list[float] = []
    body = {"error": {"message": "Unknown field 'x'", "type": "invalid_request_error", "code": "validation_error", "param": "x"}}
    c = make_client([httpx.Response(400, json=body, headers={"x-request-id": "req_1"})], calls)
    with pytest.raises(BadRequestError) as e:
        c.api_keys.create("k")
    assert len(calls) == 1 and e.value.param == "x" and e.value.request_id == "req_1"


def test_connection_refused_is_a_typed_error():
    import socket

    from aiaas.sdk import APIConnectionError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nothing listens there
    with Client(f"http://127.0.0.1:{port}", "aiaas_sk_x", max_retries=1) as c, pytest.raises(APIConnectionError):
        c.organizations.me()


def test_should_retry_false_is_not_retried():
    calls: list[float] = []
    body = {"error": {"message": "quota", "type": "rate_limit_error", "code": "quota_exceeded", "param": None}}
    c = make_client([httpx.Response(429, headers={"x-should-retry": "false", "retry-after": "0"}, json=body)],
                    calls)
    with pytest.raises(RateLimitError) as e:
        c.organizations.me()
    assert len(calls) == 1 and e.value.code == "quota_exceeded"
