"""Density bench setup (bench/density.py): the model it copies, the N registered copies and their
deployments, and where one cold load's time goes (`cold_load_breakdown`)."""

from __future__ import annotations

import json
import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

from bench.serving import procs


def register_copies(data_dir: Path, admin_key: str, export: Path, n: int, work: Path) -> list[tuple[str, str]]:
    """N fine-tuned models, each its own encrypted copy of `export` (the onnx/ part the loader reads, as
    the job runner stores it); returns [(model id, artifact uri)]."""
    from aiaas.core.settings import Settings
    from aiaas.registry import models as registry
    from aiaas.services import authn
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted

    from bench.serving.model import BASE_MODEL

    staging = work / "staging"
    # The export's fp32 fallback graph (91 of its 114 MB) is left out of the copies: where int8's requirements
    # are met (they are here, or the bench says so below) the loader never decrypts it, and 200 copies of it
    # would only be 18 GB more disk writes before the run.
    as_exported_now(export, staging / "onnx", keep_fp32=False)
    labels = json.loads((export / "aiaas.json").read_text())["labels"]
    settings = Settings(data_dir=data_dir)
    db = Database(settings.sqlalchemy_url)
    out = []
    try:
        with db.session() as s:
            org_id = authn.authenticate(s, admin_key).org_id
        blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
        with ThreadPoolExecutor(4) as pool:  # storing is mostly waiting for the disk
            uris = list(pool.map(lambda i: blobs.put_dir(f"{org_id}/models/ftjob-density{i:03d}", staging), range(n)))
        for i, uri in enumerate(uris):
            job = f"ftjob-density{i:03d}"
            model_id = registry.fine_tuned_model_id(base=BASE_MODEL, org_name="default", suffix=f"m{i:03d}",
                                                    job_id=job)
            with db.session() as s:
                registry.register_model(s, model_id=model_id, org_id=org_id, job_id=job, base_model=BASE_MODEL,
                                        task="single_label_classification", artifact_uri=uri,
                                        lineage={"benchmark": "bench/density"}, card={"labels": labels})
            out.append((model_id, uri))
    finally:
        db.dispose()
        shutil.rmtree(staging, ignore_errors=True)
    return out


def as_exported_now(export: Path, dest: Path, *, keep_fp32: bool) -> Path:
    """A copy of `export` as export_model writes it now: with the pre-optimised first-token graph stored
    (registry/export/guard.py store_first_token_graph; the cached export may predate it, and its verdict was
    given on the same deterministic rewrite)."""
    from aiaas.registry.export.guard import store_first_token_graph

    shutil.copytree(export, dest, ignore=None if keep_fp32 else shutil.ignore_patterns("model.fp32.onnx"))
    store_first_token_graph(dest)
    return dest


def deploy_all(api: httpx.Client, models: list[tuple[str, str]]) -> list[str]:
    names = []
    for i, (model_id, _) in enumerate(models):
        name = f"m{i:03d}"
        api.post("/v1/deployments", json={"name": name, "model": model_id, "min_replicas": 0}).raise_for_status()
        names.append(name)
    return names


def int8_servable() -> bool:
    """Whether this machine serves the int8 graph (else the runtime needs the fp32 file the copies leave out)."""
    from aiaas.serving.machine import has_int8_dot_product

    return has_int8_dot_product()


def build_model() -> Path:
    """bench/serving/model.py's cached export (built in a subprocess: this process never imports torch)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench.serving.model"], capture_output=True, text=True, check=True,
                         env=procs.bench_env())
    return Path(out.stdout.strip().splitlines()[-1]) / "onnx"


def cold_load_breakdown(data_dir: Path, export: Path, repeats: int = 5) -> dict:
    """Where a cold load's time goes, in this process (median of `repeats`, seconds, interleaved), on one more
    stored copy of the whole export (fp32 fallback included): decrypting all of onnx/ (the loader before the
    first density change), what the loader decrypts now (aiaas.json, tokenizer, the int8 graph, its stored
    first-token graph), and opening the model (load_predictor: tokenizer, first-token session, full graph's
    bytes); next to it, load_predictor on the same export without the stored first-token graph (rewritten in
    Python and optimised by ONNX Runtime at every load, as before)."""
    from aiaas.core.settings import Settings
    from aiaas.serving.runtime import load_predictor
    from aiaas.services.inference.loader import ArtifactLoader
    from aiaas.store.blob_factory import create_blob_store
    from aiaas.store.db import Database
    from aiaas.store.encrypted import encrypted

    settings = Settings(data_dir=data_dir)
    db = Database(settings.sqlalchemy_url)
    times: dict[str, list[float]] = {"decrypt_whole_onnx_dir_s": [], "decrypt_what_the_loader_reads_s": [],
                                     "load_predictor_s": [], "load_predictor_rewrite_at_load_s": []}
    try:
        blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
        org = next(p.name for p in (data_dir / "blobs").iterdir() if p.is_dir() and p.name.startswith("org-"))
        staging = data_dir.parent / "breakdown"
        as_exported_now(export, staging / "onnx", keep_fp32=True)
        onnx = blobs.put_dir(f"{org}/models/ftjob-breakdown", staging) + "/onnx"
        old = data_dir.parent / "breakdown-old"
        shutil.copytree(export, old, ignore=shutil.ignore_patterns("model.fp32.onnx"))
        loader = ArtifactLoader(settings, blobs)
        for _ in range(repeats):
            t = time.perf_counter()
            with blobs.open_local(onnx):
                times["decrypt_whole_onnx_dir_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            load_predictor(old).close()
            times["load_predictor_rewrite_at_load_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with loader._runtime_files(onnx) as (d, lazy):
                times["decrypt_what_the_loader_reads_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                load_predictor(Path(d), full_graph=partial(loader._read, f"{onnx}/{lazy}") if lazy else None).close()
                times["load_predictor_s"].append(time.perf_counter() - t)
    finally:
        db.dispose()
    return {k: round(statistics.median(v), 3) for k, v in times.items()} | {"repeats": repeats}
