"""Registered models, their numbered versions and aliases, and deployment revisions, scoped by organisation.

A fine-tuned model (`ft:…` id, the `models` table) becomes version N+1 of a registered model when it is
registered; `name/N` and `name@alias` name a version wherever a model is named, `ft:…` ids stay valid.
A deployment's spec (traffic entries naming models, stickiness) lives in its newest revision.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas.core.errors import Conflict, InvalidName, not_found
from aiaas.core.ids import new_id
from aiaas.store.models import (
    Deployment,
    DeploymentRevision,
    FineTuningJob,
    JobCheckpoint,
    Model,
    ModelAlias,
    ModelVersion,
    RegisteredModel,
)
from aiaas.core.clock import now

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,62}[a-z0-9])?$")
VERSION_REF = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,63})/([0-9]{1,9})$")
ALIAS_REF = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,63})@([a-z0-9][a-z0-9_.-]{0,63})$")
_SLUG = re.compile(r"[^a-z0-9_.-]+")


def check_name(name: str, *, what: str = "registered model", param: str = "name") -> str:
    if not NAME_RE.match(name):
        raise InvalidName(
            f"Invalid {what} name '{name[:80]}': use 1-64 lowercase letters, digits, '-', '_' and '.', "
            "starting and ending with a letter or digit.", param=param)
    return name


def check_alias(alias: str) -> str:
    check_name(alias, what="alias", param="alias")
    if alias.isdigit() or alias == "latest":
        raise InvalidName(f"'{alias}' cannot be an alias: numbers name versions and 'latest' is reserved.",
                             param="alias")
    return alias


def name_from(*candidates: str | None) -> str:
    """The first candidate that makes a valid name once lowercased and slugged ('My_Suffix' -> 'my_suffix')."""
    for candidate in candidates:
        name = _SLUG.sub("-", str(candidate or "").lower()).strip("-._")[:64].strip("-._")
        if name and NAME_RE.match(name):
            return name
    return "model"


def derived_name(session: Session, model: Model) -> str:
    """The registered model a fine-tuned model belongs to: the job's `registered_model` option (set when
    the job was created: named, or derived from its `suffix`), else its `suffix`, else its base model."""
    job = session.get(FineTuningJob, model.job_id) if model.job_id else None
    options = (job.options or {}) if job is not None else {}
    parts = model.id.split(":")
    suffix = job.suffix if job is not None else (parts[3] if len(parts) == 5 else None)
    return name_from(options.get("registered_model"), suffix, model.base_model)


def add_version(session: Session, model: Model, *, name: str | None = None) -> ModelVersion:
    """Register `model` as the next version of its registered model (created on first use)."""
    name = check_name(name) if name else derived_name(session, model)
    rm = session.scalar(select(RegisteredModel).where(RegisteredModel.org_id == model.org_id,
                                                      RegisteredModel.name == name).with_for_update())
    t = now()
    if rm is None:
        rm = RegisteredModel(id=new_id("rm"), org_id=model.org_id, name=name, latest_version=0, created_at=t,
                             updated_at=t)
        session.add(rm)
        session.flush()
    parent = rm.latest_version or None
    rm.latest_version += 1
    rm.updated_at = t
    lineage = model.lineage or {}
    row = ModelVersion(
        id=new_id("mv"), org_id=model.org_id, registered_model_id=rm.id, version=rm.latest_version,
        model_id=model.id, job_id=model.job_id, parent_version=parent, created_at=t,
        metrics=_metrics(lineage.get("metrics") or (model.card or {}).get("metrics") or {}),
        lineage={
            "job_id": model.job_id,
            "base_model": model.base_model,
            "parent_version": parent,
            "training_file_sha256": (lineage.get("training_file") or {}).get("sha256"),
            "validation_file_sha256": (lineage.get("validation_file") or {}).get("sha256"),
        } | ({"checkpoint": lineage["checkpoint"], "step": lineage.get("step")} if lineage.get("checkpoint") else {}),
    )
    session.add(row)
    session.flush()
    return row


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalar metrics only (the card's curves and matrices stay on the model)."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}


# -- reading ------------------------------------------------------------------------------------------------
def get_registered(session: Session, org_id: str, name: str, *, param: str | None = "name") -> RegisteredModel:
    rm = session.scalar(select(RegisteredModel).where(RegisteredModel.org_id == org_id, RegisteredModel.name == name))
    if rm is None:
        raise not_found("registered model", name, param=param)
    return rm


def list_registered(session: Session, org_id: str) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).where(RegisteredModel.org_id == org_id)
                                .order_by(RegisteredModel.name)))


def list_versions(session: Session, rm: RegisteredModel) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).where(ModelVersion.registered_model_id == rm.id)
                                .order_by(ModelVersion.version.desc())))


def get_version(session: Session, rm: RegisteredModel, version: int, *, param: str | None = "version") -> ModelVersion:
    row = session.scalar(select(ModelVersion).where(ModelVersion.registered_model_id == rm.id,
                                                    ModelVersion.version == version))
    if row is None:
        raise not_found("model version", f"{rm.name}/{version}", param=param)
    return row


def version_of_model(session: Session, org_id: str, model_id: str) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.org_id == org_id, ModelVersion.model_id == model_id))


def aliases(session: Session, rm: RegisteredModel) -> dict[str, int]:
    rows = session.scalars(select(ModelAlias).where(ModelAlias.registered_model_id == rm.id))
    return {a.alias: a.version for a in rows}


def resolve_ref(session: Session, org_id: str, ref: str, *, param: str | None = "model") -> Model | None:
    """The fine-tuned model `ref` names (`ft:…`, `name/N`, `name@alias`); None when `ref` is none of those
    forms (a deployment or base model name). A form that names nothing is a 404."""
    if ref.startswith("ft:"):
        return _model(session, org_id, ref, param=param)
    if m := VERSION_REF.match(ref):
        rm = session.scalar(select(RegisteredModel).where(RegisteredModel.org_id == org_id,
                                                          RegisteredModel.name == m[1]))
        if rm is None:
            return None  # maybe a base model id with a slash
        version = get_version(session, rm, int(m[2]), param=param).version
    elif m := ALIAS_REF.match(ref):
        rm = get_registered(session, org_id, m[1], param=param)
        alias = session.get(ModelAlias, (rm.id, m[2]))
        if alias is None:
            raise not_found("alias", ref, param=param)
        version = alias.version
    else:
        return None
    mv = get_version(session, rm, version, param=param)
    return _model(session, org_id, mv.model_id, param=param)


def _model(session: Session, org_id: str, model_id: str, *, param: str | None) -> Model:
    row = session.scalar(select(Model).where(Model.org_id == org_id, Model.id == model_id))
    if row is None:
        raise not_found("model", model_id, param=param)
    return row


# -- aliases ------------------------------------------------------------------------------------------------
def set_alias(session: Session, rm: RegisteredModel, alias: str, version: int) -> int | None:
    """Point `alias` at `version`; returns the version it pointed at before (None: new alias)."""
    check_alias(alias)
    get_version(session, rm, version)
    row = session.get(ModelAlias, (rm.id, alias))
    previous = None if row is None else row.version
    if row is None:
        session.add(ModelAlias(registered_model_id=rm.id, alias=alias, org_id=rm.org_id, version=version,
                               updated_at=now()))
    else:
        row.version, row.updated_at = version, now()
    session.flush()
    return previous


def delete_alias(session: Session, rm: RegisteredModel, alias: str) -> int:
    row = session.get(ModelAlias, (rm.id, alias))
    if row is None:
        raise not_found("alias", f"{rm.name}@{alias}", param="alias")
    in_use = [d.name for d, spec in current_specs(session, rm.org_id)
              if any(e["model"] == f"{rm.name}@{alias}" for e in spec["traffic"])]
    if in_use:
        raise Conflict(f"Deployment(s) {', '.join(in_use)} follow {rm.name}@{alias}; point them elsewhere first.",
                       param="alias")
    session.delete(row)
    session.flush()
    return row.version


# -- deployment revisions -----------------------------------------------------------------------------------
def initial_spec(model_ref: str) -> dict[str, Any]:
    return {"traffic": [{"model": model_ref, "weight": 100}], "sticky_header": None}


def latest_revision(session: Session, dep: Deployment) -> DeploymentRevision | None:
    return session.scalar(select(DeploymentRevision).where(DeploymentRevision.deployment_id == dep.id)
                          .order_by(DeploymentRevision.revision.desc()).limit(1))


def current_spec(session: Session, dep: Deployment) -> dict[str, Any]:
    rev = latest_revision(session, dep)
    return rev.spec if rev is not None else initial_spec(dep.model)  # deployments made before revisions


def current_specs(session: Session, org_id: str) -> list[tuple[Deployment, dict[str, Any]]]:
    deps = session.scalars(select(Deployment).where(Deployment.org_id == org_id))
    return [(d, current_spec(session, d)) for d in deps]


def add_revision(session: Session, dep: Deployment, spec: dict[str, Any], *, actor_key_id: str | None,
                 reason: str) -> DeploymentRevision:
    last = session.scalar(select(func.max(DeploymentRevision.revision))
                          .where(DeploymentRevision.deployment_id == dep.id)) or 0
    row = DeploymentRevision(id=new_id("deprev"), org_id=dep.org_id, deployment_id=dep.id, revision=last + 1,
                             spec=spec, actor_key_id=actor_key_id, reason=reason, created_at=now())
    session.add(row)
    session.flush()
    return row


def list_revisions(session: Session, dep: Deployment) -> list[DeploymentRevision]:
    return list(session.scalars(select(DeploymentRevision).where(DeploymentRevision.deployment_id == dep.id)
                                .order_by(DeploymentRevision.revision.desc())))


def models_in_use(session: Session, org_id: str) -> dict[str, list[str]]:
    """model id -> the deployments whose current traffic resolves to it."""
    used: dict[str, list[str]] = {}
    for dep, spec in current_specs(session, org_id):
        ids = {dep.model}
        for entry in [*spec["traffic"], *([spec["shadow"]] if spec.get("shadow") else [])]:
            try:
                model = resolve_ref(session, org_id, entry["model"], param=None)
            except Exception:  # noqa: BLE001 - a dangling reference uses nothing
                model = None
            if model is not None:
                ids.add(model.id)
        for model_id in ids:
            used.setdefault(model_id, []).append(dep.name)
    return used


def check_unused(session: Session, org_id: str, model_id: str, *, what: str) -> None:
    deps = models_in_use(session, org_id).get(model_id)
    if deps:
        raise Conflict(f"{what} is served by deployment(s) {', '.join(sorted(deps))}; update or delete them first.",
                       param="model")


def delete_version_of(session: Session, org_id: str, model_id: str) -> None:
    """The fine-tuned model is being deleted: drop its version row and aliases pointing at it; a checkpoint
    it was built from can no longer become a version (its artifact goes with the model)."""
    model = session.scalar(select(Model).where(Model.org_id == org_id, Model.id == model_id))
    if model is not None:
        for ckpt in session.scalars(select(JobCheckpoint).where(JobCheckpoint.org_id == org_id,
                                                                JobCheckpoint.artifact_uri == model.artifact_uri)):
            ckpt.artifact_uri = None
    mv = version_of_model(session, org_id, model_id)
    if mv is None:
        return
    for a in session.scalars(select(ModelAlias).where(ModelAlias.registered_model_id == mv.registered_model_id,
                                                      ModelAlias.version == mv.version)):
        session.delete(a)
    session.delete(mv)
