"""Registered model versions (one per succeeded job), scoped by organisation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import not_found
from aiaas.store import versions
from aiaas.store.db import Database
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


# Models per read of model_pages(): ~18 KB of Python objects each while a batch is written. 100 a batch left
# the API process's pymalloc arenas 11 MiB larger after 7,500 requests of the soak's mix with 600 models
# (concurrent listings' bursts; 25: 1 MiB, bench/README.md "Soak"); through the index a batch costs one
# short range read, so more batches cost little.
LIST_BATCH = 25


def model_ids(session: Session, org_id: str) -> list[str]:
    """The organisation's model ids, newest first, without loading cards and lineage."""
    return list(session.scalars(select(Model.id).where(Model.org_id == org_id)
                                .order_by(Model.created_at.desc(), Model.id.desc())))


def model_pages(db: Database, org_id: str, *, batch: int | None = None) -> Iterator[list[Model]]:
    """Every model of the organisation, newest first, `batch` at a time, each batch read in its own short
    session (keyset on created_at, id).

    Why: a listing that loads every model at once holds every card (~5 KB of JSON each, several times that
    as Python objects) until the answer is sent; with thousands of models, a few concurrent listings left
    the API process tens of MB larger, and larger again with every model a job added (the soak,
    bench/README.md). One batch at a time keeps a listing's memory the same whatever the number of
    models, and no read transaction stays open while a slow client reads the answer."""
    batch = LIST_BATCH if batch is None else batch
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch!r}")
    after: tuple[int, str] | None = None
    while True:
        query = select(Model).where(Model.org_id == org_id)
        if after is not None:
            # A row-value comparison: a range of the (org_id, created_at, id) index, so a batch reads its own
            # rows only (migration 0013), not every model of the organisation, sorted.
            query = query.where(tuple_(Model.created_at, Model.id) < tuple_(after[0], after[1]))
        with db.session() as s:
            rows = list(s.scalars(query.order_by(Model.created_at.desc(), Model.id.desc()).limit(batch)))
        more = len(rows) == batch
        after = (rows[-1].created_at, rows[-1].id) if rows else None
        if rows:
            yield rows
        del rows  # not held while the next batch is read
        if not more:
            return
