"""Concurrent uploads are bounded by bytes in flight (AIAAS_UPLOAD_BYTES_IN_FLIGHT), not by count."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.datasets import toy_csv

BOUNDARY = "budgetboundary"


def _body(content: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"t.csv\"\r\n\r\n").encode() \
        + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def _padded(size: int) -> bytes:
    """A valid CSV of about `size` bytes."""
    rows = b"".join(b"padding row %d,%d\n" % (i, i % 2) for i in range(size // 18 + 1))
    return (toy_csv() + rows)[:size].rsplit(b"\n", 1)[0] + b"\n"


def _headers(org, body: bytes) -> dict[str, str]:
    return org.headers | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                          "Content-Length": str(len(body))}


@pytest.fixture
def budget(settings):
    settings.upload_bytes_in_flight = 100_000
    return settings.upload_bytes_in_flight


async def test_an_upload_that_does_not_fit_gets_503_with_retry_after(budget, client, org_a):
    held = _body(_padded(70_000))
    other = _body(_padded(40_000))
    release = asyncio.Event()

    async def slow():  # the first upload sends half its body, then waits: its bytes stay in flight
        yield held[: len(held) // 2]
        await release.wait()
        yield held[len(held) // 2:]

    first = asyncio.create_task(client.post("/v1/files", headers=_headers(org_a, held), content=slow()))
    await asyncio.sleep(0.3)
    refused = await client.post("/v1/files", headers=_headers(org_a, other), content=other)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "upload_capacity" and refused.headers["retry-after"] == "1"
    small = _body(_padded(20_000))  # what still fits is let in: the bound is bytes, not uploads
    assert (await client.post("/v1/files", headers=_headers(org_a, small), content=small)).status_code == 200
    release.set()
    assert (await first).status_code == 200
    # The first upload's bytes were given back: the refused one fits now.
    assert (await client.post("/v1/files", headers=_headers(org_a, other), content=other)).status_code == 200


async def test_a_lone_upload_larger_than_the_budget_still_runs(budget, client, org_a):
    body = _body(_padded(150_000))
    r = await client.post("/v1/files", headers=_headers(org_a, body), content=body)
    assert r.status_code == 200, r.text
