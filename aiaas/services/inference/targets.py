"""What a model name in a request resolves to, cached per (organisation, name)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import AiaasError, not_found
from aiaas.core.settings import Settings
from aiaas.registry import models as registry
from aiaas.security.ttlcache import TtlCache
from aiaas.serving.interface import EMBEDDING, ModelRef, thresholds_in_label_order
from aiaas.store import deployments as dep_store
from aiaas.store.db import Database


@dataclass(frozen=True)
class Target:
    """The model a request runs: the id answered to the client, its artifact, and its card's labels."""

    model_id: str
    artifact: str  # a blob URI (fine-tuned) or "base:<id>" (exported base model)
    task: str
    thresholds: tuple[float, ...] | None = None  # multi-label, in label order
    deployment: str | None = None
    deployment_id: str | None = None
    labels: tuple[str, ...] = ()
    ref: ModelRef = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", ModelRef(self.artifact, self.deployment_id))


def _model_target(model: Any, dep: Any = None) -> Target:
    card = model.card or {}
    labels = tuple(str(label) for label in card.get("labels") or [])
    thresholds = thresholds_in_label_order(card.get("thresholds"), labels)
    return Target(model.id, model.artifact_uri, model.task, None if thresholds is None else tuple(thresholds),
                  deployment=dep.name if dep is not None else None,
                  deployment_id=dep.id if dep is not None else None, labels=labels)


def resolve_target(db: Database, settings: Settings, org_id: str, name: str, *, param: str = "model") -> Target:
    """A deployment name, a fine-tuned model id, or a base model id (embeddings only). Runs in a thread."""
    with db.session() as s:
        if not name.startswith("ft:"):
            try:
                dep = dep_store.get_deployment(s, org_id, name)
            except AiaasError:
                dep = None
            if dep is not None:
                return _model_target(registry.get_model(s, org_id, dep.model, param=param), dep)
        else:
            return _model_target(registry.get_model(s, org_id, name, param=param))
    from aiaas.services import catalog

    if any(b["id"] == name for b in catalog.base_models(settings.base_models_dir)):
        return Target(name, f"base:{name}", EMBEDDING)
    raise not_found("model", name, param=param)


def deployment_target(db: Database, org_id: str, name: str) -> Target:
    """A deployment by name (never a model id), for the native predict route. Runs in a thread."""
    with db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        return _model_target(registry.get_model(s, org_id, dep.model), dep)


class Targets:
    """Resolution with a cache: (kind, org, name) -> Target, invalidated here on delete, by TTL elsewhere."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.lookups = TtlCache(settings.lookup_cache_seconds)

    async def any(self, org_id: str, name: str, *, param: str = "model") -> Target:
        key = ("target", org_id, name)
        target: Target | None = self.lookups.get(key)
        if target is None:
            target = await run_in_threadpool(resolve_target, self.db, self.settings, org_id, name, param=param)
            self.lookups.put(key, target)
        return target

    async def deployment(self, org_id: str, name: str) -> Target:
        key = ("deployment", org_id, name)
        target: Target | None = self.lookups.get(key)
        if target is None:
            target = await run_in_threadpool(deployment_target, self.db, org_id, name)
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
