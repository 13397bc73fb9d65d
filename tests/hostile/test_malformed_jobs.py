"""Malformed files as training files: validation in the worker path (Worker.run_once) must fail a job
with a stable code and a readable message, never an internal error.

A seeded sample of the generator's cases goes through the API: the ones the upload check
accepts become training files as they are; a sample of the ones it refuses is planted
straight into the store (as if accepted by an older server, or damaged at rest), so the
worker's own parsing is what meets them. A few hand-made files that parse but carry
hostile values (lone surrogates, NUL, nested objects, non-finite numbers) join them.
"""

from __future__ import annotations

import asyncio
import io
import json
import random

import httpx
import pytest

from aiaas.core.errors import HTTP_STATUS
from tests.helpers.datasets import toy_rows
from tests.hostile import malformed, payloads
from tests.hostile.conftest import SQLITE_ONLY, TINY
from tests.hostile.test_malformed_uploads import N_CASES, SEED

pytestmark = pytest.mark.slow

ACCEPTED_SAMPLE = 3
REJECTED_SAMPLE = 6
# Families whose cases are an upload of one file (not a broken form), cheap enough to replay.
FILE_FAMILIES = {"truncated", "bitflip", "encoding", "random_bytes", "nul", "quotes", "ragged", "header", "blank",
                 "line_endings", "control", "jsonl_lines", "json_nesting", "bigint", "json_array", "parquet",
                 "foreign"}
HEAVY_TO_PLANT = ("deep_json", "million_digit_jsonl")


def _jsonl(records: list[dict], raw_lines: list[str] | tuple[str, ...] = ()) -> bytes:
    return ("".join(json.dumps(r) + "\n" for r in records) + "".join(line + "\n" for line in raw_lines)).encode()


def _toy_records() -> list[dict]:
    return [{"text": t, "label": lab} for t, lab in toy_rows(10)]


# Parse fine, hostile values inside: what the cleaning, tokenizer and label encoding meet.
HOSTILE_VALUES: dict[str, bytes] = {
    "lone_surrogate_text": _jsonl(_toy_records(), [f'{{"text": "bad \\ud800 {i}", "label": "positive"}}'
                                                   for i in range(6)]),
    "lone_surrogate_label": _jsonl(_toy_records(), [f'{{"text": "odd label {i}", "label": "\\udfff"}}'
                                                    for i in range(6)]),
    "nul_in_text": _jsonl(_toy_records(), [f'{{"text": "a\\u0000b {i}", "label": "negative"}}' for i in range(6)]),
    "object_text": _jsonl(_toy_records() + [{"text": {"nested": [1, {"x": i}]}, "label": "positive"}
                                            for i in range(6)]),
    "mixed_labels": _jsonl([{"text": f"{t} {i}", "label": lab} for i, (t, lab) in enumerate(toy_rows(4))]
                           + [{"text": f"row {i}", "label": v} for i, v in enumerate([[1], {"a": 1}, True, 3.5, None])]),
    "non_finite": _jsonl(_toy_records(), [f'{{"text": "x {i}", "label": {v}}}'
                                          for i, v in enumerate(["NaN", "Infinity", "-Infinity", "1e999"])]),
}


async def _upload(client: httpx.AsyncClient, case: payloads.Case) -> httpx.Response:
    return await client.post("/v1/files", content=case.body,
                             headers={"Content-Type": case.content_type, **case.headers})


def _plant(settings, db, org_id: str, data: bytes, filename: str) -> str:
    """Store a file the upload check never saw, with no summary (so job creation cannot check columns)."""
    from aiaas.core.ids import new_id
    from aiaas.store import files as file_store
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.encrypted import encrypted

    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    file_id = new_id("file")
    stored = blobs.put(f"{org_id}/files/{file_id}", io.BytesIO(data))
    with db.session() as s:
        file_store.add_file(s, file_id=file_id, org_id=org_id, filename=filename, purpose="fine-tune",
                            size=stored.size, sha256=stored.sha256, storage_uri=stored.uri, summary={})
    return file_id


