"""/v1/batches — create, list, retrieve, cancel (OpenAI's Batch API; works with `client.batches.*`).

A batch is only recorded here; the workers answer its lines (aiaas/jobs/batch_runner.py), never
this process."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.protocol.batches import BatchCreate, batch_public
from aiaas.protocol.common import list_response
from aiaas.services import audit
from aiaas.services import batches as batch_service
from aiaas.store import batches as batch_store

router = APIRouter(prefix="/v1", tags=["batches"])


@router.post("/batches", responses=documented(r.BatchPublic, *r.BATCH_ERRORS, post=True))
def create_batch(body: BatchCreate, principal: PrincipalDep, session: SessionDep, state: StateDep,
                 actor: ActorDep) -> dict:
    row = batch_service.create(session, state.settings, org_id=principal.org_id, key_id=principal.key_id, body=body)
    audit.record(session, actor, "batch.created", target_type="batch", target_id=row.id,
                 details={"endpoint": row.endpoint, "input_file_id": row.input_file_id})
    return batch_public(row)


@router.get("/batches", responses=documented(r.Page[r.BatchPublic]))
def list_batches(principal: PrincipalDep, session: SessionDep, after: str | None = None,
                 limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    rows, has_more = batch_store.list_batches(session, principal.org_id, after=after, limit=limit)
    return list_response([batch_public(r) for r in rows], has_more=has_more)


@router.get("/batches/{batch_id}", responses=documented(r.BatchPublic, "not_found"))
def retrieve_batch(batch_id: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return batch_public(batch_store.get(session, principal.org_id, batch_id))


@router.post("/batches/{batch_id}/cancel", responses=documented(r.BatchPublic, "not_found", "conflict", post=True))
def cancel_batch(batch_id: str, principal: PrincipalDep, session: SessionDep, actor: ActorDep) -> dict:
    row = batch_store.request_cancel(session, principal.org_id, batch_id)
    audit.record(session, actor, "batch.cancelled", target_type="batch", target_id=row.id)
    return batch_public(row)
