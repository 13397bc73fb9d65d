"""Every CSV the API emits is safe to open in a spreadsheet (aiaas/security/csv_safe.py).

The one CSV the server writes is a job's results file (purpose `fine-tune-results`,
served by GET /v1/files/{id}/content). A tiny job trains on labels that are formulas
(`=cmd|...`, `+`, `-`, `@`, tab, CR); every cell of its results file that starts with a
trigger must be either a real number or escaped with a leading quote. The results writer
is also fed history records carrying those strings, for the day labels reach it.
An uploaded training file is not an export: its content comes back byte for byte, as an
attachment (OpenAI semantics), which the last test pins down.
"""

from __future__ import annotations

import asyncio
import csv
import io

import pytest

from aiaas.security.csv_safe import FORMULA_TRIGGERS
from tests.helpers.datasets import NEGATIVE, POSITIVE
from tests.hostile.conftest import SQLITE_ONLY, TINY

FORMULA_LABELS = ["=cmd|' /C calc'!A0", "+HYPERLINK(\"http://evil.example\")", "-2+3", "@SUM(A1:A9)"]
HOSTILE_CELLS = FORMULA_LABELS + ["\t=1+1", "\r=1+1", "＝1+1"]


def _training_csv() -> bytes:
    texts = POSITIVE + NEGATIVE
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    for i in range(32):
        w.writerow([f"{texts[i % len(texts)]} {i}", FORMULA_LABELS[i % len(FORMULA_LABELS)]])
    return buf.getvalue().encode()


def unsafe_cells(text: str) -> list[str]:
    """Cells a spreadsheet would evaluate: a trigger first, and not simply a number."""
    bad = []
    for row in csv.reader(io.StringIO(text, newline="")):
        for cell in row:
            if not cell.startswith(FORMULA_TRIGGERS):
                continue
            try:
                float(cell)
            except ValueError:
                bad.append(cell)
    return bad


@SQLITE_ONLY
@pytest.mark.slow
async def test_results_csv_of_a_job_on_formula_labels_is_escaped(client, settings, tiny_base) -> None:
    from aiaas.jobs.worker import Worker

    up = await client.post("/v1/files", files={"file": ("formulas.csv", _training_csv())},
                           data={"purpose": "fine-tune"})
    assert up.status_code == 200, up.text
    resp = await client.post("/v1/fine_tuning/jobs", json={
        "model": TINY, "training_file": up.json()["id"], "seed": 3,
        "hyperparameters": {"n_epochs": 2, "batch_size": 8}})
    assert resp.status_code == 200, resp.text

    def work() -> str | None:
        with Worker(settings) as w:
            return w.run_once()

    assert await asyncio.to_thread(work) == "succeeded"
    job = (await client.get(f"/v1/fine_tuning/jobs/{resp.json()['id']}")).json()
    model = (await client.get(f"/v1/models/{job['fine_tuned_model']}")).json()
    assert model, "the model card is readable"

    # Every CSV the API serves: the results files (listed by purpose) and anything labelled text/csv.
    files = (await client.get("/v1/files", params={"limit": 100})).json()["data"]
    results = [f for f in files if f["purpose"] == "fine-tune-results"]
    assert [f["id"] for f in results] == job["result_files"]
    for f in results:
        assert f["filename"].endswith(".csv")
        content = await client.get(f"/v1/files/{f['id']}/content")
        assert content.status_code == 200
        text = content.content.decode("utf-8")
        rows = list(csv.reader(io.StringIO(text, newline="")))
        assert len(rows) > 1 and rows[0][0] and "step" in rows[0]
        assert unsafe_cells(text) == [], text[:2000]


def test_results_writer_escapes_hostile_history_values() -> None:
    """If a label or any user string reaches the results history, it leaves escaped."""
    from aiaas.jobs.runner import _results_csv

    history = [{"split": cell, "step": i, "loss": -0.5, "label": cell} for i, cell in enumerate(HOSTILE_CELLS)]
    text = _results_csv(history).decode()
    assert unsafe_cells(text) == []
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back[0] == ["split", "step", "loss", "label"]
    for row, cell in zip(back[1:], HOSTILE_CELLS, strict=True):
        assert row[0] == row[3] == "'" + cell
        assert row[2] == "-0.5"  # a real number keeps its sign


@SQLITE_ONLY
async def test_uploaded_file_content_is_returned_verbatim_as_an_attachment(client) -> None:
    data = _training_csv()
    up = await client.post("/v1/files", files={"file": ("formulas.csv", data)}, data={"purpose": "fine-tune"})
    content = await client.get(f"/v1/files/{up.json()['id']}/content")
    assert content.status_code == 200 and content.content == data
    assert content.headers["content-type"] == "application/octet-stream"
    assert content.headers["content-disposition"].startswith("attachment;")
