"""Fixtures for training tests: a tiny BERT in a base-models folder, toy datasets, a recorder."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aiaas.training.auto_cv import KFold
from tests.helpers.tiny_bert import build_tiny_bert

TINY = "tiny-bert"
# auto judged on the validation split, as before k-fold CV: for the tests of the split's behaviour
# (tests/training/test_auto_kfold.py covers small data's k-fold path).
SPLIT = KFold(max_rows=0)

# Words the tiny BERT's vocabulary was trained on, split into separable groups.
REFUND = ["refund", "charged twice", "money back", "card was charged"]
BUG = ["app crashes", "login fails", "error message", "open settings"]
PRAISE = ["great service", "thank you", "excellent", "works well"]


@dataclass
class Example:
    text: str
    label: Any


@dataclass
class PreparedData:
    task: str
    train: list[Example]
    validation: list[Example]
    labels: list[str]
    report: dict = field(default_factory=dict)
    cleaning: dict = field(default_factory=dict)


class Recorder:
    """TrainCallbacks that records everything and can ask to stop after a given checkpoint."""

    def __init__(
        self, *, stop_after_checkpoint: int | None = None, stop_after_calls: int | None = None
    ) -> None:
        self.events: list[dict[str, Any]] = []
        self.checkpoints: list[tuple[int, Path, dict]] = []
        self.stop_after_checkpoint = stop_after_checkpoint
        self.stop_after_calls = stop_after_calls
        self.stop_calls = 0
        self._stop = False

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        self.events.append({"level": level, "message": message, "type": type, "data": data})

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        self.checkpoints.append((step, path, metrics))
        if self.stop_after_checkpoint is not None and step >= self.stop_after_checkpoint:
            self._stop = True

    def should_stop(self) -> bool:
        self.stop_calls += 1
        if self.stop_after_calls is not None and self.stop_calls > self.stop_after_calls:
            return True
        return self._stop

    def metrics_events(self) -> list[dict]:
        return [e["data"] for e in self.events if e["type"] == "metrics"]


@pytest.fixture(scope="session")
def base_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("base_models")
    build_tiny_bert(root / TINY)
    return root


def _phrase(rng: random.Random, group: list[str]) -> str:
    return " ".join(rng.sample(group, 2))


def single_label_data(n_train: int = 64, n_val: int = 32, seed: int = 0) -> PreparedData:
    rng = random.Random(seed)

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            label = rng.choice(["refund", "bug"])
            out.append(Example(_phrase(rng, REFUND if label == "refund" else BUG), label))
        return out

    return PreparedData("single_label_classification", make(n_train), make(n_val), ["bug", "refund"])


def multi_label_data(n_train: int = 96, n_val: int = 48, seed: int = 0) -> PreparedData:
    rng = random.Random(seed)
    groups = {"refund": REFUND, "bug": BUG, "praise": PRAISE}

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            chosen = sorted(rng.sample(list(groups), rng.choice([1, 2])))
            out.append(Example(" ".join(_phrase(rng, groups[g]) for g in chosen), chosen))
        return out

    return PreparedData("multi_label_classification", make(n_train), make(n_val), ["bug", "praise", "refund"])


def regression_data(n_train: int = 64, n_val: int = 32, seed: int = 0) -> PreparedData:
    rng = random.Random(seed)

    def make(n: int) -> list[Example]:
        out = []
        for _ in range(n):
            good = rng.random() < 0.5
            # Large offset and scale: the engine must standardize and fold it back.
            value = (80.0 if good else 20.0) + rng.uniform(-2, 2)
            out.append(Example(_phrase(rng, PRAISE if good else BUG), value))
        return out

    return PreparedData("regression", make(n_train), make(n_val), [])
