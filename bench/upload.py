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
wait for each check (seconds, default 1800). A shortened run replaces only the rows it ran (`merged`):
each row says when it was run (run_at) and the 1-minute load average when its upload started.

Then a worker's data step (`prepare`): prepare_dataset and the PII policy on the same file, in a fresh
process whose peak RSS (VmHWM) is recorded; AIAAS_BENCH_UPLOAD_PREPARE_MAX_MB (default 1024) skips it for
larger files, and the 1 GB target then says so with the line through the two largest sizes measured.
`python -m bench.upload prepare-runs` runs the prepare phase alone (no server), optionally against another
checkout on the same file for a before/after (see record_prepare).
"""

from __future__ import annotations

import json
import os
import platform
import random
import re
import subprocess
import sys
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
            try:
                self.peak = max(self.peak, self.rss())
            except (OSError, AttributeError):  # the process ended
                return

    def stop(self) -> int:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return max(self.peak, self.rss())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    start = time.perf_counter()
    r = httpx.post(base_url + "/v1/files", content=body(), headers=headers, timeout=3600)
    upload_s = time.perf_counter() - start
    upload_cpu, client_cpu = cpu_seconds(pid) - cpu_before, time.process_time() - client_before
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
        # CPU the API process spent on the upload (all its threads): what the load average does not change.
        "upload_api_cpu_s": round(upload_cpu, 2), "upload_api_cpu_mb_s": round(mb / max(upload_cpu, 1e-9), 1),
        "upload_client_cpu_s": round(client_cpu, 2),
        "answered": answered,
        "check_s": round(check_s, 1) if answered == "uploaded" else None,
        "check_finished": f["status"] != "uploaded",
        "check_mb_s": round(mb / check_s, 2) if answered == "uploaded" and f["status"] == "processed" else None,
        "check_peak_rss_mb": round(check_peak / MB, 1),
    }


PREPARE_RSS_TARGET_MB = 2048
PREPARE_RSS_KILL_MB = 6144  # a shared machine: a prepare past this is stopped (and reported as over it)


def prepare_child(path: Path) -> None:
    """`python -m bench.upload prepare FILE`: a worker's data step on the file (prepare_dataset: read, clean,
    dedupe, split; then the job's PII policy over the training texts, as jobs/runner.py does), with the
    bench's raised limits. Token statistics (a tokenizer pass) are not included. Prints a JSON line."""
    from aiaas.data import prepare_dataset
    from aiaas.data.limits import ReadLimits
    from aiaas.data.pii import apply_pii_policy

    limits = ReadLimits(max_rows=int(LIMITS["AIAAS_MAX_UPLOAD_ROWS"]), max_cells=int(LIMITS["AIAAS_MAX_UPLOAD_CELLS"]),
                        max_decoded_chars=int(LIMITS["AIAAS_MAX_DECODED_CHARS"]))
    start = time.perf_counter()
    data = prepare_dataset(path, train_filename=path.name, limits=limits)
    apply_pii_policy([e.text for e in data.train], "allow")
    hwm = int(re.search(r"^VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE).group(1))
    print(json.dumps({"prepare_s": round(time.perf_counter() - start, 1), "train_rows": len(data.train),
                      "prepare_peak_rss_mb": round(hwm / 1024, 1)}), flush=True)


def prepare_one(path: Path, timeout: float, root: Path | None = None) -> dict:
    """Run prepare_child in a fresh process; its peak RSS (VmHWM), or how it ended when it did not finish.
    `root`: the checkout whose code runs (this one when None; another commit's for a before/after)."""
    root = root or Path(__file__).parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "bench.upload", "prepare", str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=root, env=os.environ | {"PYTHONPATH": str(root)})
    sampler = RssSampler(proc.pid).start()
    start = time.perf_counter()
    ended = "finished"
    while proc.poll() is None:
        time.sleep(0.1)
        if sampler.peak > PREPARE_RSS_KILL_MB * MB or time.perf_counter() - start > timeout:
            ended = "stopped above %d MB" % PREPARE_RSS_KILL_MB if sampler.peak > PREPARE_RSS_KILL_MB * MB \
                else f"stopped after {timeout:.0f} s"
            proc.kill()
    out = proc.communicate()[0]
    peak = sampler.peak
    sampler._stop.set()
    result = {"prepare_ended": ended if proc.returncode == 0 or ended != "finished" else f"exit {proc.returncode}",
              "prepare_sampled_peak_rss_mb": round(peak / MB, 1)}
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if lines and result["prepare_ended"] == "finished":
        result |= json.loads(lines[-1])
    return result


def record_prepare() -> None:
    """`python -m bench.upload prepare-runs`: the prepare phase alone for each size and format (no server),
    with AIAAS_BENCH_UPLOAD_PREPARE_BASELINE (another checkout, e.g. `git worktree add /tmp/old HEAD~1`) also
    run on the same file right before, so before/after share the load. Updates bench/results/upload.json."""
    sizes = [int(s) for s in os.environ.get("AIAAS_BENCH_UPLOAD_SIZES_MB", "10,100").split(",")]
    formats = os.environ.get("AIAAS_BENCH_UPLOAD_FORMATS", "csv,jsonl").split(",")
    baseline = os.environ.get("AIAAS_BENCH_UPLOAD_PREPARE_BASELINE")
    timeout = float(os.environ.get("AIAAS_BENCH_UPLOAD_PREPARE_TIMEOUT", "1800"))
    started, load_start, runs = datetime.now(UTC), os.getloadavg()[0], []
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-prepare-") as tmp:
        for fmt in formats:
            for size_mb in sizes:
                path = Path(tmp) / f"train-{size_mb}mb.{fmt}"
                run = {"format": fmt, "mb": round(write_file(path, size_mb * MB, fmt) / MB, 1),
                       "load_average": os.getloadavg()[0]}
                if baseline:
                    run["before"] = prepare_one(path, timeout, Path(baseline))
                run["after"] = prepare_one(path, timeout)
                path.unlink()
                runs.append(run)
                print(json.dumps(run), flush=True)
    path = RESULTS / "upload.json"
    doc = json.loads(path.read_text()) if path.exists() else {"runs": []}
    doc.setdefault("prepare_runs", []).append({
        "run_at": started.isoformat(timespec="seconds"), "baseline": baseline,
        "machine": machine() | {"load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "runs": runs})
    for run in runs:  # the latest prepare figures go with the upload run of the same file
        for r in doc["runs"]:
            if r["format"] == run["format"] and abs(r["mb"] - run["mb"]) < 1:
                for k in [k for k in r if k.startswith("prepare")]:
                    del r[k]
                r.update(run["after"])
    doc["targets"] = {k: v for k, v in doc.get("targets", {}).items() if not k.startswith("prepare")} | {
        k: v for k, v in targets(doc["runs"]).items() if k.startswith("prepare")}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _cpu_rate(mb: float, run) -> float:
    start = time.process_time()
    run()
    return round(mb / max(time.process_time() - start, 1e-9), 1)


def stages(tmp: Path) -> dict:
    """CPU MB/s of each stage alone (CPU seconds, so a loaded machine changes them less than wall time):
    the multipart parser fed 64 KB and 1 MB writes, SHA-256, AES-GCM, a copy, a file write, and the
    check's record-by-record pass against the bulk pass on the same 20 MB file."""
    import hashlib

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from python_multipart.multipart import MultipartParser

    from aiaas.data import bulk_check, streaming
    from aiaas.data.limits import Budget, ReadLimits

    data = os.urandom(64 * MB)
    head = b'--bb\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
    body = head + data + b"\r\n--bb--\r\n"

    def multipart(piece: int):
        def run() -> None:
            parser = MultipartParser(b"bb", {"on_part_data": lambda d, s, e: None})
            for i in range(0, len(body), piece):
                parser.write(body[i:i + piece])
            parser.finalize()
        return run

    aes = AESGCM(os.urandom(32))
    pieces = [data[i:i + MB] for i in range(0, len(data), MB)]
    out: dict[str, float] = {
        "multipart_64kb_writes": _cpu_rate(64, multipart(64 * 1024)),
        "multipart_1mb_writes": _cpu_rate(64, multipart(MB)),
        "sha256": _cpu_rate(64, lambda: [hashlib.sha256(p).digest() for p in pieces]),
        "aes_gcm": _cpu_rate(64, lambda: [aes.encrypt(b"n" * 12, p, b"aad") for p in pieces]),
        "copy": _cpu_rate(64, lambda: [bytes(memoryview(p)) for p in pieces]),
    }
    with open(tmp / "stage-write", "wb") as fh:
        out["file_write"] = _cpu_rate(64, lambda: [fh.write(p) for p in pieces])
    limits = ReadLimits(max_rows=int(LIMITS["AIAAS_MAX_UPLOAD_ROWS"]), max_cells=int(LIMITS["AIAAS_MAX_UPLOAD_CELLS"]),
                        max_decoded_chars=int(LIMITS["AIAAS_MAX_DECODED_CHARS"]))
    for fmt in ("csv", "jsonl"):
        path = tmp / f"stage.{fmt}"
        write_file(path, 20 * MB, fmt)

        def source(path: Path = path):
            return _chunks(path)

        detected = streaming.detect_source(source, filename=path.name)
        budget = lambda: Budget(limits, path.stat().st_size, "file")  # noqa: E731

        def record_pass(fmt: str = fmt) -> None:
            with streaming._text(source, "utf-8") as fh:
                if fmt == "csv":
                    streaming._csv_pass(fh, detected, "file", budget(), True)
                else:
                    streaming._jsonl_pass(fh, "file", budget(), True)

        def bulk_pass(fmt: str = fmt) -> None:
            if fmt == "csv":
                bulk_check.csv_pass(source, "utf-8", detected, "file", budget(), True)
            else:
                bulk_check.jsonl_pass(source, "utf-8", "file", budget(), True)

        out[f"check_{fmt}_record_pass"] = _cpu_rate(20, record_pass)
        out[f"check_{fmt}_bulk_pass"] = _cpu_rate(20, bulk_pass)
    return out


def record_stages() -> None:
    """`python -m bench.upload stages`: the stages alone, added to bench/results/upload.json."""
    with tempfile.TemporaryDirectory(prefix="aiaas-bench-stages-") as tmp:
        result = {"load_average_start": os.getloadavg()[0], **stages(Path(tmp)),
                  "load_average_end": os.getloadavg()[0]}
    path = RESULTS / "upload.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc["stages_alone_cpu_mb_s"] = result
    doc.setdefault("machine", {})["cpu_flags"] = machine()["cpu_flags"]
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def machine() -> dict:
    from aiaas.core.cpu import usable_cores

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", info, re.MULTILINE)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.MULTILINE)
    wanted = ("aes", "sha_ni", "avx2", "avx512f", "pclmulqdq")
    return {"cpu_model": model.group(1).strip() if model else platform.processor(), "cores": usable_cores(),
            "cpu_flags": [f for f in wanted if flags and f in flags.group(1).split()]}


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
        if "prepare_ended" in r:
            value = r.get("prepare_peak_rss_mb", r["prepare_ended"])
            out[f"prepare_1gb_{fmt}_peak_rss_mb"] = {
                "value": value, "target": f"<= {PREPARE_RSS_TARGET_MB}",
                "met": isinstance(value, float) and value <= PREPARE_RSS_TARGET_MB}
    for fmt in {r["format"] for r in runs}:
        name = f"prepare_1gb_{fmt}_peak_rss_mb"
        measured = sorted((r["mb"], r["prepare_peak_rss_mb"]) for r in runs
                          if r["format"] == fmt and "prepare_peak_rss_mb" in r)
        if name not in out and len(measured) >= 2:
            # Not run at 1 GB (AIAAS_BENCH_UPLOAD_PREPARE_MAX_MB): the line through the two largest sizes run.
            (m0, p0), (m1, p1) = measured[-2:]
            estimate = p1 + (p1 - p0) / (m1 - m0) * (1024 - m1)
            out[name] = {"value": f"not run; ~{estimate:.0f} extrapolated from {m0:g} and {m1:g} MB",
                         "target": f"<= {PREPARE_RSS_TARGET_MB}", "met": False}
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


def merged(runs: list[dict], head: dict) -> dict:
    """bench/results/upload.json with this run's rows in place of the rows of the same format and size; the
    rows of sizes or formats not run this time stay, each with the run_at of the run that made it. A row
    whose prepare phase was skipped this time (AIAAS_BENCH_UPLOAD_PREPARE_MAX_MB) keeps the prepare figures
    of the row it replaces, with prepare_run_at saying when they were measured. Other sections (stages,
    prepare_runs) stay as they were."""
    path = RESULTS / "upload.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old_rows = {(r["format"], round(r["mb"])): r for r in old.get("runs", [])}
    rows: dict[tuple[str, int], dict] = {}
    for k, r in old_rows.items():
        rows[k] = {"run_at": old.get("run_at")} | r if "run_at" not in r else r
    for r in runs:
        k = (r["format"], round(r["mb"]))
        before = rows.get(k, {})
        r = {"run_at": head["run_at"]} | r
        if "prepare_ended" not in r and "prepare_ended" in before:
            r |= {"prepare_run_at": before.get("prepare_run_at", before.get("run_at"))}
            r |= {k2: v for k2, v in before.items() if k2.startswith("prepare") and k2 != "prepare_run_at"}
        rows[k] = r
    ordered = sorted(rows.values(), key=lambda r: (r["format"] != "csv", r["format"], r["mb"]))
    doc = {k: v for k, v in old.items() if k not in head and k not in ("runs", "targets")} | head
    return doc | {"runs": ordered, "targets": targets(ordered)}


def main() -> None:
    sizes = [int(s) for s in os.environ.get("AIAAS_BENCH_UPLOAD_SIZES_MB", "10,100,1024").split(",")]
    formats = os.environ.get("AIAAS_BENCH_UPLOAD_FORMATS", "csv,jsonl").split(",")
    check_timeout = float(os.environ.get("AIAAS_BENCH_UPLOAD_CHECK_TIMEOUT", "1800"))
    prepare_max_mb = int(os.environ.get("AIAAS_BENCH_UPLOAD_PREPARE_MAX_MB", "1024"))
    prepare_timeout = float(os.environ.get("AIAAS_BENCH_UPLOAD_PREPARE_TIMEOUT", "1800"))
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
                    result = {"format": fmt, "load_average": round(os.getloadavg()[0], 1),
                              **upload_one(server.base_url, key, server.proc.pid, path, check_timeout)}
                finally:
                    server.stop()
                if size_mb <= prepare_max_mb:
                    result |= prepare_one(path, prepare_timeout)
                path.unlink()
                runs.append(result)
                print(json.dumps(result), flush=True)
    out = merged(runs, {
        "run_at": started.isoformat(timespec="seconds"), "machine": machine() | {"load_average_start": load_start, "load_average_end": os.getloadavg()[0]},
        "note": "The machine was shared with other processes (other builds and tests) during the run.",
        "limits_raised": LIMITS, "idle_rss_mb_max": round(idle_rss / MB, 1),
    })
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "upload.json").write_text(json.dumps(out, indent=2) + "\n")
    runs = out["runs"]
    plot(runs, RESULTS / "upload.png")
    print(json.dumps(out["targets"], indent=2))


if __name__ == "__main__":
    if sys.argv[1:2] == ["prepare"]:
        prepare_child(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["prepare-runs"]:
        record_prepare()
    elif sys.argv[1:2] == ["stages"]:
        record_stages()
    else:
        main()
