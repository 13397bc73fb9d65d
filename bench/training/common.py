"""What both training workers share: the split file they read, the result they write, machine facts."""

from __future__ import annotations

import json
import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Split:
    labels: list[str]
    train: list[tuple[str, str]]
    validation: list[tuple[str, str]]
    test: list[tuple[str, str]]

    def to_file(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    def prepared(self) -> Any:
        """Train and validation rows as the engine's PreparedData (single-label)."""
        from aiaas.data.types import Example, PreparedData

        return PreparedData(
            task="single_label_classification",
            train=[Example(t, y) for t, y in self.train],
            validation=[Example(t, y) for t, y in self.validation],
            labels=self.labels,
            report={},
            cleaning={},
        )

    @classmethod
    def from_file(cls, path: Path) -> Split:
        raw = json.loads(Path(path).read_text())
        return cls(raw["labels"], *[[tuple(x) for x in raw[k]] for k in ("train", "validation", "test")])


@dataclass
class WorkerResult:
    config: str
    settings: dict[str, Any]
    samples_trained: float
    train_s: float  # the training call alone (what each framework does by default inside it)
    wall_s: float  # process start to finish: imports, model load, tokenization, training, evaluation
    val_accuracy: float
    test_accuracy: float
    val_macro_f1: float
    step_samples_per_s: list[float] = field(default_factory=list)  # per window, training steps only
    cpu_s: float = 0.0
    loadavg: list[float] = field(default_factory=list)
    val_pred: list[int] = field(default_factory=list)  # per example, for the paired confidence interval
    test_pred: list[int] = field(default_factory=list)

    @property
    def samples_per_s(self) -> float:
        return self.samples_trained / self.train_s

    def to_dict(self) -> dict[str, Any]:
        windows = self.step_samples_per_s
        return {
            "samples_per_s": round(self.samples_per_s, 2),
            "step_samples_per_s_median": round(float(np.median(windows)), 2) if windows else None,
            "val_accuracy": round(self.val_accuracy, 4),
            "test_accuracy": round(self.test_accuracy, 4),
            "val_macro_f1": round(self.val_macro_f1, 4),
            "wall_s": round(self.wall_s, 1),
            "train_s": round(self.train_s, 1),
            "cpu_s": round(self.cpu_s, 1),
            "samples_trained": self.samples_trained,
            "loadavg_during": self.loadavg,
            "settings": self.settings,
        }


def paired_delta_ci(
    a: list[int], b: list[int], truth: list[int], *, rounds: int = 2000, seed: int = 0
) -> list[float]:
    """95% bootstrap interval of accuracy(a) - accuracy(b) in points, resampling examples (paired)."""
    rng = np.random.default_rng(seed)
    diff = (np.array(a) == np.array(truth)).astype(float) - (np.array(b) == np.array(truth)).astype(float)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(rounds)]
    return [round(100 * float(np.percentile(means, q)), 2) for q in (2.5, 97.5)]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def accuracy_and_f1(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> tuple[float, float]:
    acc = float((pred == truth).mean())
    f1s = []
    for k in range(n_labels):
        tp = float(((pred == k) & (truth == k)).sum())
        fp = float(((pred == k) & (truth != k)).sum())
        fn = float(((pred != k) & (truth == k)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return acc, float(np.mean(f1s))


def predict_dynamic(model_dir: Path, texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Argmax of a saved HF classifier over `texts`, length-sorted batches, fp32, no grad."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
    order = np.argsort([len(t) for t in texts])
    out = np.empty(len(texts), dtype=np.int64)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            enc = tok(
                [texts[i] for i in rows], padding=True, truncation=True, max_length=128, return_tensors="pt"
            )
            out[rows] = model(**enc).logits.argmax(-1).numpy()
    return out


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE).group(1).split()) if text else set()
    versions = {}
    for name in ("torch", "transformers", "accelerate", "scikit-learn", "onnxruntime"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            versions[name] = None
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu_model": model.group(1).strip() if model else None,
        "cpu_flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")},
        "versions": versions,
        "loadavg_start": loadavg(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def replace_section(readme: Path, title: str, body: str) -> None:
    """Replace (or append) the `## {title}` section of readme, leaving every other section alone."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    header = f"## {title}\n"
    new = header + "\n" + body.strip() + "\n"
    start = text.find(header)
    if start < 0:
        text = text.rstrip() + "\n\n" + new
    else:
        nxt = text.find("\n## ", start + len(header))
        text = text[:start] + new + (text[nxt:] if nxt >= 0 else "")
    readme.write_text(text)


class SilentCallbacks:
    """TrainCallbacks that record nothing, never stop and keep no checkpoint: a bench run's engine call.
    Benches that log some events subclass it and override `event`."""

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        pass

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        pass

    def should_stop(self) -> bool:
        return False
