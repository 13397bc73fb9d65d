"""The data report drawn on a file's page: read from the first part of the stored file (decrypted as
it streams), so it costs the same for a 1 MB file and a 1 GB one. A job's own report (aiaas.data)
covers the whole file once it trains."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from typing import Any

from aiaas.ui.render import bar_rows, histogram

SAMPLE_BYTES = 1024 * 1024
PREVIEW_ROWS = 8


def _read_head(chunks: Any, limit: int) -> tuple[bytes, bool]:
    buf = bytearray()
    truncated = False
    for chunk in chunks:
        buf += chunk
        if len(buf) >= limit:
            truncated = True
            break
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
    return bytes(buf[:limit]), truncated


def _rows(head: bytes, fmt: str, truncated: bool) -> tuple[list[str], list[dict[str, Any]]]:
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    if truncated:  # the last line may be cut short
        text = text[: text.rfind("\n") + 1]
    if fmt == "jsonl":
        rows = []
        for line in text.splitlines():
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
        columns = list(rows[0]) if rows else []
        return columns, rows
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def file_report(row: Any, chunks: Any, *, text_column: str | None, label_column: str | None) -> dict[str, Any]:
    summary = row.summary or {}
    fmt = summary.get("format", "csv")
    report: dict[str, Any] = {"format": fmt, "pii": summary.get("pii") or {}, "columns": summary.get("columns") or []}
    if fmt not in ("csv", "jsonl"):
        report["unavailable"] = f"A preview of {fmt} files is not drawn here; a job's data report covers them."
        return report
    head, truncated = _read_head(chunks, SAMPLE_BYTES)
    columns, rows = _rows(head, fmt, truncated)
    text_col = text_column if text_column in columns else ("text" if "text" in columns else
                                                          (columns[0] if columns else None))
    label_col = label_column if label_column in columns else (
        "label" if "label" in columns else (columns[1] if len(columns) > 1 else None))
    dropped: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    lengths = []
    seen = set()
    for r in rows:
        text = r.get(text_col) if text_col else None
        label = r.get(label_col) if label_col else None
        if text is None or str(text).strip() == "":
            dropped["missing_text"] += 1
            continue
        if label is None or str(label).strip() == "":
            dropped["missing_label"] += 1
            continue
        key = (str(text).strip(), str(label))
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        labels[str(label).strip()] += 1
        lengths.append(float(len(str(text))))
    report.update(
        sampled_rows=len(rows), truncated=truncated, text_column=text_col, label_column=label_col,
        preview_columns=columns, preview=[[str(r.get(c, "")) for c in columns] for r in rows[:PREVIEW_ROWS]],
        labels=bar_rows(dict(labels.most_common(30))), more_labels=max(0, len(labels) - 30),
        lengths=histogram(lengths), dropped=bar_rows({k: dropped.get(k, 0) for k in
                                                      ("missing_text", "missing_label", "duplicate")}),
    )
    return report
