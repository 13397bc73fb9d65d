"""Inference for deployments and models: the model cache, one batcher per loaded model, and result shapes.

Tokenising and running the model happen in a thread pool (never on the event loop);
the cache loads each model once however many requests wait for it, and unloads idle ones.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.core.settings import Settings
from aiaas.store.blobs import BlobStore

log = logging.getLogger(__name__)


def check_inputs(texts: Any, settings: Settings, *, field: str = "inputs") -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidRequest(f"'{field}' must be a non-empty list of strings.", param=field)
    if len(texts) > settings.max_inputs_per_request:
        raise InvalidRequest(
            f"'{field}' has {len(texts)} items; at most {settings.max_inputs_per_request} per request.",
            param=field,
        )
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InvalidRequest(f"'{field}[{i}]' must be a string.", param=f"{field}.{i}")
        if len(t) > settings.max_input_chars:
            raise InvalidRequest(
                f"'{field}[{i}]' has {len(t)} characters; at most {settings.max_input_chars}.",
                param=f"{field}.{i}",
            )
    return texts


class InferenceService:
    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs
        self.executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="infer")
        self._cache: Any = None
        self._batchers: dict[str, tuple[Any, Any]] = {}

    @property
    def cache(self) -> Any:
        """Created on first use, so an API process that serves no model never loads the runtime."""
        if self._cache is None:
            from aiaas.serving.cache import ModelCache

            self._cache = ModelCache(
                self._load,
                memory_budget_bytes=self.settings.model_memory_budget_mb * 1024 * 1024,
                idle_unload_s=self.settings.model_idle_unload_s,
            )
        return self._cache

    def _load(self, artifact_uri: str) -> Any:
        from aiaas.serving.runtime import load_predictor

        path: Path = self.blobs.local_path(artifact_uri)
        return load_predictor(path / "onnx" if (path / "onnx").is_dir() else path)

    async def _batcher(self, artifact_uri: str) -> tuple[Any, Any]:
        from aiaas.serving.batcher import MicroBatcher

        predictor = await self.cache.get(artifact_uri)
        current = self._batchers.get(artifact_uri)
        if current is None or current[0] is not predictor:
            batcher = MicroBatcher(predictor.predict, executor=self.executor)
            self._batchers[artifact_uri] = (predictor, batcher)
            current = (predictor, batcher)
        return current

    async def predict(self, artifact_uri: str, texts: list[str]) -> tuple[Any, np.ndarray, int]:
        predictor, batcher = await self._batcher(artifact_uri)
        rows = await batcher.submit(texts)
        loop = asyncio.get_running_loop()
        tokens = await loop.run_in_executor(self.executor, predictor.count_tokens, texts)
        return predictor, np.asarray(rows), int(sum(tokens))

    def pin(self, artifact_uri: str, pinned: bool) -> None:
        self.cache.pin(artifact_uri, pinned)

    def evict(self, artifact_uri: str) -> None:
        self._batchers.pop(artifact_uri, None)
        if self._cache is not None:
            self._cache.evict(artifact_uri)

    async def aclose(self) -> None:
        if self._cache is not None:
            await self._cache.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def shape_predictions(predictor: Any, scores: np.ndarray, *, top_k: int | None, thresholds: Any = None) -> list[dict]:
    """One result per input: label + score + top-k for classifiers, label set for multi-label, value for regression."""
    task = getattr(predictor, "task", "single_label_classification")
    labels: list[str] = list(getattr(predictor, "labels", []))
    out: list[dict] = []
    for row in scores:
        if task == "regression":
            out.append({"value": float(row[0])})
            continue
        order = np.argsort(-row)
        k = min(top_k or len(labels), len(labels))
        ranked = [{"label": labels[i], "score": float(row[i])} for i in order[:k]]
        if task == "multi_label_classification":
            th = thresholds or [0.5] * len(labels)
            chosen = [labels[i] for i in range(len(labels)) if row[i] >= th[i]]
            out.append({"labels": chosen, "scores": ranked})
        else:
            out.append({"label": labels[order[0]], "score": float(row[order[0]]), "scores": ranked})
    return out
