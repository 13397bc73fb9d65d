"""API keys and the calling organisation."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep, forget_key
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.protocol.common import list_response
from aiaas.protocol.keys import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyPublic,
    OrganizationPublic,
    key_public,
    organization_public,
)
from aiaas.services import audit
from aiaas.store import tenancy

router = APIRouter(prefix="/v1", tags=["keys"])


@router.get("/organizations/me", response_model=OrganizationPublic, responses=documented(None, "not_found"))
def organization_me(principal: PrincipalDep, session: SessionDep) -> dict:
    org = tenancy.get_organization(session, principal.org_id)
    return organization_public(org)


@router.post("/api_keys", response_model=ApiKeyCreated, status_code=201, responses=documented(None, "quota_exceeded", post=True))
def create_api_key(body: ApiKeyCreate, principal: PrincipalDep, session: SessionDep, actor: ActorDep) -> dict:
    row, plaintext = tenancy.create_key(
        session,
        principal.org_id,
        name=body.name,
        scopes=list(body.scopes),
        expires_in_seconds=body.expires_in_seconds,
        created_by=principal.key_id,
    )
    audit.record(session, actor, "api_key.created", target_type="api_key", target_id=row.id,
                 details={"name": row.name, "scopes": list(row.scopes), "expires_at": row.expires_at})
    return key_public(row) | {"key": plaintext}


@router.get("/api_keys", responses=documented(r.Page[ApiKeyPublic]))
def list_api_keys(
    principal: PrincipalDep,
    session: SessionDep,
    state: StateDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    rows, has_more = tenancy.list_keys(session, principal.org_id, after=after, limit=limit, order=order)
    return list_response([key_public(r) for r in rows], has_more=has_more)


@router.delete("/api_keys/{key_id}", response_model=ApiKeyPublic, responses=documented(None, "not_found", "invalid_request"))
def revoke_api_key(key_id: str, principal: PrincipalDep, session: SessionDep, actor: ActorDep,
                   state: StateDep) -> dict:
    row = tenancy.revoke_key(session, principal.org_id, key_id)
    forget_key(state, key_id)
    audit.record(session, actor, "api_key.revoked", target_type="api_key", target_id=row.id)
    return key_public(row)