async def _run_job(client: httpx.AsyncClient, settings, file_id: str, what: str) -> str | None:
    """Create a job on the file and let one worker run it; returns a problem or None."""
    from aiaas.jobs.worker import Worker

    resp = await client.post("/v1/fine_tuning/jobs", json={
        "model": TINY, "training_file": file_id, "hyperparameters": {"n_epochs": 1, "batch_size": 32}, "seed": 1})
    if resp.status_code >= 500:
        return f"{what}: job creation -> {resp.status_code}"
    if resp.status_code != 200:
        code = resp.json()["error"]["code"]
        return None if code in HTTP_STATUS and code != "internal_error" else f"{what}: job creation -> {code}"
    job_id = resp.json()["id"]

    def work() -> str | None:
        with Worker(settings) as w:
            return w.run_once()

    status = await asyncio.to_thread(work)
    got = await client.get(f"/v1/fine_tuning/jobs/{job_id}")
    if got.status_code != 200:
        return f"{what}: worker returned {status!r}, then GET /v1/fine_tuning/jobs/{{id}} -> {got.status_code}"
    job = got.json()
    if status not in ("failed", "succeeded") or job["status"] != status:
        return f"{what}: worker returned {status!r}, job is {job['status']!r}"
    if status == "failed":
        err = job.get("error") or {}
        if err.get("code") not in HTTP_STATUS or err.get("code") == "internal_error":
            return f"{what}: job failed with {err.get('code')!r}: {str(err.get('message'))[:200]}"
        if not err.get("message") or "Traceback" in err["message"]:
            return f"{what}: unhelpful job error {err!r}"[:300]
    return None


@SQLITE_ONLY  # the upload campaign runs on both backends; here the subject is the worker's parsing
async def test_malformed_training_files_fail_jobs_cleanly(client, settings, db, admin, tiny_base) -> None:
    rng = random.Random(SEED)
    recipes = [r for r in malformed.recipes(SEED, N_CASES) if r[0] in FILE_FAMILIES]
    rng.shuffle(recipes)
    recipes += [(f"heavy:{name}", rng.randrange(2**32)) for name in HEAVY_TO_PLANT]
    accepted: list[tuple[str, str]] = []
    rejected: list[tuple[str, payloads.Case]] = []
    for recipe in recipes:
        heavy = recipe[0].startswith("heavy:")
        if len(accepted) >= ACCEPTED_SAMPLE and len(rejected) >= REJECTED_SAMPLE and not heavy:
            continue
        case = malformed.build(recipe, -1)
        resp = await _upload(client, case)
        if resp.status_code == 200 and len(accepted) < ACCEPTED_SAMPLE:
            accepted.append((resp.json()["id"], case.describe()))
        elif resp.status_code != 200 and case.file_bytes is not None and (heavy or len(rejected) < REJECTED_SAMPLE):
            rejected.append((case.describe(), case))
    assert len(accepted) == ACCEPTED_SAMPLE and len(rejected) >= REJECTED_SAMPLE

    problems = []
    for file_id, what in accepted:
        problems.append(await _run_job(client, settings, file_id, f"accepted {what}"))
    for what, case in rejected:
        file_id = _plant(settings, db, admin.org_id, case.file_bytes, case.filename or "train.csv")
        problems.append(await _run_job(client, settings, file_id, f"planted {what}"))
    for name, data in HOSTILE_VALUES.items():
        up = await client.post("/v1/files", files={"file": (f"{name}.jsonl", data)}, data={"purpose": "fine-tune"})
        file_id = up.json()["id"] if up.status_code == 200 else _plant(settings, db, admin.org_id, data, f"{name}.jsonl")
        problems.append(await _run_job(client, settings, file_id, f"hostile values {name} (upload {up.status_code})"))
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)
