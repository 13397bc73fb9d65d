"""Registered model versions (one per succeeded job), scoped by organisation."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import not_found
from aiaas.store import versions
from aiaas.store.models import Model

_SLUG = re.compile(r"[^a-z0-9-]+")


def slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:40] or "org"


def fine_tuned_model_id(*, base: str, org_name: str, suffix: str | None, job_id: str) -> str:
    """`ft:<base>:<org>:<suffix>:<job>`, as OpenAI names fine-tuned models."""
    return f"ft:{base}:{slug(org_name)}:{suffix or ''}:{job_id}"


def register_model(
    session: Session,
    *,
    model_id: str,
    org_id: str,
    job_id: str,
    base_model: str,
    task: str,
    artifact_uri: str,
    lineage: dict[str, Any],
    card: dict[str, Any],
    registered_model: str | None = None,
) -> Model:
    row = Model(
        id=model_id, org_id=org_id, job_id=job_id, base_model=base_model, task=task,
        artifact_uri=artifact_uri, created_at=now(), lineage=lineage, card=card,
    )
    session.add(row)
    session.flush()
    versions.add_version(session, row, name=registered_model)  # version N+1 of its registered model, in the same transaction
    return row


def get_model(session: Session, org_id: str, model_id: str, *, param: str | None = "model") -> Model:
    row = session.scalar(select(Model).where(Model.org_id == org_id, Model.id == model_id))
    if row is None:
        raise not_found("model", model_id, param=param)
    return row


def list_models(session: Session, org_id: str) -> list[Model]:
    return list(session.scalars(select(Model).where(Model.org_id == org_id).order_by(Model.created_at.desc())))
