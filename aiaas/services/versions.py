"""Registered models as a use case: list, read, delete versions, and set/move/delete aliases.

Moving an alias that deployments follow warms the version it will name before the alias moves
(services/deployments.py), then the deployments take it on their next lookup."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from aiaas.core.errors import CheckpointUnavailable, Conflict, not_found
from aiaas.registry import models as registry
from aiaas.services import audit
from aiaas.services import deployments as dep_service
from aiaas.protocol.versions import registered_public, version_public
from aiaas.store import versions
from aiaas.store.models import FineTuningJob, JobCheckpoint, RegisteredModel

if TYPE_CHECKING:
    from aiaas.services.context import AppContext


def list_registered(state: AppContext, org_id: str) -> list[dict[str, Any]]:
    with state.db.session() as s:
        return [registered_public(rm, versions.aliases(s, rm)) for rm in versions.list_registered(s, org_id)]


def get_registered(state: AppContext, org_id: str, name: str) -> dict[str, Any]:
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        return registered_public(rm, versions.aliases(s, rm))


def list_versions(state: AppContext, org_id: str, name: str) -> list[dict[str, Any]]:
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        rows = versions.list_versions(s, rm)
        by_version = {r.version: r for r in rows}
        al = versions.aliases(s, rm)
        return [version_public(rm, r, aliases_of=al, previous=by_version.get(r.parent_version or -1))
                for r in rows]


def get_version(state: AppContext, org_id: str, name: str, version: int) -> dict[str, Any]:
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        mv = versions.get_version(s, rm, version)
        prev = versions.get_version(s, rm, mv.parent_version) if mv.parent_version else None
        return version_public(rm, mv, aliases_of=versions.aliases(s, rm), previous=prev)


def delete_version(state: AppContext, actor: audit.Actor, org_id: str, name: str, version: int) -> dict[str, Any]:
    """Delete version N and its fine-tuned model; 409 while a deployment serves it."""
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        mv = versions.get_version(s, rm, version)
        versions.check_unused(s, org_id, mv.model_id, what=f"Version {name}/{version}")
        model = registry.get_model(s, org_id, mv.model_id)
        uri = model.artifact_uri
        versions.delete_version_of(s, org_id, mv.model_id)
        s.delete(model)
        audit.record(s, actor, "model.version.deleted", target_type="model", target_id=mv.model_id,
                     details={"registered_model": name, "version": version})
        model_id = mv.model_id
    state.services.inference.model_deleted(org_id, model_id, uri)
    state.services.inference.targets.forget(org_id)
    state.services.blobs.delete(uri)
    return {"object": "model_version", "name": f"{name}/{version}", "model": model_id, "deleted": True}


def register_checkpoint(state: AppContext, actor: audit.Actor, org_id: str, name: str,
                        checkpoint_id: str) -> dict[str, Any]:
    """Make a kept checkpoint of a succeeded job version N+1 of `name` (created on first use), audited.
    Its model id is the checkpoint's OpenAI name, `<fine-tuned model>:ckpt-step-<step>`; its lineage
    names the checkpoint and step next to the job, data and base model."""
    versions.check_name(name)
    with state.db.session() as s:
        ckpt = s.scalar(select(JobCheckpoint).where(JobCheckpoint.org_id == org_id, JobCheckpoint.id == checkpoint_id))
        if ckpt is None:
            raise not_found("checkpoint", checkpoint_id, param="checkpoint")
        job = s.get(FineTuningJob, ckpt.job_id)
        if ckpt.artifact_uri is None or job is None or job.fine_tuned_model is None:
            raise CheckpointUnavailable(
                f"Checkpoint {checkpoint_id} (step {ckpt.step}) has no weights kept: only the checkpoints left at "
                "the end of a succeeded classification job (the newest two and the best) can become versions; "
                "list them with GET /v1/fine_tuning/jobs/{id}/checkpoints ('registrable').", param="checkpoint")
        model_id = f"{job.fine_tuned_model}:ckpt-step-{ckpt.step}"
        done = versions.version_of_model(s, org_id, model_id)
        if done is not None:
            rm = s.get(RegisteredModel, done.registered_model_id)
            raise Conflict(f"Checkpoint {checkpoint_id} is already version "
                           f"{rm.name if rm else '?'}/{done.version} ({model_id}).", param="checkpoint")
        final = registry.get_model(s, org_id, job.fine_tuned_model)
        metrics = {k: v for k, v in (ckpt.metrics or {}).items() if not isinstance(v, list | dict)}
        lineage = {**(final.lineage or {}), "metrics": metrics, "checkpoint": ckpt.id, "step": ckpt.step}
        card = {**(final.card or {}), "model_id": model_id, "metrics": metrics,
                "checkpoint": {"id": ckpt.id, "step": ckpt.step, "fine_tuned_model": final.id}}
        model = registry.register_model(s, model_id=model_id, org_id=org_id, job_id=job.id,
                                        base_model=final.base_model, task=final.task,
                                        artifact_uri=ckpt.artifact_uri, lineage=lineage, card=card,
                                        registered_model=name)
        mv = versions.version_of_model(s, org_id, model.id)
        assert mv is not None
        audit.record(s, actor, "model.version.created", target_type="model", target_id=model_id,
                     details={"registered_model": name, "version": mv.version, "checkpoint": ckpt.id,
                              "step": ckpt.step})
        rm = versions.get_registered(s, org_id, name)
        prev = versions.get_version(s, rm, mv.parent_version) if mv.parent_version else None
        return version_public(rm, mv, aliases_of=versions.aliases(s, rm), previous=prev)


def set_alias(state: AppContext, actor: audit.Actor, org_id: str, name: str, alias: str, version: int) -> dict[str, Any]:
    """Point `name@alias` at `version` (audited). Deployments following the alias move with it, the new
    version loaded before they do."""
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        versions.check_alias(alias)
        mv = versions.get_version(s, rm, version)
        artifact = registry.get_model(s, org_id, mv.model_id).artifact_uri
        before = {m.artifact_uri for m in _following_models(s, org_id, f"{name}@{alias}")}
    dep_service.alias_moved(state, org_id, name, alias, artifact)
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        previous = versions.set_alias(s, rm, alias, version)
        audit.record(s, actor, "model.alias.set", target_type="registered_model", target_id=name,
                     details={"alias": alias, "version": version, "previous_version": previous})
        following = _refresh_following(s, org_id, f"{name}@{alias}")
        in_use = dep_service._artifacts_in_use(s, org_id)
        from aiaas.store import deployments as dep_store

        pinned = set(dep_store.pinned_artifacts(s))
    state.services.inference.targets.forget(org_id)  # every lookup that went through the alias
    for dep_name in following:
        dep_service._switched(state, org_id, dep_name, before, in_use, pinned)
    return {"object": "model.alias", "registered_model": name, "alias": alias, "version": version,
            "previous_version": previous, "deployments": following}


def delete_alias(state: AppContext, actor: audit.Actor, org_id: str, name: str, alias: str) -> dict[str, Any]:
    with state.db.session() as s:
        rm = versions.get_registered(s, org_id, name)
        version = versions.delete_alias(s, rm, alias)
        audit.record(s, actor, "model.alias.deleted", target_type="registered_model", target_id=name,
                     details={"alias": alias, "version": version})
    state.services.inference.targets.forget(org_id)
    return {"object": "model.alias", "registered_model": name, "alias": alias, "deleted": True}


def _following_models(s: Any, org_id: str, ref: str) -> list[Any]:
    model = versions.resolve_ref(s, org_id, ref, param=None) if _alias_exists(s, org_id, ref) else None
    return [model] if model is not None else []


def _alias_exists(s: Any, org_id: str, ref: str) -> bool:
    try:
        return versions.resolve_ref(s, org_id, ref, param=None) is not None
    except Exception:  # noqa: BLE001 - a new alias
        return False


def _refresh_following(s: Any, org_id: str, ref: str) -> list[str]:
    """Deployments following `ref`: their `model` (the primary) re-resolved after the alias moved."""
    names = []
    for dep, spec in versions.current_specs(s, org_id):
        if any(e["model"] == ref for e in spec["traffic"]):
            models = dep_service._resolve_spec(s, org_id, spec)
            dep.model = dep_service._primary(spec, models).id
            dep.updated_at = versions.now()
            names.append(dep.name)
    return names
