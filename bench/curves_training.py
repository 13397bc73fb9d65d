"""One point of the training cost curve: a real fine-tuning job of N rows, as the platform runs it.

    python -m bench.curves_training OUT.json --rows 10000 --model tfidf-linear
    python -m bench.curves_training OUT.json --rows 1000 --model minilm-l6 --epochs 1

The path is the production one: `aiaas init`, `aiaas serve --job-workers 0`, the CSV uploaded through
`POST /v1/files` (and checked by the server, status "processed"), the job created through
`POST /v1/fine_tuning/jobs`; then the server is stopped (so it spends no CPU during the measurement) and
this process runs the training worker on the same data directory: `Worker.run_job_once()` claims the job
and runs `aiaas.jobs.runner.run_job` exactly as `aiaas worker` does. The worker's three phases are timed
by wrapping the runner's own functions (nothing else changes):

    prepare   runner._prepare: decrypt the upload, parse, clean, split, PII policy, token statistics
    train     families.train_family: the family's training (incl. calibration for a transformer)
    export    runner._finish: ONNX export (transformer), encrypted artifact upload, registration, results

For tfidf-linear, `tfidf_phases` splits prepare's token statistics and train into the family's own
steps (wall and process CPU seconds each): token_stats, featurize, search, refit, calibrate, save.

`wall_s` is run_job_once() from claim to the job's final state (the phases plus claim, lease and
bookkeeping). The data is bench/serving/sentences.py's seeded 6-topic support sentences (the first N of
one draw, so each size is a prefix of the next); 10% of them are the job's validation split (the
platform's default when no validation file is given).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from bench.serving import aiaas_setup, procs, sentences

DATA_SEED = 11


def _csv(rows: int) -> bytes:
    texts, labels = sentences.generate(rows, seed=DATA_SEED)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "label"])
    writer.writerows(zip(texts, labels, strict=True))
    return out.getvalue().encode()


def _wait_processed(client: httpx.Client, file_id: str, timeout: float = 1800) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/files/{file_id}").json()
        if body["status"] != "uploaded":
            if body["status"] != "processed":
                raise RuntimeError(f"file check ended {body['status']}: {body}")
            return body
        time.sleep(0.5)
    raise RuntimeError(f"file {file_id} not processed after {timeout:.0f} s")


def _submit(env: dict[str, str], work: Path, data: bytes, model: str, epochs: int | None) -> dict:
    """Server up, upload + check + job creation through the public API, server down."""
    admin_key = aiaas_setup._init(env)
    port = procs.free_port()
    server = procs.start("aiaas", ["-m", "aiaas.cli.main", "serve", "--port", str(port), "--job-workers", "0"],
                         env=env, log_dir=work, port=port)
    try:
        procs.wait_healthy(server, "/readyz")
        headers = {"Authorization": f"Bearer {admin_key}"}
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=600) as client:
            t0 = time.perf_counter()
            r = client.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("train.csv", data)})
            r.raise_for_status()
            upload_s = time.perf_counter() - t0
            _wait_processed(client, r.json()["id"])
            check_s = time.perf_counter() - t0 - upload_s
            body: dict[str, Any] = {"model": model, "training_file": r.json()["id"], "seed": 0}
            if epochs is not None:
                body["hyperparameters"] = {"n_epochs": epochs}
            job = client.post("/v1/fine_tuning/jobs", json=body)
            job.raise_for_status()
        return {"job_id": job.json()["id"], "upload_s": round(upload_s, 2), "file_check_s": round(check_s, 2),
                "admin_key": admin_key}
    finally:
        server.stop()


def _timed(phases: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t0

    return wrapper


def _timed_cpu(table: dict[str, dict[str, float]], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like _timed, with the process's CPU seconds too (all its threads: the lease's heartbeat is idle)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            row = table.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            row["wall_s"] += time.perf_counter() - t0
            row["cpu_s"] += time.process_time() - c0

    return wrapper


def _wrap_tfidf_phases(table: dict[str, dict[str, float]]) -> None:
    """tfidf-linear's own phases inside prepare and train (wrapping its functions; nothing else changes):
    token_stats (runner: tokenizer + encoding, kept for training), featurize, search (<= SEARCH_SAMPLE_ROWS
    rows), refit (all rows), calibrate (out-of-fold heads + fit), save."""
    from aiaas.jobs import runner
    from aiaas.training import classical, classical_train

    runner.token_stats = _timed_cpu(table, "token_stats", runner.token_stats)  # type: ignore[assignment]
    for name in ("_featurize", "_search", "_refit", "_calibrate"):
        setattr(classical_train, name, _timed_cpu(table, name.lstrip("_"), getattr(classical_train, name)))
    save = _timed_cpu(table, "save", classical.ClassicalModel.save)
    classical.ClassicalModel.save = save  # type: ignore[method-assign]


def _search_facts(events: Any) -> dict:
    """What the job's events say about its work: how many validation fits (tfidf-linear: one per head
    tried; transformer: one per evaluation) and whether tfidf-linear's search stopped at its time budget."""
    fits = [e for e in events if e.type == "metrics" and (e.data or {}).get("split") == "validation"]
    stopped = [e.message for e in events if "search stopped" in (e.message or "")]
    fit_s = [float(e.data["fit_seconds"]) for e in fits if "fit_seconds" in (e.data or {})]
    return {"validation_fits": len(fits), "fit_seconds_total": round(sum(fit_s), 2) if fit_s else None,
            "stopped_at_budget": stopped[0] if stopped else None}


