"""Deployments: a named endpoint serving one model, scoped by organisation."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import Conflict, InvalidRequest, not_found
from aiaas.core.ids import new_id
from aiaas.store.models import Deployment
from aiaas.store.pagination import Order, page

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidRequest(
            f"Invalid deployment name '{name[:80]}': use 1-64 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit.",
            param="name",
        )
    return name


def create_deployment(session: Session, org_id: str, *, name: str, model: str, min_replicas: int,
                      max_replicas: int | None = None) -> Deployment:
    check_name(name)
    if session.scalar(select(Deployment.id).where(Deployment.org_id == org_id, Deployment.name == name)):
        raise Conflict(f"A deployment named '{name}' already exists; delete it or pick another name.", param="name")
    t = now()
    row = Deployment(id=new_id("dep"), org_id=org_id, name=name, model=model, min_replicas=min_replicas,
                     max_replicas=max_replicas, created_at=t, updated_at=t)
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        raise Conflict(f"A deployment named '{name}' already exists.", param="name") from exc
    return row


def get_deployment(session: Session, org_id: str, name: str) -> Deployment:
    row = session.scalar(select(Deployment).where(Deployment.org_id == org_id, Deployment.name == name))
    if row is None:
        raise not_found("deployment", name, param="name")
    return row


def list_deployments(
    session: Session, org_id: str, *, after: str | None, limit: int, order: Order = "desc"
) -> tuple[list[Deployment], bool]:
    stmt = select(Deployment).where(Deployment.org_id == org_id)
    return page(session, stmt, Deployment.id, after=after, limit=limit, order=order)


def pinned_artifacts(session: Session) -> list[str]:
    """Artifact URIs that some deployment keeps loaded (min_replicas=1), across organisations."""
    from aiaas.store.models import Model

    stmt = (
        select(Model.artifact_uri)
        .join(Deployment, (Deployment.model == Model.id) & (Deployment.org_id == Model.org_id))
        .where(Deployment.min_replicas > 0)
        .distinct()
    )
    return list(session.scalars(stmt))
