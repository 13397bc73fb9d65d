"""/v1/fine_tuning/jobs — create, list, retrieve, cancel, events (also as server-sent events), checkpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.clock import now
from aiaas.core.lifecycle import shutting_down
from aiaas.protocol.common import list_response
from aiaas.protocol.jobs import TERMINAL, JobCreate, checkpoint_public, event_public, job_public
from aiaas.services import audit, quotas
from aiaas.services import jobs as job_service
from aiaas.store import jobs as job_store

router = APIRouter(prefix="/v1/fine_tuning", tags=["fine-tuning"])
SSE_POLL_S = 0.5


@router.post("/jobs", responses=documented(r.FineTuningJob, *r.JOB_ERRORS, post=True))
def create_job(body: JobCreate, principal: PrincipalDep, session: SessionDep, state: StateDep,
               actor: ActorDep) -> dict:
    quotas.check_concurrent_jobs(session, state.settings, principal.org_id)
    job = job_service.create_job(session, state.settings, org_id=principal.org_id, body=body)
    job.created_by = principal.key_id  # training usage is metered per key
    audit.record(session, actor, "fine_tuning.job.created", target_type="fine_tuning.job", target_id=job.id,
                 details={"model": job.model, "training_file": job.training_file})
    return job_public(job)


@router.get("/jobs", responses=documented(r.Page[r.FineTuningJob]))
def list_jobs(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict:
    rows, has_more = job_store.list_jobs(session, principal.org_id, after=after, limit=limit)
    return list_response([job_public(r) for r in rows], has_more=has_more)


@router.get("/jobs/{fine_tuning_job_id}", responses=documented(r.FineTuningJob, "not_found"))
def retrieve_job(fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return job_public(job_store.get_job(session, principal.org_id, fine_tuning_job_id))


@router.post("/jobs/{fine_tuning_job_id}/cancel", responses=documented(r.FineTuningJob, "not_found", "conflict", post=True))
def cancel_job(fine_tuning_job_id: str, principal: PrincipalDep, session: SessionDep,
               actor: ActorDep) -> dict:
    job = job_store.request_cancel(session, principal.org_id, fine_tuning_job_id)
    audit.record(session, actor, "fine_tuning.job.cancelled", target_type="fine_tuning.job", target_id=job.id)
    return job_public(job)


@router.get("/jobs/{fine_tuning_job_id}/checkpoints", responses=documented(r.Page[r.JobCheckpoint], "not_found"))
def list_checkpoints(
    fine_tuning_job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict:
    job = job_store.get_job(session, principal.org_id, fine_tuning_job_id)
    rows, has_more = job_store.list_checkpoints(session, principal.org_id, job.id, after=after, limit=limit)
    return list_response([checkpoint_public(r, job.fine_tuned_model) for r in rows], has_more=has_more)


@router.get(
    "/jobs/{fine_tuning_job_id}/events",
    response_model=None,
    responses=documented(r.Page[r.JobEvent], "not_found", media=r.EVENT_STREAM),
)
def list_events(
    fine_tuning_job_id: str,
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
    order: Literal["asc", "desc"] = "desc",
    stream: bool = False,
) -> dict | StreamingResponse:
    """Events newest first (as OpenAI answers); `stream=true` sends them oldest first as server-sent events
    until the job ends."""
    if stream:
        job_store.get_job(session, principal.org_id, fine_tuning_job_id)  # 404 before streaming starts
        return StreamingResponse(
            _event_stream(state, principal.org_id, fine_tuning_job_id, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    rows, has_more = job_store.list_events(session, principal.org_id, fine_tuning_job_id, after=after,
                                           limit=limit, order=order)
    return list_response([event_public(r) for r in rows], has_more=has_more)


async def _event_stream(state, org_id: str, job_id: str, after: str | None) -> AsyncIterator[bytes]:
    def poll(cursor: str | None) -> tuple[list[dict], str]:
        with state.db.session() as s:
            rows, _ = job_store.list_events(s, org_id, job_id, after=cursor, limit=500, order="asc")
            status = job_store.get_job(s, org_id, job_id).status
            return [event_public(r) for r in rows], status

    cursor = after
    while True:
        events, status = await run_in_threadpool(poll, cursor)
        for ev in events:
            cursor = ev["id"]
            yield f"data: {json.dumps(ev)}\n\n".encode()
        if status in TERMINAL and not events:
            yield b"data: [DONE]\n\n"
            return
        if shutting_down():
            # Not [DONE]: the job goes on. The client reconnects (after=<cursor>) to another server.
            final = {"object": "fine_tuning.job.event", "id": None, "created_at": now(), "level": "warn",
                     "message": "The server is shutting down; this stream ends here. Reconnect with "
                                f"after={cursor} to keep following the job.",
                     "type": "message", "data": {"reason": "server_shutdown", "after": cursor, "status": status}}
            yield f"event: shutdown\ndata: {json.dumps(final)}\n\n".encode()
            return
        if not events:
            await asyncio.sleep(SSE_POLL_S)
