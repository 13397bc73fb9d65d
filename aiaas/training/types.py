"""The shapes train() receives and returns.

The data package (`aiaas.data`) produces PreparedData; here it is only described as a
Protocol so that training neither imports nor depends on how data was cleaned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ExampleLike(Protocol):
    text: str
    label: str | list[str] | float  # single-label | multi-label | regression


class PreparedDataLike(Protocol):
    task: str
    train: Sequence[ExampleLike]
    validation: Sequence[ExampleLike]
    labels: list[str]
    report: dict
    cleaning: dict


class TrainCallbacks(Protocol):
    """How a run talks to whoever runs it (a job worker, a test, the CLI)."""

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None: ...

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None: ...

    def should_stop(self) -> bool:
        """True once the run is cancelled or its lease is lost; checked every step."""
        ...


class TrainingStopped(Exception):
    """should_stop() turned True. Nothing was saved after the last checkpoint."""


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, Any]
    trained_tokens: int
    steps: int
    epochs_completed: float
    hyperparameters: dict[str, Any]  # resolved values, with "reasons" for each "auto"
    history: list[dict[str, Any]] = field(default_factory=list)
