"""Upload time and the API process's peak memory vs. file size (issue #18 items 4 and 5).

`make bench-upload` (`python -m bench.upload`) starts a real `aiaas serve` (SQLite, file blob store,
encryption at rest), then for each size (10 MB -> 1 GB, CSV and JSONL) writes a synthetic training
file (support-desk sentences, a label, an e-mail address in 1 row of 100), uploads it with httpx
streaming it from disk, and samples the server's RSS (/proc/<pid>/status, every 20 ms):

- upload: from the first byte sent to the answer (status "uploaded": the bytes are in the store,
  encrypted); MB/s = file MB / that time;
- check: from the answer until GET /v1/files/{id} says "processed" (the background check: format,
  limits, PII scan, as a stream);
- peak RSS of the API process during each, and its RSS before the first upload.

The decoded-size limits (AIAAS_MAX_UPLOAD_ROWS, _CELLS, AIAAS_MAX_UPLOAD_BYTES) refuse a 1 GB file by
default; the bench raises them as an operator would (see LIMITS). Results: bench/results/upload.json and
upload.png; the table in bench/README.md. AIAAS_BENCH_UPLOAD_SIZES_MB ("10,100,1024") and
AIAAS_BENCH_UPLOAD_FORMATS ("csv,jsonl") shorten a run; AIAAS_BENCH_UPLOAD_CHECK_TIMEOUT bounds the
wait for each check (seconds, default 1800).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from tests.e2e.server import base_env, init, start_server

RESULTS = Path(__file__).parent / "results"
MB = 1024 * 1024
RSS_TARGET_MB = 512
RATE_TARGET = 50.0  # MB/s for the 1 GB uploads
LIMITS = {
    "AIAAS_MAX_UPLOAD_BYTES": str(1100 * MB),
    "AIAAS_UPLOAD_BYTES_IN_FLIGHT": str(1100 * MB),
    "AIAAS_MAX_UPLOAD_ROWS": "50000000",
    "AIAAS_MAX_UPLOAD_CELLS": "200000000",
    "AIAAS_MAX_DECODED_CHARS": str(8 * 1024 * MB),
    # Every size is checked the same way (stored, answered "uploaded", checked in the background), so the
    # curve compares like with like; by default files up to 16 MB are checked before the answer.
    "AIAAS_UPLOAD_INLINE_BYTES": str(MB),
}
WORDS = ("order delivery refund account password invoice login screen crash slow cancel plan thanks why "
         "broken charged twice payment card shipping late great helpful support").split()


def write_file(path: Path, size: int, fmt: str) -> int:
    """About `size` bytes of rows; a block of distinct rows repeated (generating 1 GB row by row is slow)."""
    rng = random.Random(7)
    rows = []
    for i in range(4000):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18)))
        if i % 100 == 0:
            text += f" reach me at user{i}@example.com"
        label = f"intent_{i % 8}"
        rows.append(f'"{text}",{label}\n' if fmt == "csv" else json.dumps({"text": text, "label": label}) + "\n")
    block = "".join(rows).encode()
    with open(path, "wb") as fh:
        if fmt == "csv":
            fh.write(b"text,label\n")
        written = fh.tell()
        while written + len(block) <= size:
            fh.write(block)
            written += len(block)
        rest = block[: size - written].rsplit(b"\n", 1)[0]
        if rest:
            fh.write(rest + b"\n")
    return path.stat().st_size


class RssSampler:
    """The peak RSS of a process between start() and stop(), sampled every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid, self.every = pid, every
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE).group(1)) * 1024

    def start(self) -> RssSampler:
        self.peak = self.rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.rss())

    def stop(self) -> int:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return max(self.peak, self.rss())


def _chunks(path: Path):
    with open(path, "rb") as fh:
        while chunk := fh.read(MB):
            yield chunk


def upload_one(base_url: str, key: str, pid: int, path: Path, check_timeout: float) -> dict:
    size = path.stat().st_size
    boundary = "benchboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        yield from _chunks(path)
        yield tail

    auth = {"Authorization": f"Bearer {key}"}
    headers = auth | {"Content-Type": f"multipart/form-data; boundary={boundary}",
                      "Content-Length": str(len(head) + size + len(tail))}
    sampler = RssSampler(pid).start()
    start = time.perf_counter()
    r = httpx.post(base_url + "/v1/files", content=body(), headers=headers, timeout=3600)
    upload_s = time.perf_counter() - start
    upload_peak = sampler.stop()
    r.raise_for_status()
    f = r.json()
    sampler = RssSampler(pid).start()
    start = time.perf_counter()
    answered = f["status"]
    while f["status"] == "uploaded" and time.perf_counter() - start < check_timeout:
        time.sleep(0.5)
        f = httpx.get(base_url + f"/v1/files/{f['id']}", headers=auth, timeout=60).json()
    check_s = time.perf_counter() - start
    check_peak = sampler.stop()
    httpx.delete(base_url + f"/v1/files/{f['id']}", headers=auth, timeout=60)
    mb = size / MB
    return {
        "bytes": size, "mb": round(mb, 1), "status": f["status"], "status_details": f.get("status_details"),
        "rows": (f.get("summary") or {}).get("rows"),
        "pii_findings": ((f.get("summary") or {}).get("pii") or {}).get("findings"),
        "upload_s": round(upload_s, 2), "upload_mb_s": round(mb / upload_s, 1),
        "upload_peak_rss_mb": round(upload_peak / MB, 1),
        "answered": answered,
        "check_s": round(check_s, 1) if answered == "uploaded" else None,
        "check_finished": f["status"] != "uploaded",
        "check_mb_s": round(mb / check_s, 2) if answered == "uploaded" and f["status"] == "processed" else None,
        "check_peak_rss_mb": round(check_peak / MB, 1),
    }


