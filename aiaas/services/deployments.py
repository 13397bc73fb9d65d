"""Deployments that change without downtime: create, update (model, alias, traffic split), roll back.

Every change is a numbered revision (who, when, what). An update resolves the new traffic, loads and
warms every model it names (runtime.load) *before* the revision is committed, then drops this process's
cached lookups so the next request takes the new split; requests already running finish on the model
they hold, and a model no deployment serves any more is unloaded (the cache closes it when its last
request ends). Other API processes take the change within `lookup_cache_seconds`.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from anyio import from_thread
from pydantic import Field
from sqlalchemy.exc import IntegrityError

from aiaas.core.errors import Conflict, InvalidRequest, not_found
from aiaas.protocol.common import StrictModel
from aiaas.protocol.inference import MAX_REPLICAS, deployment_public
from aiaas.registry import models as registry
from aiaas.services import audit, quotas
from aiaas.serving.interface import EMBEDDING, ModelRef
from aiaas.store import deployments as dep_store
from aiaas.store import versions
from aiaas.store.models import Model

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from aiaas.services.context import AppContext

MAX_TRAFFIC_ENTRIES = 5


class TrafficEntry(StrictModel):
    model: str = Field(min_length=1, max_length=300)
    weight: int = Field(ge=0, le=100)


class ShadowSpec(StrictModel):
    model: str = Field(min_length=1, max_length=300)
    percent: int = Field(ge=1, le=100)


class RequestLogging(StrictModel):
    """Sampled request/response logging (services/request_log.py): the share of requests kept (0 = off)
    and how many days their records are kept."""

    sample_rate: float = Field(ge=0.0, le=1.0)
    retention_days: int = Field(default=30, ge=1, le=3650)


class DeploymentUpdate(StrictModel):
    """PATCH /v1/deployments/{name}: any of these; what is left out stays as it is."""

    model: str | None = Field(default=None, min_length=1, max_length=300)  # all traffic to one model
    traffic: list[TrafficEntry] | None = Field(default=None, min_length=1, max_length=MAX_TRAFFIC_ENTRIES)
    sticky_header: str | None = Field(default=None, max_length=64)
    min_replicas: int | None = Field(default=None, ge=0, le=1)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    shadow: ShadowSpec | None = None  # mirror `percent` of requests to `model`; null stops it
    request_logging: RequestLogging | None = None  # not a revision: traffic is unchanged


def check_replicas(min_replicas: int, max_replicas: int | None) -> None:
    """min_replicas <= max_replicas (None: no bound of the deployment's own)."""
    if max_replicas is not None and max_replicas < max(min_replicas, 1):
        raise InvalidRequest(f"max_replicas ({max_replicas}) must be at least min_replicas ({min_replicas}) "
                             "and at least 1.", param="max_replicas")


def resolve_model(session: Session, org_id: str, ref: str, *, param: str = "model") -> Model:
    """A callable fine-tuned model by any of its names (`ft:…`, `name/N`, `name@alias`)."""
    model = versions.resolve_ref(session, org_id, ref, param=param)
    if model is None:
        raise not_found("model", ref, param=param)
    return model


def _resolve_spec(session: Session, org_id: str, spec: dict[str, Any]) -> list[Model]:
    models = [resolve_model(session, org_id, e["model"], param=f"traffic.{i}.model")
              for i, e in enumerate(spec["traffic"])]
    if spec.get("shadow"):
        models = [*models, resolve_model(session, org_id, spec["shadow"]["model"], param="shadow.model")]
    tasks = {m.task for m in models}
    if len(tasks) > 1:
        raise InvalidRequest(f"Every model of a traffic split (and its shadow) must have the same task; "
                             f"got {sorted(tasks)}.", param="traffic")
    if EMBEDDING in tasks:
        raise InvalidRequest("A deployment serves fine-tuned models, not base models.", param="model")
    return models


def _new_spec(current: dict[str, Any], change: DeploymentUpdate) -> dict[str, Any]:
    if change.model is not None and change.traffic is not None:
        raise InvalidRequest("Give either 'model' (all traffic to it) or 'traffic', not both.", param="traffic")
    spec = {"traffic": list(current["traffic"]), "sticky_header": current.get("sticky_header")}
    if change.model is not None:
        spec["traffic"] = [{"model": change.model, "weight": 100}]
    if change.traffic is not None:
        spec["traffic"] = [e.model_dump() for e in change.traffic]
        if sum(e.weight for e in change.traffic) != 100:
            raise InvalidRequest(f"Traffic weights must add up to 100; they add up to "
                                 f"{sum(e.weight for e in change.traffic)}.", param="traffic")
        if len({e.model for e in change.traffic}) != len(change.traffic):
            raise InvalidRequest("Each model may appear once in 'traffic'.", param="traffic")
    if current.get("shadow"):
        spec["shadow"] = current["shadow"]
    if "shadow" in change.model_fields_set:
        spec["shadow"] = change.shadow.model_dump() if change.shadow is not None else None
    if "sticky_header" in change.model_fields_set:
        spec["sticky_header"] = change.sticky_header.lower() if change.sticky_header else None
    return spec


def _primary(spec: dict[str, Any], models: list[Model]) -> Model:
    """The model with the most traffic (the first on a tie): what `model` of the deployment says."""
    weights = [e["weight"] for e in spec["traffic"]]
    return models[weights.index(max(weights))]  # models[len(traffic)] is the shadow, never the primary


def _warm(state: AppContext, artifacts: list[str], *, keep_loaded: bool) -> None:
    """Load (and, for min_replicas=1, pin) every model before any traffic moves to it (in a thread)."""
    local = state.services.inference.local
    for artifact in dict.fromkeys(artifacts):
        from_thread.run(partial(local.load, ModelRef(artifact), keep_loaded=keep_loaded))


def _switched(state: AppContext, org_id: str, dep_name: str, old: set[str], keep: set[str], pinned: set[str],
              *, remote: tuple[str, str, bool, int | None] | None = None) -> None:
    """The new revision is committed: drop cached lookups, then unpin/unload models nothing serves now."""
    inference = state.services.inference
    inference.targets.forget(org_id, deployment=dep_name)
    for artifact in old - keep:
        if artifact not in pinned:
            inference.local.pin(artifact, False)
        inference.local.evict(artifact)  # closed when its last in-flight request ends
    if remote is not None and inference.remote is not None:
        dep_id, artifact, keep_loaded, max_replicas = remote
        from_thread.run(partial(inference.remote.load, ModelRef(artifact, dep_id, max_replicas),
                                keep_loaded=keep_loaded))


def _artifacts_in_use(session: Session, org_id: str) -> set[str]:
    used = versions.models_in_use(session, org_id)
    return {m.artifact_uri for m in session.query(Model).filter(Model.org_id == org_id, Model.id.in_(list(used)))}


def apply(state: AppContext, actor: audit.Actor, org_id: str, name: str, change: DeploymentUpdate | None, *,
          reason: str = "updated", to_revision: int | None = None) -> dict[str, Any]:
    """Change a deployment to a new revision (an update, or a rollback to `to_revision`). Blocking."""
    if change is not None and change.request_logging is not None:
        out = _set_request_logging(state, actor, org_id, name, change.request_logging)
        if not change.model_fields_set - {"request_logging"}:
            return out
    with state.db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        current = versions.current_spec(s, dep)
        if to_revision is not None:
            spec = dict(_revision_spec(s, dep, to_revision))
        else:
            assert change is not None
            spec = _new_spec(current, change)
        models = _resolve_spec(s, org_id, spec)
        try:
            old_models = _resolve_spec(s, org_id, current)
        except Exception:  # noqa: BLE001 - a version deleted under the old spec: nothing of it to unload
            old_models = []
        min_replicas = dep.min_replicas if change is None or change.min_replicas is None else change.min_replicas
        max_replicas = dep.max_replicas if change is None or change.max_replicas is None else change.max_replicas
        if to_revision is not None and "max_replicas" in spec:  # a rollback restores the bound too
            max_replicas = spec["max_replicas"]
        check_replicas(min_replicas, max_replicas)
        spec["max_replicas"] = max_replicas
        dep_id = dep.id
    _warm(state, [m.artifact_uri for m in models], keep_loaded=min_replicas > 0)
    with state.db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        primary = _primary(spec, models)
        dep.model, dep.min_replicas, dep.updated_at = primary.id, min_replicas, versions.now()
        dep.max_replicas = max_replicas
        try:
            rev = versions.add_revision(s, dep, spec, actor_key_id=actor.key_id, reason=reason)
        except IntegrityError as exc:
            raise Conflict(f"Deployment '{name}' was changed by another request; retry.", param="name") from exc
        audit.record(s, actor, "deployment.updated", target_type="deployment", target_id=dep.id,
                     details={"name": name, "revision": rev.revision, "reason": reason, "spec": spec})
        s.flush()
        in_use = _artifacts_in_use(s, org_id)
        pinned = set(dep_store.pinned_artifacts(s))
        out = describe(s, dep)
    _switched(state, org_id, name, {m.artifact_uri for m in old_models}, in_use, pinned,
              remote=(dep_id, primary.artifact_uri, min_replicas > 0, max_replicas))
    return out


def _set_request_logging(state: AppContext, actor: audit.Actor, org_id: str, name: str,
                         change: RequestLogging) -> dict[str, Any]:
    with state.db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        dep.request_log_sample_rate, dep.request_log_retention_days = change.sample_rate, change.retention_days
        dep.updated_at = versions.now()
        audit.record(s, actor, "deployment.updated", target_type="deployment", target_id=dep.id,
                     details={"name": name, "request_logging": change.model_dump()})
        s.flush()
        out = describe(s, dep)
    state.services.inference.targets.forget(org_id, deployment=name)  # the next request samples at the new rate
    return out


def _revision_spec(session: Session, dep: Any, revision: int | None) -> dict[str, Any]:
    revs = versions.list_revisions(session, dep)
    if revision is None:
        if len(revs) < 2:
            raise Conflict(f"Deployment '{dep.name}' has no previous revision to roll back to.", param="revision")
        return revs[1].spec
    for r in revs:
        if r.revision == revision:
            return r.spec
    raise not_found("revision", str(revision), param="revision")


def rollback(state: AppContext, actor: audit.Actor, org_id: str, name: str, revision: int | None) -> dict[str, Any]:
    """Back to `revision` (default: the one before the newest), as a new revision."""
    with state.db.session() as s:
        dep = dep_store.get_deployment(s, org_id, name)
        target = _revision_spec(s, dep, revision)
    del target  # checked; apply() reads it again inside its own transaction
    if revision is None:
        with state.db.session() as s:
            revision = versions.list_revisions(s, dep_store.get_deployment(s, org_id, name))[1].revision
    return apply(state, actor, org_id, name, None, reason="rollback", to_revision=revision)


def alias_moved(state: AppContext, org_id: str, rm_name: str, alias: str, new_artifact: str) -> None:
    """Before an alias moves: warm the version it will name when a deployment follows it (blocking)."""
    ref = f"{rm_name}@{alias}"
    with state.db.session() as s:
        following = [(d.name, d.min_replicas) for d, spec in versions.current_specs(s, org_id)
                     if any(e["model"] == ref for e in spec["traffic"])]
    if following:
        _warm(state, [new_artifact], keep_loaded=any(r for _, r in following))


def describe(session: Session, dep: Any) -> dict[str, Any]:
    """The deployment's public shape with its current revision's spec."""
    rev = versions.latest_revision(session, dep)
    spec = rev.spec if rev is not None else versions.initial_spec(dep.model)
    return deployment_public(dep, spec, rev.revision if rev is not None else 0)


def create(session: Session, state: AppContext, actor: audit.Actor, org_id: str, *, name: str, ref: str,
           min_replicas: int, max_replicas: int | None = None) -> Any:
    """A new deployment of `ref` (`ft:…`, `name/N`, `name@alias`) as revision 1, audited; its model starts
    serving (pinned and loaded when min_replicas >= 1) once the row exists. Called from a worker thread."""
    check_replicas(min_replicas, max_replicas)
    model = create_spec(session, org_id, ref)
    quotas.check_deployments(session, state.settings, org_id)
    row = dep_store.create_deployment(session, org_id, name=name, model=model.id, min_replicas=min_replicas,
                                      max_replicas=max_replicas)
    versions.add_revision(session, row, versions.initial_spec(ref) | {"max_replicas": max_replicas},
                          actor_key_id=actor.key_id, reason="created")
    audit.record(session, actor, "deployment.created", target_type="deployment", target_id=row.id,
                 details={"name": row.name, "model": row.model, "min_replicas": row.min_replicas,
                          "max_replicas": row.max_replicas})
    session.flush()  # a conflict answers before anything starts serving
    from_thread.run(state.services.inference.deployed, row.id, model.artifact_uri, row.min_replicas,
                    row.max_replicas)
    return row


def delete(session: Session, state: AppContext, actor: audit.Actor, org_id: str, name: str) -> Any:
    """Delete a deployment, audited; its model may scale to zero again unless another deployment keeps it
    loaded. Called from a worker thread."""
    row = dep_store.get_deployment(session, org_id, name)
    session.delete(row)
    audit.record(session, actor, "deployment.deleted", target_type="deployment", target_id=row.id,
                 details={"name": row.name, "model": row.model})
    unpin = None
    if row.min_replicas:
        session.flush()
        artifact = registry.get_model(session, org_id, row.model).artifact_uri
        unpin = None if artifact in dep_store.pinned_artifacts(session) else artifact
    from_thread.run(partial(state.services.inference.undeployed, org_id, row.name, row.id, unpin=unpin))
    return row


def create_spec(session: Session, org_id: str, ref: str) -> Model:
    """The model a new deployment serves, by any of its names."""
    model = resolve_model(session, org_id, ref)
    registry.get_model(session, org_id, model.id)
    return model
