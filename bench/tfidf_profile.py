"""Where a tfidf-linear training job's time and memory go, phase by phase.

    python -m bench.tfidf_profile OUT.json --rows 100000

Runs `aiaas.training.classical_train.train_classical` in this process on the cost curve's data
(bench/curves_training.py: bench/serving/sentences.py's seeded sentences, 10% held out for
validation), after the runner's tfidf-linear token statistics (`classical.encode_training`, what
`runner._prepare` runs). Each phase is timed by wrapping the module's own functions (nothing else
changes); a thread samples the process's RSS every 10 ms, so each phase's peak is the highest sample
taken while it ran. Phases:

    token_stats  runner._prepare's tfidf-linear part: tokenizer built and every training text encoded
    featurize    tokenizer (reused), ids, n-gram vocabularies and TF-IDF matrices (train, validation)
    search       the candidates on at most SEARCH_SAMPLE_ROWS rows
    refit        the chosen candidate on every row
    calibrate    out-of-fold heads and the calibration fit
    save         the model directory written

The RSS baseline (`rss_start_mb`) is the interpreter with numpy, scipy, scikit-learn and tokenizers
imported and the texts in memory. Run it alone: on shared cores only CPU seconds and same-run ratios
mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from bench.serving import sentences
from bench.training.common import SilentCallbacks

DATA_SEED = 11  # bench/curves_training.py's
VALIDATION_FRACTION = 0.1


class _Sampler(threading.Thread):
    """RSS every `interval` s; `mark(name)` starts a phase, whose peak is the max sample inside it."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process()
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            rss = self.proc.memory_info().rss / 2**20
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)
            time.sleep(self.interval)

    def rss(self) -> float:
        return self.proc.memory_info().rss / 2**20


def _wrap(module: Any, name: str, phase: str, sampler: _Sampler, table: dict[str, dict]) -> None:
    fn: Callable[..., Any] = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = sampler.phase
        sampler.phase = phase
        cpu0, t0, rss0 = time.process_time(), time.perf_counter(), sampler.rss()
        try:
            return fn(*args, **kwargs)
        finally:
            row = table.setdefault(phase, {"wall_s": 0.0, "cpu_s": 0.0, "rss_before_mb": round(rss0, 1)})
            row["wall_s"] += time.perf_counter() - t0
            row["cpu_s"] += time.process_time() - cpu0
            row["rss_after_mb"] = round(sampler.rss(), 1)
            sampler.phase = previous

    setattr(module, name, wrapper)


def profile(rows: int) -> dict[str, Any]:
    import scipy.optimize  # noqa: F401  (imported before the baseline, as train_classical does first)
    import sklearn.linear_model  # noqa: F401

    from aiaas.data.types import Example
    from aiaas.training import classical, classical_train
    from aiaas.training.config import TrainConfig

    texts, labels = sentences.generate(rows, seed=DATA_SEED)
    n_val = int(rows * VALIDATION_FRACTION)
    train = [Example(text=t, label=y) for t, y in zip(texts[n_val:], labels[n_val:], strict=True)]
    validation = [Example(text=t, label=y) for t, y in zip(texts[:n_val], labels[:n_val], strict=True)]

    class Data:
        task = "single_label_classification"
        report: dict = {}
        cleaning: dict = {}
        encodings: dict = {}

    Data.train, Data.validation = train, validation  # type: ignore[attr-defined]
    Data.labels = sorted(set(labels))  # type: ignore[attr-defined]

    sampler = _Sampler()
    table: dict[str, dict] = {}
    for module, name, phase in (
        (classical_train, "_featurize", "featurize"),
        (classical_train, "_search", "search"),
        (classical_train, "_refit", "refit"),
        (classical_train, "_calibrate", "calibrate"),
        (classical.ClassicalModel, "save", "save"),
    ):
        _wrap(module, name, phase, sampler, table)
    rss_start = sampler.rss()
    sampler.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    sampler.phase = "token_stats"
    encoded = classical.encode_training([e.text for e in train])
    Data.encodings[classical.FAMILY] = encoded
    table["token_stats"] = {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,
        "rss_before_mb": round(rss_start, 1),
        "rss_after_mb": round(sampler.rss(), 1),
    }
    sampler.phase = "other"
    config = TrainConfig(base_model=classical.FAMILY, task="single_label_classification", seed=0)
    # (the job's default seed; bench/curves_training.py submits seed 0 too)
    with tempfile.TemporaryDirectory(prefix="tfidf-profile-") as tmp:
        data: Any = Data
        result = classical_train.train_classical(config, data, Path(tmp), SilentCallbacks())
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sampler.halt.set()
    sampler.join()
    for phase, row in table.items():
        row["peak_rss_mb"] = round(sampler.peaks.get(phase, 0.0), 1)
        row["wall_s"], row["cpu_s"] = round(row["wall_s"], 2), round(row["cpu_s"], 2)
    hp = result.hyperparameters
    return {
        "rows": rows,
        "train_rows": len(train),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "rss_start_mb": round(rss_start, 1),
        "peak_rss_mb": round(max(sampler.peaks.values()), 1),
        "phases": table,
        "choice": {k: hp.get(k) for k in ("ngram_blocks", "weighting", "C", "n_features")},
        "validation_accuracy": result.metrics.get("accuracy"),
        "fits": len(result.history),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, required=True)
    args = parser.parse_args()
    out = profile(args.rows)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
