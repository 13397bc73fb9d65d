"""Inference as one use case: classify, embed and infer tensors (OIP), each running

    check inputs -> charge the token estimate -> resolve the model -> run it
    -> settle the charge on the real token count -> shape the answer -> meter usage

exactly once, whichever route or protocol asked. Routes decode the request and encode
what these methods return; the runtimes (serving/interface.py) run the model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from aiaas.core.errors import InvalidRequest
from aiaas.core.settings import Settings
from aiaas.core.telemetry import Recorder
from aiaas.security.ratelimit import RateLimiter
from aiaas.services.inference import shaping
from aiaas.services.inference.loader import ArtifactLoader
from aiaas.services.inference.metering import Caller, precharge, settle
from aiaas.services.inference.shadow import Shadows
from aiaas.services.inference.targets import Split, Target, Targets
from aiaas.services.inference.traffic import DeploymentTraffic
from aiaas.services.inference.tokens import estimate_tokens
from aiaas.services.monitoring import TrafficMonitor
from aiaas.services.request_log import RequestLog, Results
from aiaas.services.usage import UsageRecorder
from aiaas.serving import oip_codec as codec
from aiaas.serving.interface import EMBEDDING, ModelRef, Outputs, Runtime
from aiaas.serving.local import LocalRuntime
from aiaas.store.blobs import BlobStore
from aiaas.store.db import Database

if TYPE_CHECKING:
    from aiaas.serving.remote import GatewayRuntime

log = logging.getLogger(__name__)
OIP_VERSION = "1"  # the one version every model has on the Open Inference Protocol


def check_inputs(texts: Any, settings: Settings, *, field: str = "inputs") -> list[str]:
    """A non-empty list of strings (or one string) within the per-request limits."""
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


@dataclass(frozen=True, slots=True)
class Answer:
    """What an operation returns to its route: the model that answered, its results, the tokens it read."""

    model_id: str
    results: Any  # list of result dicts (classify), [N, H] array (embed), output tensors (infer)
    tokens: int


class InferenceService:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore, *, limiter: RateLimiter,
                 usage: UsageRecorder, monitor: TrafficMonitor | None = None,
                 telemetry: Recorder | None = None, request_log: RequestLog | None = None) -> None:
        self.settings = settings
        self.request_log = request_log  # sampled request/response logging per deployment (off by default)
        self.telemetry = telemetry  # per-request numbers for /metrics (aiaas/core/telemetry.py)
        self.limiter = limiter
        self.usage = usage
        self.monitor = monitor  # live-traffic statistics per deployment (services/monitoring.py)
        self.targets = Targets(db, settings)
        self.shadows = Shadows()
        self._in_flight = 0  # callers' classifications running now (on the event loop: no lock)
        # Request rate and latency per deployment by minute (the console's charts), read from `telemetry`.
        self.traffic = DeploymentTraffic(telemetry)
        self.local = LocalRuntime(
            ArtifactLoader(settings, blobs),
            threads=settings.inference_threads,
            memory_budget_bytes=settings.model_memory_budget_mb * 1024 * 1024,
            idle_unload_s=settings.model_idle_unload_s,
            load_nice=settings.model_load_nice,
            on_batch=None if telemetry is None else (
                lambda kind, n: telemetry.observe("aiaas_inference_batch_size", (kind,), n)),
        )
        # With a Ray gateway configured, deployments are Ray Serve applications (one per deployment id);
        # models called by id, and embeddings, stay in process.
        self.remote: GatewayRuntime | None = None
        if settings.ray_gateway_url:
            from aiaas.cluster.gateway import GatewayClient
            from aiaas.serving.remote import GatewayRuntime

            self.remote = GatewayRuntime(GatewayClient(settings.ray_gateway_url, settings.master_secret()),
                                         max_replicas=max(1, settings.ray_max_replicas))

    # -- operations ---------------------------------------------------------------------------
    async def classify(self, caller: Caller, name: str, inputs: Any, *, top_k: int | None = None,
                       field: str = "inputs", deployment_only: bool = False,
                       headers: Mapping[str, str] | None = None) -> Answer:
        """Label each text. `deployment_only`: `name` is a deployment's (the native predict route).
        `headers`: the request's, for a deployment's sticky traffic split."""
        started = time.perf_counter()
        texts = check_inputs(inputs, self.settings, field=field)
        estimate = await self._precharge(caller, texts)
        found = await (self.targets.split(caller.org_id, name) if deployment_only
                       else self.targets.resolve(caller.org_id, name))
        target = found.pick(headers) if isinstance(found, Split) else found
        if target.task == EMBEDDING:
            raise InvalidRequest(f"'{name}' is a base model without a classification head; fine-tune it first.",
                                 param="model")
        t0 = time.perf_counter()
        self._in_flight += 1
        try:
            out = await self._runtime(target).predict(target.ref, texts)
        finally:
            self._in_flight -= 1
        if isinstance(found, Split) and found.shadow is not None:  # the caller never waits for the candidate
            candidate = found.shadow
            # Spare capacity only: one inference thread, and only while no caller's request is running.
            bounded = ModelRef(candidate.artifact, candidate.deployment_id, 1)
            self.shadows.maybe_mirror(caller.org_id, found.deployment or name, candidate.model_id,
                                      found.shadow_percent, out, (time.perf_counter() - t0) * 1000,
                                      lambda: self.local.predict(bounded, texts), spare=self._in_flight == 0)
        await settle(self.limiter, caller, estimate, out.tokens)
        results = shaping.classification_results(out.info, out.rows, top_k=top_k, thresholds=target.thresholds)
        self._sample(caller, target, texts, results, "predict" if deployment_only else "classifications")
        return self._meter(caller, target, results, out, texts, started)

    async def embed(self, caller: Caller, name: str, inputs: Any, *, dimensions: int | None = None,
                    field: str = "input", headers: Mapping[str, str] | None = None) -> Answer:
        """[N, H] float32 embeddings, L2-normalised (after trimming to `dimensions`)."""
        started = time.perf_counter()
        texts = check_inputs(inputs, self.settings, field=field)
        estimate = await self._precharge(caller, texts)
        target = await self.targets.any(caller.org_id, name, headers=headers)
        out = await self.local.embed(target.ref, texts)
        await settle(self.limiter, caller, estimate, out.tokens)
        vectors = shaping.trim_embeddings(out.rows, dimensions).astype(np.float32, copy=False)
        self._sample(caller, target, texts, None, "embeddings")  # the texts: see services/request_log.py
        return self._meter(caller, target, vectors, out, texts, started)

    async def infer_tensors(self, caller: Caller, name: str, version: str | None,
                            request: codec.InferRequest, *, headers: Mapping[str, str] | None = None) -> Answer:
        """Open Inference Protocol: the `text` input in, the outputs the request names out."""
        started = time.perf_counter()
        texts = check_inputs(shaping.texts_of(request), self.settings, field="text")
        estimate = await self._precharge(caller, texts)
        target = await self.oip_target(caller.org_id, name, version, headers=headers)
        if target.task == EMBEDDING:
            out = await self.local.embed(target.ref, texts)
        else:
            out = await self._runtime(target).predict(target.ref, texts)
        await settle(self.limiter, caller, estimate, out.tokens)
        tensors = shaping.output_tensors(target.task, out.info, out.rows, target.thresholds)
        if target.task != EMBEDDING:  # the answer as a classification's, made only when the request is sampled
            self._sample(caller, target, texts, lambda: shaping.classification_results(
                out.info, out.rows, top_k=None, thresholds=target.thresholds), "oip")
        else:
            self._sample(caller, target, texts, None, "oip")
        return self._meter(caller, target, shaping.select_outputs(tensors, request.outputs), out, texts, started)

    async def ready(self, org_id: str, name: str, version: str | None = None) -> bool:
        """Whether the named model is loaded now (a scaled-to-zero model is not: its next request loads it)."""
        target = await self.oip_target(org_id, name, version)
        return await self._runtime(target).ready(target.ref)

    async def healthy(self) -> bool:
        """Whether every runtime can serve (in process: not shut down; Ray: the gateway answers)."""
        return await self.local.healthy() and (self.remote is None or await self.remote.healthy())

    async def oip_target(self, org_id: str, name: str, version: str | None, *,
                         headers: Mapping[str, str] | None = None) -> Target:
        """`name` (a version of it when `version` is given: see Targets.version)."""
        if version is None:
            return await self.targets.any(org_id, name, headers=headers)
        return await self.targets.version(org_id, name, version)

    # -- deployments ----------------------------------------------------------------------------
    async def deployed(self, deployment_id: str, artifact: str, min_replicas: int,
                       max_replicas: int | None = None) -> None:
        """A deployment was created: keep its model loaded if asked; on Ray, start its application
        (autoscaling between min_replicas and max_replicas, else the cluster's AIAAS_RAY_MAX_REPLICAS)."""
        if min_replicas and self.remote is None:  # loaded now; 409 insufficient_memory if it cannot fit
            await self.local.load(ModelRef(artifact, deployment_id), keep_loaded=True)
        elif min_replicas:
            self.local.pin(artifact, True)
        if self.remote is not None:
            await self.remote.load(ModelRef(artifact, deployment_id, max_replicas), keep_loaded=min_replicas > 0)

    async def undeployed(self, org_id: str, name: str, deployment_id: str, *, unpin: str | None) -> None:
        """A deployment was deleted: forget its lookups, let `unpin` (its model, when no other deployment
        keeps it loaded) scale to zero, stop it on Ray."""
        if unpin is not None:
            self.local.pin(unpin, False)
        self.targets.forget(org_id, deployment=name)
        self.traffic.forget(deployment_id)
        if self.remote is not None:
            await self.remote.unload(ModelRef("", deployment_id))

    def model_deleted(self, org_id: str, model_id: str, artifact: str) -> None:
        self.targets.forget(org_id, model=model_id)
        self.local.evict(artifact)

    async def warm(self, artifacts: list[str]) -> None:
        """Load pinned models (deployments with min_replicas=1) at start-up; they never scale to zero."""
        for artifact in artifacts:
            try:
                await self.local.load(ModelRef(artifact), keep_loaded=True)
            except Exception:  # noqa: BLE001 - a broken artifact must not stop the server; requests say why
                log.warning("could not preload %s", artifact, exc_info=True)

    async def aclose(self) -> None:
        self.traffic.stop()
        await self.shadows.aclose()
        if self.remote is not None:
            await self.remote.aclose()
        await self.local.aclose()

    # -- the steps ------------------------------------------------------------------------------
    async def _precharge(self, caller: Caller, texts: list[str]) -> int:
        estimate = estimate_tokens(texts)
        await precharge(self.limiter, caller, estimate)
        return estimate

    def _runtime(self, target: Target) -> Runtime:
        """Deployments run on Ray Serve when a gateway is configured; everything else in process."""
        if self.remote is not None and target.deployment_id is not None:
            return self.remote
        return self.local

    def _sample(self, caller: Caller, target: Target, texts: list[str], results: Results, source: str) -> None:
        """The deployment's sampled request logging (services/request_log.py); off: one comparison."""
        if target.log_sample_rate and self.request_log is not None and target.deployment_id is not None:
            self.request_log.maybe_record(target.log_sample_rate, caller.org_id, target.deployment_id,
                                          target.model_id, texts, results, source=source)

    def _meter(self, caller: Caller, target: Target, results: Any, out: Outputs, texts: list[str],
               started: float) -> Answer:
        self.usage.record_inference(caller.org_id, caller.key_id, target.model_id, 1, out.tokens)
        elapsed = time.perf_counter() - started
        if self.telemetry is not None:
            self.telemetry.inference(target.deployment or "", target.model_id, elapsed,
                                     len(texts), out.tokens, out.unknown_tokens, target.deployment_id)
        if self.monitor is not None and target.deployment_id is not None:
            self.monitor.observe(target.deployment_id, caller.org_id, target.deployment or "", target.model_id,
                                 target.labels, texts, out, target.thresholds)
        return Answer(target.model_id, results, out.tokens)