def machine() -> dict:
    from aiaas.core.cpu import usable_cores

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    return {"cpu_model": model.group(1).strip() if model else platform.processor(), "cores": usable_cores()}


def targets(runs: list[dict]) -> dict:
    out: dict[str, dict] = {}
    for r in runs:
        if r["mb"] < 1000:
            continue
        fmt = r["format"]
        out[f"upload_1gb_{fmt}_mb_s"] = {"value": r["upload_mb_s"], "target": f">= {RATE_TARGET:g}",
                                        "met": r["upload_mb_s"] >= RATE_TARGET}
        peak = max(r["upload_peak_rss_mb"], r["check_peak_rss_mb"])
        out[f"api_peak_rss_1gb_{fmt}_mb"] = {"value": peak, "target": f"<= {RSS_TARGET_MB}",
                                            "met": peak <= RSS_TARGET_MB}
        out[f"check_1gb_{fmt}_processed"] = {"value": r["status"], "target": "processed",
                                            "met": r["status"] == "processed"}
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    for fmt, marker in (("csv", "o"), ("jsonl", "s")):
        rs = [r for r in runs if r["format"] == fmt]
        if not rs:
            continue
        mbs = [r["mb"] for r in rs]
        left.plot(mbs, [r["upload_s"] for r in rs], marker=marker, label=f"{fmt} upload")
        done = [r for r in rs if r["check_mb_s"] is not None]
        if done:
            left.plot([r["mb"] for r in done], [r["check_s"] for r in done], marker=marker, linestyle="--",
                      label=f"{fmt} check (finished)")
        right.plot(mbs, [max(r["upload_peak_rss_mb"], r["check_peak_rss_mb"]) for r in rs], marker=marker,
                   label=fmt)
    right.axhline(RSS_TARGET_MB, color="red", linewidth=0.8, label="target")
    for ax, title in ((left, "time (s)"), (right, "API peak RSS (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel("file size (MB)")
        ax.set_title(title)
        ax.legend(fontsize=7)
    left.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    sizes = [int(s) for s in os.environ.get("AIAAS_BENCH_UPLOAD_SIZES_MB", "10,100,1024").split(",")]
    formats = os.environ.get("AIAAS_BENCH_UPLOAD_FORMATS", "csv,jsonl").split(",")
    check_timeout = float(os.environ.get("AIAAS_BENCH_UPLOAD_CHECK_TIMEOUT", "1800"))
    started = datetime.now(UTC)
    load_start = os.getloadavg()[0]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-upload-") as tmp_name:
        tmp = Path(tmp_name)
        env = base_env(tmp / "data", **LIMITS)
        key = init(env)
        idle_rss = 0
        for fmt in formats:
            for size_mb in sizes:
                path = tmp / f"train-{size_mb}mb.{fmt}"
                write_file(path, size_mb * MB, fmt)
                # A fresh server per file: its RSS is this file's alone, and a check still running when the
                # wait ends does not slow the next upload down.
                server = start_server(env, tmp, job_workers=0)
                try:
                    idle_rss = max(idle_rss, RssSampler(server.proc.pid).rss())
                    result = {"format": fmt, **upload_one(server.base_url, key, server.proc.pid, path,
                                                          check_timeout)}
                finally:
                    server.stop()
                path.unlink()
                runs.append(result)
                print(json.dumps(result), flush=True)
    out = {
        "run_at": started.isoformat(timespec="seconds"), "machine": machine() | {"load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "note": "The machine was shared with other processes (other builds and tests) during the run.",
        "limits_raised": LIMITS, "idle_rss_mb_max": round(idle_rss / MB, 1), "runs": runs, "targets": targets(runs),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "upload.json").write_text(json.dumps(out, indent=2) + "\n")
    plot(runs, RESULTS / "upload.png")
    print(json.dumps(out["targets"], indent=2))


if __name__ == "__main__":
    main()
