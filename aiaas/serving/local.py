"""Models served in this process: ONNX Runtime predictors in the model cache, one micro-batcher per
(model, output kind).

The cache loads each model once however many requests wait for it (they are held, not
failed), evicts under a memory budget and unloads idle models (scale to zero). Under light
load a request runs alone at once; under load inference threads pull length-matched batches
of one runtime bucket each (batcher.py). Tokenising and the forward pass run in the thread
pool, never on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.serving.batcher import MicroBatcher, text_length
from aiaas.serving.cache import ModelCache
from aiaas.serving.cache_policy import LOAD_NICE
from aiaas.serving.interface import ModelInfo, ModelRef, Outputs, Runtime

if TYPE_CHECKING:  # the runtime module imports onnxruntime; a process serving nothing never needs it
    from aiaas.serving.runtime import ServedModel

Row = tuple[np.ndarray, int, int]  # one text's output row, its token count and its [UNK] count (-1: none)
SCORES, EMBEDDINGS = "scores", "embeddings"


class LocalRuntime(Runtime):
    def __init__(self, loader: Callable[[str], ServedModel], *, threads: int, memory_budget_bytes: int,
                 idle_unload_s: float | None, on_batch: Callable[[str, int], None] | None = None,
                 load_nice: int = LOAD_NICE) -> None:
        """`loader(artifact)` returns a loaded model (runtime.ServedModel); it runs in a worker thread (the cache's,
        `load_nice` below the serving threads' priority). `on_batch(kind, size)` is told each batch the inference
        threads ran (metrics; called from those threads)."""
        if not callable(loader):
            raise TypeError(f"loader must be callable, got {type(loader).__name__}")
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r} (AIAAS_INFERENCE_THREADS)")
        self._loader = loader
        self._threads = threads
        self._budget = memory_budget_bytes
        self._idle_s = idle_unload_s
        self._load_nice = load_nice
        self._on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="infer")
        self._cache: ModelCache | None = None
        self._batchers: dict[tuple[str, str, int], tuple[ServedModel, MicroBatcher[str, Row]]] = {}
        self._closed = False

    @property
    def cache(self) -> ModelCache:
        """Created on first use, so a process that serves no model starts no sweeper."""
        if self._cache is None:
            self._cache = ModelCache(self._loader, memory_budget_bytes=self._budget, idle_unload_s=self._idle_s,
                                     load_nice=self._load_nice)
            self._cache.on_unload(self._drop_batchers)
        return self._cache

    # -- Runtime ------------------------------------------------------------------------------
    async def load(self, ref: ModelRef, *, keep_loaded: bool = False) -> None:
        if keep_loaded:  # pinned models are never evicted: 409 insufficient_memory if they would not fit
            await self.cache.pin_within_budget(ref.artifact)
        else:
            await self.cache.get(ref.artifact)

    async def predict(self, ref: ModelRef, texts: list[str]) -> Outputs:
        return await self._run(ref, texts, SCORES)

    async def embed(self, ref: ModelRef, texts: list[str]) -> Outputs:
        return await self._run(ref, texts, EMBEDDINGS)

    async def ready(self, ref: ModelRef) -> bool:
        return not self._closed and self._cache is not None and ref.artifact in self._cache

    async def healthy(self) -> bool:
        return not self._closed

    def resident_bytes(self) -> int:
        return 0 if self._cache is None else self._cache.memory_bytes

    async def aclose(self) -> None:
        self._closed = True
        if self._cache is not None:
            await self._cache.close()
        # A copy: a batcher dropped (its model unloaded) while this awaits changes the dict.
        for _, batcher in list(self._batchers.values()):
            await batcher.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- this runtime only ----------------------------------------------------------------------
    def pin(self, artifact: str, pinned: bool) -> None:
        """Pinned models are never idle-unloaded or evicted (deployments with min_replicas >= 1)."""
        self.cache.pin(artifact, pinned)

    def evict(self, artifact: str) -> None:
        """Drop a model now (it was deleted); requests holding it finish with their reference."""
        self._drop_batchers(artifact)
        if self._cache is not None:
            self._cache.evict(artifact)

    def _drop_batchers(self, artifact: str) -> None:
        """The model left the cache (evicted, idle, deleted): its batchers, which hold its predictor, go too."""
        for key in [k for k in self._batchers if k[0] == artifact]:
            self._batchers.pop(key, None)

    # -- internals ------------------------------------------------------------------------------
    async def _run(self, ref: ModelRef, texts: list[str], kind: str) -> Outputs:
        artifact = ref.artifact
        # The model is held in the cache while the request runs, so eviction never hits it mid-flight.
        async with self.cache.use(artifact) as predictor:
            info = predictor.info
            if kind == EMBEDDINGS and not info.embeddings:
                raise _no_embeddings(info)
            pairs = await self._batcher(artifact, kind, predictor, ref.max_replicas).submit(texts)
        rows = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, 0), dtype=np.float32)
        unknown = sum(p[2] for p in pairs) if pairs and pairs[0][2] >= 0 else None
        return Outputs(rows, sum(p[1] for p in pairs), info, unknown)

    def _batcher(self, artifact: str, kind: str, predictor: ServedModel,
                 max_replicas: int | None) -> MicroBatcher[str, Row]:
        """The model's batcher for this bound: at most `max_replicas` (a deployment's bound, else every
        inference thread) of its batches run at once, so a hot deployment leaves threads for the others.
        Callers with different bounds (a bounded deployment, the model called by id) batch apart."""
        limit = self._threads if max_replicas is None else max(1, min(self._threads, max_replicas))
        current = self._batchers.get((artifact, kind, limit))
        if current is None or current[0] is not predictor:
            scores = kind == SCORES

            def run(texts: list[str], p: ServedModel = predictor) -> list[Row]:
                res = p.infer(texts, probabilities=scores, embeddings=not scores)
                rows = res.probabilities if scores else res.embeddings
                assert rows is not None
                unknown = res.unknown_counts or [-1] * len(res.token_counts)
                return list(zip(rows, res.token_counts, unknown, strict=True))

            # One batch = one of the runtime's length buckets: workers pull the next one as soon
            # as they finish, and a request is answered when its own bucket is done.
            batcher: MicroBatcher[str, Row] = MicroBatcher(
                run,
                executor=self.executor,
                max_concurrency=limit,
                max_batch_size=predictor.bucket_size,
                length=text_length,
                on_batch=None if self._on_batch is None else functools.partial(self._on_batch, kind),
            )
            current = (predictor, batcher)
            self._batchers[(artifact, kind, limit)] = current
        return current[1]


def _no_embeddings(info: ModelInfo) -> InvalidRequest:
    """A model without an embeddings output (tfidf-linear) answers a clear 400, before any batching."""
    what = f"this is a {info.family} model, which has none" if info.family else "this model has none"
    return InvalidRequest(
        f"Embeddings need a transformer model; {what}. Use a base model "
        "(see GET /v1/models) or a model fine-tuned from one.",
        param="model",
    )
