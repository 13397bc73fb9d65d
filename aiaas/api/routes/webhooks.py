"""/v1/webhooks — an organisation's webhook endpoints and their delivery log (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.ids import new_id
from aiaas.protocol.common import Deleted, StrictModel, list_response
from aiaas.protocol.webhooks import delivery_public, endpoint_public
from aiaas.services import audit
from aiaas.services import webhooks as service
from aiaas.store import webhooks as store

router = APIRouter(prefix="/v1", tags=["webhooks"])


class WebhookCreate(StrictModel):
    url: str = Field(min_length=1, max_length=2000)
    events: list[str] = Field(min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=500)


@router.post("/webhooks", status_code=201, responses=documented(r.WebhookCreated, "quota_exceeded", status=201, post=True))
async def create_webhook(body: WebhookCreate, principal: PrincipalDep, state: StateDep, actor: ActorDep) -> dict:
    """The answer carries the signing secret (`whsec_...`) once; it is stored sealed and never shown again."""
    events = service.check_events(body.events)
    url = await run_in_threadpool(service.check_url, body.url, allow_private=state.settings.webhook_allow_private)
    secret = service.new_secret()

    def create() -> dict:
        endpoint_id = new_id("wh")
        data_key = state.services.blobs.keyring.data_key(principal.org_id, create=True)
        with state.db.session() as s:
            row = store.create_endpoint(s, principal.org_id, endpoint_id=endpoint_id, url=url, events=events,
                                        description=body.description,
                                        sealed_secret=service.seal(data_key, principal.org_id, endpoint_id, secret))
            audit.record(s, actor, "webhook.created", target_type="webhook", target_id=row.id,
                         details={"url": url, "events": events})
            return endpoint_public(row) | {"secret": secret}

    return await run_in_threadpool(create)


@router.get("/webhooks", responses=documented(r.Page[r.WebhookEndpoint]))
def list_webhooks(principal: PrincipalDep, session: SessionDep, after: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    rows, has_more = store.list_endpoints(session, principal.org_id, after=after, limit=limit)
    return list_response([endpoint_public(r) for r in rows], has_more=has_more)


@router.get("/webhooks/{webhook_id}", responses=documented(r.WebhookEndpoint, "not_found"))
def retrieve_webhook(webhook_id: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return endpoint_public(store.get_endpoint(session, principal.org_id, webhook_id))


@router.delete("/webhooks/{webhook_id}", response_model=Deleted, responses=documented(None, "not_found"))
def delete_webhook(webhook_id: str, principal: PrincipalDep, session: SessionDep, actor: ActorDep) -> dict:
    row = store.get_endpoint(session, principal.org_id, webhook_id)
    session.delete(row)
    audit.record(session, actor, "webhook.deleted", target_type="webhook", target_id=row.id, details={"url": row.url})
    return {"id": row.id, "object": "webhook_endpoint", "deleted": True}


@router.get("/webhooks/{webhook_id}/deliveries", responses=documented(r.Page[r.WebhookDelivery], "not_found"))
def list_deliveries(webhook_id: str, principal: PrincipalDep, session: SessionDep, after: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict:
    """The delivery log, newest first: each event's status, attempts and the answer of each attempt."""
    rows, has_more = store.list_deliveries(session, principal.org_id, webhook_id, after=after, limit=limit)
    return list_response([delivery_public(r) for r in rows], has_more=has_more)
