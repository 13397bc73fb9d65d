"""What a model name in a request resolves to, cached per (organisation, name)."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import AiaasError, NotFound, not_found
from aiaas.core.settings import Settings
from aiaas.security.ttlcache import TtlCache
from aiaas.serving.interface import EMBEDDING, ModelRef, thresholds_in_label_order
from aiaas.store import deployments as dep_store
from aiaas.store import versions
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
    log_sample_rate: float = 0.0  # the deployment's sampled request logging (services/request_log.py)
    max_replicas: int | None = None  # the deployment's bound on the inference threads it may hold
    ref: ModelRef = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", ModelRef(self.artifact, self.deployment_id, self.max_replicas))


def _model_target(model: Any, dep: Any = None) -> Target:
    card = model.card or {}
    labels = tuple(str(label) for label in card.get("labels") or [])
    thresholds = thresholds_in_label_order(card.get("thresholds"), labels)
    return Target(model.id, model.artifact_uri, model.task, None if thresholds is None else tuple(thresholds),
                  deployment=dep.name if dep is not None else None,
                  deployment_id=dep.id if dep is not None else None, labels=labels,
                  log_sample_rate=float(dep.request_log_sample_rate or 0.0) if dep is not None else 0.0,
                  max_replicas=getattr(dep, "max_replicas", None))


def resolve_target(db: Database, settings: Settings, org_id: str, name: str, *,
                   param: str = "model") -> Target | Split:
    """A deployment name (its traffic split), a fine-tuned model (`ft:…`, `name/N`, `name@alias`), or a
    base model id (embeddings only). Runs in a thread."""
    with db.session() as s:
        if not name.startswith("ft:"):
            try:
                dep = dep_store.get_deployment(s, org_id, name)
            except AiaasError:
                dep = None
            if dep is not None:
                return _split(s, org_id, dep)
        model = versions.resolve_ref(s, org_id, name, param=param)
        if model is not None:
            return _model_target(model)
    from aiaas.services import catalog

    if any(b["id"] == name for b in catalog.base_models(settings.base_models_dir)):
        return Target(name, f"base:{name}", EMBEDDING)
    with db.session() as s:  # a registered model's bare name: its latest version
        from aiaas.store.models import RegisteredModel

        rm = s.query(RegisteredModel).filter_by(org_id=org_id, name=name).one_or_none()
        if rm is not None and rm.latest_version:
            model = versions.resolve_ref(s, org_id, f"{name}/{rm.latest_version}", param=param)
            if model is not None:
                return _model_target(model)
    raise not_found("model", name, param=param)


def _split(s: Any, org_id: str, dep: Any) -> Split:
    """A deployment's current traffic: each entry's model resolved now (an alias to the version it names)."""
    spec = versions.current_spec(s, dep)
    targets, weights = [], []
    for i, entry in enumerate(spec["traffic"]):
        if entry["weight"] <= 0:
            continue
        model = versions.resolve_ref(s, org_id, entry["model"], param=f"traffic.{i}.model")
        if model is None:
            raise not_found("model", entry["model"], param=f"traffic.{i}.model")
        targets.append(_model_target(model, dep))
        weights.append(int(entry["weight"]))
    shadow, percent = None, 0
    if spec.get("shadow"):
        try:  # a candidate that went away stops shadowing, never serving
            candidate = versions.resolve_ref(s, org_id, spec["shadow"]["model"], param="shadow.model")
        except AiaasError:
            candidate = None
        if candidate is not None:
            shadow, percent = _model_target(candidate), int(spec["shadow"]["percent"])
    return Split(tuple(targets), tuple(weights), spec.get("sticky_header"), dep.name, shadow, percent)


def deployment_target(db: Database, org_id: str, name: str) -> Split:
    """A deployment by name (never a model id), for the native predict route. Runs in a thread."""
    with db.session() as s:
        return _split(s, org_id, dep_store.get_deployment(s, org_id, name))


def _registered_of(s: Any, org_id: str, name: str, found: Target | Split) -> Any:
    """The registered model `name` belongs to: itself, else that of the model it resolves to (a
    deployment's: its first traffic target's)."""
    from aiaas.store.models import RegisteredModel

    rm = s.query(RegisteredModel).filter_by(org_id=org_id, name=name).one_or_none()
    if rm is None:
        mv = versions.version_of_model(s, org_id, _targets(found)[0].model_id)
        rm = None if mv is None else s.get(RegisteredModel, mv.registered_model_id)
    return rm


def version_target(db: Database, settings: Settings, org_id: str, name: str, version: str) -> Target:
    """Version `version` of what `name` names (a registered model, a version or alias of one, a
    deployment: the versions of its model's registered model). A model outside any registered model
    (a base model) has the one version "1". Runs in a thread."""
    found = resolve_target(db, settings, org_id, name)
    with db.session() as s:
        rm = _registered_of(s, org_id, name, found)
        if rm is None:
            if version == "1":
                return _targets(found)[0]
            raise NotFound(f"Model '{name}' has no version '{version}'; available: 1.", param="version")
        if not version.isdigit():
            raise NotFound(f"Model '{name}' has no version '{version}'; versions are numbers.", param="version")
        model = versions.resolve_ref(s, org_id, f"{rm.name}/{int(version)}", param="version")
        assert model is not None
        return _model_target(model)


def version_names(db: Database, settings: Settings, org_id: str, name: str) -> list[str]:
    """The versions `name` has (newest first), as OIP metadata lists them. Runs in a thread."""
    found = resolve_target(db, settings, org_id, name)
    with db.session() as s:
        rm = _registered_of(s, org_id, name, found)
        return ["1"] if rm is None else [str(v.version) for v in versions.list_versions(s, rm)]


@dataclass(frozen=True)
class Split:
    """A deployment's traffic: targets with integer weights; a request picks one (by its sticky header's
    value when the deployment names one and the request carries it, else at random)."""

    targets: tuple[Target, ...]
    weights: tuple[int, ...]
    sticky_header: str | None = None
    deployment: str | None = None
    shadow: Target | None = None  # a candidate that a share of requests is mirrored to
    shadow_percent: int = 0

    def pick(self, headers: Mapping[str, str] | None = None) -> Target:
        if len(self.targets) == 1:
            return self.targets[0]
        total = sum(self.weights)
        key = headers.get(self.sticky_header) if headers is not None and self.sticky_header else None
        if key is not None:
            digest = hashlib.blake2b(f"{self.deployment}\0{key}".encode(), digest_size=8).digest()
            point = int.from_bytes(digest, "big") % total
        else:
            point = random.randrange(total)  # nosec B311 - picks a canary by weight; not a secret
        for target, weight in zip(self.targets, self.weights, strict=True):
            if point < weight:
                return target
            point -= weight
        return self.targets[-1]


def _targets(found: Target | Split) -> tuple[Target, ...]:
    return found.targets if isinstance(found, Split) else (found,)


class Targets:
    """Resolution with a cache: (kind, org, name) -> Target, invalidated here on delete, by TTL elsewhere."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.lookups = TtlCache(settings.lookup_cache_seconds)
        # Bumped by forget(): a lookup that read the database before a change and finishes after it
        # must not cache what it read (it would serve the old deployment for a whole TTL).
        self.generation = 0
        self._generation_lock = threading.Lock()

    def _put(self, key: Any, value: Any, generation: int) -> None:
        with self._generation_lock:
            if generation == self.generation:
                self.lookups.put(key, value)

    async def any(self, org_id: str, name: str, *, param: str = "model",
                  headers: Mapping[str, str] | None = None) -> Target:
        """What `name` runs now; a deployment picks one of its traffic targets (see Split.pick)."""
        found = await self.resolve(org_id, name, param=param)
        return found.pick(headers) if isinstance(found, Split) else found

    async def resolve(self, org_id: str, name: str, *, param: str = "model") -> Target | Split:
        key = ("target", org_id, name)
        target: Target | Split | None = self.lookups.get(key)
        if target is None:
            generation = self.generation
            target = await run_in_threadpool(resolve_target, self.db, self.settings, org_id, name, param=param)
            self._put(key, target, generation)
        return target

    async def deployment(self, org_id: str, name: str, *, headers: Mapping[str, str] | None = None) -> Target:
        return (await self.split(org_id, name)).pick(headers)

    async def split(self, org_id: str, name: str) -> Split:
        """A deployment's traffic (never a model id), for the native predict route."""
        key = ("deployment", org_id, name)
        split: Split | None = self.lookups.get(key)
        if split is None:
            generation = self.generation
            split = await run_in_threadpool(deployment_target, self.db, org_id, name)
            self._put(key, split, generation)
        return split

    async def version(self, org_id: str, name: str, version: str) -> Target:
        key = ("version", org_id, name, version)
        target: Target | None = self.lookups.get(key)
        if target is None:
            generation = self.generation
            target = await run_in_threadpool(version_target, self.db, self.settings, org_id, name, version)
            self._put(key, target, generation)
        return target

    async def version_names(self, org_id: str, name: str) -> list[str]:
        return await run_in_threadpool(version_names, self.db, self.settings, org_id, name)

    def forget(self, org_id: str, *, deployment: str | None = None, model: str | None = None) -> None:
        """A deployment or model changed in this process: drop cached lookups that mention it."""
        def stale(key: Any, target: Any) -> bool:
            if key[1] != org_id:
                return False
            if deployment is None and model is None:
                return True  # an alias or version changed: every lookup of the organisation
            return (
                (deployment is not None and (key[2] == deployment or target.deployment == deployment))
                or (model is not None and (key[2] == model or any(t.model_id == model for t in _targets(target))))
            )

        with self._generation_lock:  # a lookup that read before this point will not cache what it read
            self.generation += 1
            self.lookups.invalidate(stale)
