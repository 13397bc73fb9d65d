"""Inference for deployments, models and protocols: the model cache, batchers, and result shapes.

Tokenising and running the model happen in a thread pool (never on the event loop). The
cache loads each model once however many requests wait for it (they are held, not
failed), evicts under a memory budget and unloads idle models (scale to zero). One
micro-batcher per (model, output kind) merges concurrent requests; under light load a
request runs alone at once, and under load workers pull length-matched batches of one
runtime bucket each (aiaas/serving/batcher.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import AiaasError, InvalidRequest, Unavailable, not_found
from aiaas.core.settings import Settings
from aiaas.registry import models as registry
from aiaas.security.ttlcache import TtlCache
from aiaas.store import deployments as dep_store
from aiaas.store.blobs import BlobStore
from aiaas.store.db import Database

log = logging.getLogger(__name__)
EXPORT_TIMEOUT_S = 600


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


@dataclass(frozen=True)
class Target:
    """What a request resolved to: the model id answered to the client and where its artifact lives."""

    model_id: str
    artifact: str  # a blob URI (fine-tuned) or "base:<id>" (exported base model)
    task: str
    thresholds: Any = None
    deployment: str | None = None
    deployment_id: str | None = None
    version: str = "1"


def resolve_target(db: Database, settings: Settings, org_id: str, name: str, *, param: str = "model") -> Target:
    """A deployment name, a fine-tuned model id, or a base model id (embeddings only). Runs in a thread."""
    with db.session() as s:
        if not name.startswith("ft:"):
            try:
                dep = dep_store.get_deployment(s, org_id, name)
            except AiaasError:
                dep = None
            if dep is not None:
                m = registry.get_model(s, org_id, dep.model, param=param)
                card = m.card or {}
                return Target(m.id, m.artifact_uri, m.task, _thresholds(card), deployment=dep.name,
                              deployment_id=dep.id)
        else:
            m = registry.get_model(s, org_id, name, param=param)
            card = m.card or {}
            return Target(m.id, m.artifact_uri, m.task, _thresholds(card))
    from aiaas.services import catalog

    if any(b["id"] == name for b in catalog.base_models(settings.base_models_dir)):
        return Target(name, f"base:{name}", "embedding")
    raise not_found("model", name, param=param)


def _thresholds(card: dict) -> list[float] | None:
    """Multi-label thresholds in label order (training records them as {label: threshold})."""
    from aiaas.serving.runtime import thresholds_in_label_order

    return thresholds_in_label_order(card.get("thresholds"), list(card.get("labels") or []))


def _deployment_target(db: Database, org_id: str, name: str) -> Target:
    with db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        m = registry.get_model(s, org_id, dep.model)
        card = m.card or {}
        return Target(m.id, m.artifact_uri, m.task, _thresholds(card), deployment=dep.name,
                      deployment_id=dep.id)


class InferenceService:
    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs
        self.executor = ThreadPoolExecutor(max_workers=settings.inference_threads, thread_name_prefix="infer")
        self._cache: Any = None
        # (kind, org, name) -> what a name resolved to; invalidated here on delete, TTL elsewhere.
        self.lookups = TtlCache(settings.lookup_cache_seconds)
        self._batchers: dict[tuple[str, str], tuple[Any, Any]] = {}
        # With a Ray gateway configured, deployments are Ray Serve applications (one per deployment id);
        # models called by id, and base-model embeddings, stay in process.
        self.remote: Any = None
        if settings.ray_gateway_url:
            from aiaas.cluster.gateway import GatewayClient

            self.remote = GatewayClient(settings.ray_gateway_url, settings.master_secret())

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

    # -- loading ----------------------------------------------------------------------------
    def _load(self, artifact: str) -> Any:
        from aiaas.serving.runtime import load_predictor

        if artifact.startswith("base:"):
            return load_predictor(self._base_export(artifact[len("base:"):]))
        # Artifacts are encrypted at rest: decrypt the ONNX part into private memory-backed storage,
        # load it (ONNX Runtime and the tokenizer read everything into memory), and let it vanish.
        with self.blobs.open_local(artifact.rstrip("/") + "/onnx") as onnx_dir:
            if not Path(onnx_dir).is_dir():
                raise Unavailable("This model has no exported runtime artifact; re-run its fine-tuning job.")
            return load_predictor(Path(onnx_dir))

    def _base_export(self, base_id: str) -> Path:
        """Export a base encoder to ONNX once (in a subprocess: the API never imports torch)."""
        out = self.settings.data_dir / "base_exports" / base_id
        if (out / "aiaas.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f".{base_id}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one export per base model across API processes
            if (out / "aiaas.json").exists():
                return out
            code = (
                "import sys; from pathlib import Path; from aiaas.services.catalog import resolve; "
                "from aiaas.registry.export import export_base_model; "
                "m = resolve(sys.argv[1], Path(sys.argv[2])); export_base_model(m.path, Path(sys.argv[3]))"
            )
            tmp = out.with_name(out.name + ".partial")
            proc = subprocess.run(
                [sys.executable, "-c", code, base_id, str(self.settings.base_models_dir), str(tmp)],
                capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, env=os.environ | {"HF_HUB_OFFLINE": "1"},
            )
            if proc.returncode != 0:
                log.error("export of base model %s failed: %s", base_id, proc.stderr[-2000:])
                raise Unavailable(f"Could not prepare base model '{base_id}' for serving.")
            os.replace(tmp, out)
        return out

    # -- running ----------------------------------------------------------------------------
    def _batcher(self, artifact: str, kind: str, predictor: Any) -> Any:
        from aiaas.serving.batcher import MicroBatcher, text_length

        current = self._batchers.get((artifact, kind))
        if current is None or current[0] is not predictor:
            def run(texts: list[str], p: Any = predictor) -> list[tuple[np.ndarray, int]]:
                res = p.infer(texts, probabilities=kind == "scores", embeddings=kind == "embeddings")
                rows = res.probabilities if kind == "scores" else res.embeddings
                return list(zip(rows, res.token_counts, strict=True))

            # One batch = one of the runtime's length buckets: workers pull the next one as soon
            # as they finish, and a request is answered when its own bucket is done.
            batcher = MicroBatcher(
                run,
                executor=self.executor,
                max_concurrency=self.settings.inference_threads,
                max_batch_size=predictor.bucket_size,
                length=text_length,
            )
            current = (predictor, batcher)
            self._batchers[(artifact, kind)] = current
        return current[1]

    async def run(self, artifact: str, texts: list[str], kind: str = "scores", *,
                  deployment_id: str | None = None) -> tuple[Any, np.ndarray, int]:
        """Returns (predictor, [N, C] scores or [N, H] embeddings, total input tokens).

        The model is held in the cache while the request runs, so eviction never hits it mid-flight.
        """
        if self.remote is not None and deployment_id is not None and kind == "scores":
            scores, labels, task, tokens = await self.remote.predict(deployment_id, texts)
            return RemotePredictor(labels=labels, task=task), scores, tokens
        async with self.cache.use(artifact) as predictor:
            if kind == "embeddings":
                _check_embeddings(predictor)
            pairs = await self._batcher(artifact, kind, predictor).submit(texts)
        rows = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, 0), dtype=np.float32)
        return predictor, rows, int(sum(p[1] for p in pairs))

    async def predict(self, artifact_uri: str, texts: list[str], *,
                      deployment_id: str | None = None) -> tuple[Any, np.ndarray, int]:
        return await self.run(artifact_uri, texts, "scores", deployment_id=deployment_id)

    async def deployed(self, deployment_id: str, artifact_uri: str, min_replicas: int) -> None:
        """A deployment was created: on Ray, start its Serve application (rolling update if it exists)."""
        if self.remote is not None:
            await self.remote.deploy(deployment_id, artifact_uri, min_replicas=min_replicas,
                                     max_replicas=max(1, self.settings.ray_max_replicas))

    async def undeployed(self, deployment_id: str) -> None:
        if self.remote is not None:
            await self.remote.delete(deployment_id)

    async def ready(self, artifact: str) -> bool:
        return artifact in self.cache

    async def resolve(self, db: Database, org_id: str, name: str, *, param: str = "model") -> Target:
        key = ("target", org_id, name)
        target = self.lookups.get(key)
        if target is None:
            target = await run_in_threadpool(resolve_target, db, self.settings, org_id, name, param=param)
            self.lookups.put(key, target)
        return target

    async def deployment(self, db: Database, org_id: str, name: str) -> Target:
        """A deployment by name (never a model id), for the native predict route."""
        key = ("deployment", org_id, name)
        target = self.lookups.get(key)
        if target is None:
            target = await run_in_threadpool(_deployment_target, db, org_id, name)
            self.lookups.put(key, target)
        return target

    def forget(self, org_id: str, *, deployment: str | None = None, model: str | None = None) -> None:
        """A deployment or model changed in this process: drop cached lookups that mention it."""
        def stale(key: Any, target: Any) -> bool:
            return key[1] == org_id and (
                (deployment is not None and (key[2] == deployment or target.deployment == deployment))
                or (model is not None and (key[2] == model or target.model_id == model))
            )

        self.lookups.invalidate(stale)

    def pin(self, artifact_uri: str, pinned: bool) -> None:
        self.cache.pin(artifact_uri, pinned)

    def evict(self, artifact_uri: str) -> None:
        for key in [k for k in self._batchers if k[0] == artifact_uri]:
            self._batchers.pop(key, None)
        if self._cache is not None:
            self._cache.evict(artifact_uri)

    async def aclose(self) -> None:
        if self.remote is not None:
            await self.remote.aclose()
        if self._cache is not None:
            await self._cache.close()
        for _, batcher in self._batchers.values():
            close = getattr(batcher, "close", None)
            if close is not None:
                res = close()
                if asyncio.iscoroutine(res):
                    await res
        self.executor.shutdown(wait=False, cancel_futures=True)


def _check_embeddings(predictor: Any) -> None:
    """A model without an embeddings output (tfidf-linear) answers a clear 400, before any batching."""
    outputs = getattr(predictor, "outputs", None)
    if outputs is None or "embeddings" in outputs:
        return
    meta = getattr(predictor, "meta", None) or {}
    family = meta.get("family") or (meta.get("runtime") or {}).get("family")
    what = f"this is a {family} model, which has none" if family else "this model has none"
    raise InvalidRequest(
        f"Embeddings need a transformer model; {what}. Use a base model "
        "(see GET /v1/models) or a model fine-tuned from one.",
        param="model",
    )


@dataclass(frozen=True)
class RemotePredictor:
    """What shape_predictions needs from a model served elsewhere (Ray Serve)."""

    labels: list[str]
    task: str
    thresholds: Any = None


def shape_predictions(predictor: Any, scores: np.ndarray, *, top_k: int | None, thresholds: Any = None) -> list[dict]:
    """One result per input: label + score + top-k for classifiers, label set for multi-label, value for regression."""
    task = getattr(predictor, "task", "single_label_classification")
    labels: list[str] = list(getattr(predictor, "labels", []))
    from aiaas.serving.runtime import thresholds_in_label_order

    thresholds = thresholds_in_label_order(thresholds or getattr(predictor, "thresholds", None), labels)
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