def _cpu() -> float:
    """CPU seconds of this process (all threads) and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _run_worker(job_id: str) -> dict:
    """`aiaas worker`'s loop body once, in this process, with the runner's phases timed."""
    from aiaas.core.settings import Settings
    from aiaas.jobs import runner
    from aiaas.jobs.worker import Worker
    from aiaas.store.db import Database
    from aiaas.store.models import FineTuningJob, JobEvent
    from aiaas.training import families

    phases: dict[str, float] = {}
    runner._prepare = _timed(phases, "prepare", runner._prepare)  # type: ignore[assignment]
    families.train_family = _timed(phases, "train", families.train_family)  # type: ignore[assignment]
    runner._finish = _timed(phases, "export", runner._finish)  # type: ignore[assignment]
    tfidf_phases: dict[str, dict[str, float]] = {}
    _wrap_tfidf_phases(tfidf_phases)
    settings = Settings()
    cpu0 = _cpu()
    with Worker(settings) as worker:
        t0 = time.perf_counter()
        claimed, status = worker.run_job_once()
        wall = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    db = Database(settings.sqlalchemy_url)
    try:
        with db.session() as s:
            job = s.get(FineTuningJob, job_id)
            assert job is not None
            hp, metrics = dict(job.hyperparameters or {}), dict(job.metrics or {})
            error, trained_tokens = job.error, job.trained_tokens
            events = s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
            search = _search_facts(events)
    finally:
        db.dispose()
    if not claimed or status != "succeeded":
        raise RuntimeError(f"job {job_id}: claimed={claimed} status={status} error={error}")
    return {
        "status": status,
        "wall_s": round(wall, 2),
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "tfidf_phases": {k: {m: round(x, 2) for m, x in v.items()} for k, v in tfidf_phases.items()},
        "cpu_s": round(cpu, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "trained_tokens": trained_tokens,
        "hyperparameters": hp,
        "metrics": metrics,
        "search": search,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--model", default="tfidf-linear")
    parser.add_argument("--epochs", type=int, default=None, help="n_epochs (transformer); default: auto")
    args = parser.parse_args()
    data = _csv(args.rows)
    with tempfile.TemporaryDirectory(prefix="bench-curves-train-") as tmp:
        work = Path(tmp)
        env = procs.bench_env(AIAAS_DATA_DIR=str(work / "data"), AIAAS_ENV="production")
        submitted = _submit(env, work, data, args.model, args.epochs)
        os.environ.update(env)
        load0 = [round(x, 2) for x in os.getloadavg()]
        result = _run_worker(submitted.pop("job_id"))
        load1 = [round(x, 2) for x in os.getloadavg()]
    submitted.pop("admin_key")
    out = {"rows": args.rows, "model": args.model, "epochs": args.epochs, "csv_bytes": len(data),
           **submitted, **result, "loadavg": [load0, load1]}
    args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
