"""µs per request of sampled request logging (RequestLog.maybe_record), in process, no I/O:

    python -m bench.request_log_hook

The hot path's cost with sampling off, at 1%, and for a request that is sampled (4 texts: a
classification's answers, an embeddings request's texts alone, an OIP answer made only when sampled).
Writes bench/results/request_log_hook.json (median of 5 rounds each)."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from aiaas.services.inference import shaping
from aiaas.serving.interface import ModelInfo
from aiaas.services.request_log import RequestLog
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.db import Database

RESULTS = Path(__file__).resolve().parent / "results" / "request_log_hook.json"
TEXTS = ["where is my parcel, it was due on monday", "refund please", "the app crashes when I log in",
         "great service, thank you"]


def per_call_us(fn, n: int, log: RequestLog) -> float:
    rounds = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - started) / n * 1e6)
        log._buffers.clear()  # what a flush takes away (not timed: it runs in a background thread)
    return round(statistics.median(rounds), 2)


def main() -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        log = RequestLog(Database(f"sqlite:///{tmp}/x.db"), create_blob_store(f"file://{tmp}/blobs"),
                         flush_seconds=0)
        info = ModelInfo(task="single_label_classification", labels=("billing", "delivery", "bug", "praise"))
        rows = np.random.default_rng(0).dirichlet(np.ones(4), len(TEXTS)).astype(np.float32)
        answers = shaping.classification_results(info, rows, top_k=None)

        def record(rate: float, results, source: str = "classifications"):
            return lambda: log.maybe_record(rate, "org", "dep", "m", TEXTS, results, source=source)

        result = {
            "texts_per_request": len(TEXTS),
            "cpu_count": os.cpu_count(),
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "off_us": per_call_us(record(0.0, answers), 200_000, log),
            "rate_1pct_classification_us": per_call_us(record(0.01, answers), 100_000, log),
            "sampled_classification_us": per_call_us(record(1.0, answers), 5_000, log),
            "sampled_embeddings_us": per_call_us(record(1.0, None, "embeddings"), 5_000, log),
            "sampled_oip_us": per_call_us(record(1.0, lambda: shaping.classification_results(
                info, rows, top_k=None), "oip"), 5_000, log),  # the answer made for the record
        }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
