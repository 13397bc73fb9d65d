"""The serving runtime interface: where a model runs, as the inference service sees it.

Two runtimes implement it: `LocalRuntime` (serving/local.py: ONNX Runtime predictors in this
process, behind the model cache and one micro-batcher per model and output) and
`GatewayRuntime` (serving/remote.py: Ray Serve deployments reached through the serving
gateway). The service picks one per request and never asks what it got.

A model is named by a `ModelRef`: its artifact URI (what the local cache loads) and, for a
deployment, its id (what Ray Serve calls the application). `ModelInfo` is what shaping an
answer needs from the model that ran, whichever runtime ran it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiaas.protocol.tasks import ARTIFACT_TASKS, EMBEDDING, MULTI_LABEL, REGRESSION, SINGLE_LABEL

# The task names are re-exported: serving's callers read them from here.
__all__ = [
    "EMBEDDING", "MULTI_LABEL", "REGRESSION", "SINGLE_LABEL", "TASKS",
    "ModelInfo", "ModelRef", "Outputs", "Runtime", "thresholds_in_label_order",
]

# Model tasks (the "task" of a model artifact's aiaas.json) are defined once, in aiaas.protocol.tasks;
# TASKS here includes "embedding" (a headless encoder's artifact).
TASKS = ARTIFACT_TASKS


def thresholds_in_label_order(thresholds: Any, labels: Sequence[str]) -> list[float] | None:
    """Multi-label thresholds as a list in label order; training records them as {label: threshold}."""
    if isinstance(thresholds, dict):
        return [float(thresholds.get(label, 0.5)) for label in labels]
    return None if thresholds is None else [float(t) for t in thresholds]


@dataclass(frozen=True, slots=True)
class ModelRef:
    artifact: str  # a blob URI (fine-tuned model) or "base:<id>" (exported base model)
    deployment_id: str | None = None
    # The deployment's max_replicas: in process, at most this many batches of the model run at once
    # (inference threads it may hold); on Ray Serve, the autoscaler's upper bound. None: no bound of its own.
    max_replicas: int | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a loaded model says about itself."""

    task: str
    labels: tuple[str, ...] = ()
    thresholds: tuple[float, ...] | None = None  # multi-label, in label order
    embeddings: bool = False  # whether it has an embeddings output
    family: str | None = None  # e.g. "tfidf-linear"; None for transformers


@dataclass(frozen=True, slots=True)
class Outputs:
    """One call's answer: [N, C] scores ([N, 1] values for regression) or [N, H] embeddings."""

    rows: np.ndarray
    tokens: int  # input tokens the model read, special tokens included
    info: ModelInfo
    unknown_tokens: int | None = None  # of them, the tokenizer's unknown token; None: not counted


class Runtime(ABC):
    """Loads models and runs them on batches of texts. Every method is safe on the event loop:
    blocking work (loading, tokenising, the forward pass) runs elsewhere."""

    @abstractmethod
    async def load(self, ref: ModelRef, *, keep_loaded: bool = False) -> None:
        """Make the model servable now; `keep_loaded` exempts it from scale-to-zero
        (a deployment with min_replicas >= 1)."""

    @abstractmethod
    async def predict(self, ref: ModelRef, texts: list[str]) -> Outputs:
        """Scores per text: probabilities for classifiers, raw values for regression."""

    @abstractmethod
    async def embed(self, ref: ModelRef, texts: list[str]) -> Outputs:
        """L2-normalised embeddings per text; a 400 for a model without an embeddings output."""

    @abstractmethod
    async def ready(self, ref: ModelRef) -> bool:
        """Whether the model is loaded and would answer without a cold start."""

    @abstractmethod
    async def healthy(self) -> bool:
        """Whether the runtime itself can serve (not shut down, its backend reachable)."""

    @abstractmethod
    def resident_bytes(self) -> int:
        """Memory its loaded models hold in this process (0 for models served elsewhere)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Stop: unload models, end worker threads, close connections."""
