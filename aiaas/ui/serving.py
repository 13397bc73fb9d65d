"""Which deployments send traffic to a model version, for the registered model page and the model page.

A deployment's current revision names models the way a user wrote them: `ft:…`, `name/N` or `name@alias`
(an alias followed as it moves), in its traffic split (with a weight) or as its shadow (with the share of
requests mirrored). A version is served by every entry that names it by any of those; one query reads the
organisation's deployments with their current specs (not one per deployment)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from aiaas.store.models import Deployment, DeploymentRevision
from aiaas.store.versions import initial_spec


@dataclass(frozen=True)
class Serving:
    """One way a deployment reaches a version: `kind` "traffic" (`share`: its weight, %) or "shadow"
    (`share`: the percentage mirrored); `via` is the reference as written (`toy@prod`, `toy/2`, `ft:…`)."""

    deployment: str
    kind: str
    share: int
    via: str

    @property
    def alias(self) -> str | None:
        return self.via.split("@", 1)[1] if "@" in self.via else None


def current_specs(db: Session, org_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(deployment name, current spec) for each of the organisation's deployments, by name."""
    latest = (select(DeploymentRevision.deployment_id, func.max(DeploymentRevision.revision).label("rev"))
              .where(DeploymentRevision.org_id == org_id).group_by(DeploymentRevision.deployment_id).subquery())
    rows = db.execute(
        select(Deployment.name, Deployment.model, DeploymentRevision.spec)
        .outerjoin(latest, latest.c.deployment_id == Deployment.id)
        .outerjoin(DeploymentRevision, and_(DeploymentRevision.deployment_id == Deployment.id,
                                            DeploymentRevision.revision == latest.c.rev))
        .where(Deployment.org_id == org_id).order_by(Deployment.name))
    return [(name, spec if spec is not None else initial_spec(model)) for name, model, spec in rows]


def served_by(specs: list[tuple[str, dict[str, Any]]], refs: dict[str, Any]) -> dict[Any, list[Serving]]:
    """refs: every name of each version (`ft:…`, `name/N`, `name@alias`) -> that version's key.
    Returns key -> the deployments' entries that name it (traffic first, by deployment name)."""
    found: dict[Any, list[Serving]] = {}
    for name, spec in specs:
        for entry in spec.get("traffic") or []:
            key = refs.get(entry.get("model"))
            if key is not None:
                found.setdefault(key, []).append(Serving(name, "traffic", int(entry.get("weight", 0)), entry["model"]))
        shadow = spec.get("shadow")
        if shadow and (key := refs.get(shadow.get("model"))) is not None:
            found.setdefault(key, []).append(Serving(name, "shadow", int(shadow.get("percent", 0)), shadow["model"]))
    return found


def version_refs(rm_name: str, versions: list[dict[str, Any]], aliases: dict[str, int]) -> dict[str, int]:
    """Each name of each version of registered model `rm_name` -> its version number."""
    refs: dict[str, int] = {}
    for v in versions:
        refs[v["model"]] = v["version"]
        refs[f"{rm_name}/{v['version']}"] = v["version"]
    for alias, version in aliases.items():
        refs[f"{rm_name}@{alias}"] = version
    return refs
