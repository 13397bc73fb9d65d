"""/v1/audit_logs — the organisation's audit log, newest first (admin keys only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from aiaas.api.deps import PrincipalDep, SessionDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.protocol.audit import log_public
from aiaas.protocol.common import list_response
from aiaas.services import audit

router = APIRouter(prefix="/v1", tags=["audit"])


@router.get("/audit_logs", responses=documented(r.Page[r.AuditLogPublic], "invalid_request"))
def list_audit_logs(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    action: str | None = None,
) -> dict:
    rows, has_more = audit.list_logs(session, principal.org_id, after=after, limit=limit, action=action)
    return list_response([log_public(r) for r in rows], has_more=has_more)
