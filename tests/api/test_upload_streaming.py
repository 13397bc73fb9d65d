"""Large uploads stream into the store and are checked in the background: status "uploaded", then
"processed" (summary, PII report, redaction) or "error" (status_details); jobs and batches wait for it."""

from __future__ import annotations

import asyncio

import pytest

from tests.helpers.datasets import toy_csv

EMAIL = "jane.doe@example.com"


@pytest.fixture
def small_inline(settings):
    settings.upload_inline_bytes = 1024  # everything in these tests is larger: checked in the background
    return settings


def big_csv(rows: int = 400, pii_every: int = 0) -> bytes:
    lines = [b"text,label"]
    for i in range(rows):
        text = f"write to {EMAIL} about order {i}" if pii_every and i % pii_every == 0 else f"order {i} is fine"
        lines.append(f"{text},{'positive' if i % 2 else 'negative'}".encode())
    return b"\n".join(lines) + b"\n"


async def upload(client, org, content: bytes, name: str = "big.csv", **data):
    return await client.post("/v1/files", headers=org.headers, files={"file": (name, content)},
                             data={"purpose": "fine-tune", **data})


async def settled(client, org, file_id: str, timeout: float = 60.0) -> dict:
    for _ in range(int(timeout / 0.1)):
        f = (await client.get(f"/v1/files/{file_id}", headers=org.headers)).json()
        if f["status"] != "uploaded":
            return f
        await asyncio.sleep(0.1)
    raise AssertionError(f"{file_id} still 'uploaded' after {timeout}s")


async def test_a_large_upload_is_answered_uploaded_then_processed(small_inline, client, org_a):
    content = big_csv(pii_every=50)
    r = await upload(client, org_a, content)
    assert r.status_code == 200, r.text
    f = r.json()
    assert f["status"] in ("uploaded", "processed") and f["bytes"] == len(content)
    done = await settled(client, org_a, f["id"])
    assert done["status"] == "processed" and done["status_details"] is None
    summary = done["summary"]
    assert summary["format"] == "csv" and summary["rows"] == 400 and summary["columns"] == ["text", "label"]
    assert summary["pii"]["policy"] == "allow" and summary["pii"]["counts"]["email"] == 8
    assert summary["pii"]["kinds"]["email"]["examples"] == [2, 52, 102, 152, 202]
    body = (await client.get(f"/v1/files/{f['id']}/content", headers=org_a.headers)).content
    assert body == content


async def test_a_large_upload_under_redact_keeps_only_the_redacted_copy(small_inline, client, org_a, settings):
    content = big_csv(pii_every=10)
    r = await upload(client, org_a, content, pii_policy="redact")
    assert r.status_code == 200, r.text
    done = await settled(client, org_a, r.json()["id"])
    assert done["status"] == "processed" and done["summary"]["pii"]["redacted"] == 40
    body = (await client.get(f"/v1/files/{done['id']}/content", headers=org_a.headers)).content
    assert EMAIL.encode() not in body and b"[EMAIL]" in body and done["bytes"] == len(body)
    assert done["summary"]["rows"] == 400
    blobs = [p for p in (settings.data_dir / "blobs" / org_a.id).rglob("*") if p.is_file()]
    assert len(blobs) == 1  # the original, PII and all, is gone


async def test_a_bad_large_upload_ends_in_error_with_the_reason(small_inline, client, org_a, settings):
    content = big_csv() + b"one,two,three\n"
    r = await upload(client, org_a, content)
    assert r.status_code == 200, r.text
    done = await settled(client, org_a, r.json()["id"])
    assert done["status"] == "error"
    assert "line 402: expected 2 fields, found 3" in done["status_details"]
    assert done["summary"]["error"]["code"] == "invalid_file"
    assert not [p for p in (settings.data_dir / "blobs" / org_a.id).rglob("*") if p.is_file()]
    r = await client.get(f"/v1/files/{done['id']}/content", headers=org_a.headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "file_not_ready"


async def test_reject_with_pii_in_a_large_upload_ends_in_error(small_inline, client, org_a):
    r = await upload(client, org_a, big_csv(pii_every=100), pii_policy="reject")
    done = await settled(client, org_a, r.json()["id"])
    assert done["status"] == "error" and done["summary"]["error"]["code"] == "pii_detected"
    assert EMAIL not in done["status_details"] and "email: 4" in done["status_details"]


async def test_jobs_and_batches_refuse_a_file_that_is_not_processed(small_inline, client, org_a, app):
    app.state.aiaas.services.file_checks.close()  # nothing checks it: it stays 'uploaded'
    r = await upload(client, org_a, big_csv())
    f = r.json()
    assert f["status"] == "uploaded"
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers,
                          json={"model": "tiny-bert", "training_file": f["id"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "file_not_ready"
    assert r.json()["error"]["param"] == "training_file" and "still being checked" in r.json()["error"]["message"]


async def test_small_uploads_are_still_checked_before_the_answer(client, org_a):
    r = await upload(client, org_a, toy_csv(), name="t.csv")
    assert r.status_code == 200 and r.json()["status"] == "processed" and r.json()["summary"]["rows"] == 40
    r = await upload(client, org_a, b"text,label\nx,y,z\n", name="t.csv")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_file"


@pytest.mark.parametrize("body", [
    b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n--b--\r\n",
    b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nnot a file part\r\n--b--\r\n",
    b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\ntext,label\nx,y\r\n--b",
])
async def test_bad_forms_store_nothing(client, org_a, settings, body):
    r = await client.post("/v1/files", content=body,
                          headers=org_a.headers | {"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "file"
    assert not [p for p in (settings.data_dir / "blobs").rglob("*") if p.is_file()]
