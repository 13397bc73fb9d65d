"""Usage and cost, API keys, and the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from aiaas.core import clock
from aiaas.core.errors import InvalidRequest
from aiaas.security.keys import SCOPES
from aiaas.services import audit
from aiaas.services import usage as usage_service
from aiaas.store import tenancy
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.pages import PAGE, actor
from aiaas.ui.render import ConsoleRoute, bar_rows, redirect, render

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
DAY_S = 86_400


# ---- usage and cost -----------------------------------------------------------------------------
@router.get("/usage")
def usage(request: Request, c: ConsoleDep, days: int = 30) -> HTMLResponse:
    c.require("usage")
    days = max(1, min(days, 366))
    recorder = c.state.services.usage
    if recorder is not None:
        recorder.flush()
    end = clock.now() + 1
    start = end - days * DAY_S
    prices = usage_service.PriceSheet.from_settings(c.state.settings)
    groups = {g: usage_service.summarize(c.db, c.org_id, start=start, end=end, group_by=g, prices=prices)
              for g in ("day", "model", "key")}
    cost_by_day = bar_rows({b["day"]: b["cost"]["total"] if isinstance(b.get("cost"), dict) else 0
                            for b in groups["day"]["data"]})
    requests_by_day = bar_rows({b["day"]: b["requests"] for b in groups["day"]["data"]})
    return render(request, "usage.html", groups=groups, days=days, cost_by_day=cost_by_day,
                  requests_by_day=requests_by_day, nav="usage")


# ---- API keys -----------------------------------------------------------------------------------
@router.get("/keys")
def keys(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("keys")
    rows, has_more = tenancy.list_keys(c.db, c.org_id, after=after, limit=PAGE)
    return render(request, "keys.html", keys=rows, has_more=has_more, after=after, scopes=SCOPES, created=None,
                  nav="keys")


@router.post("/keys")
def create_key(request: Request, c: ConsoleDep, name: Annotated[str, Form(min_length=1, max_length=200)],
               scope: Annotated[str, Form(max_length=20)], csrf: Annotated[str, Form(max_length=100)] = "",
               expires_in_days: Annotated[str, Form(max_length=6)] = "") -> HTMLResponse:
    c.check_csrf(csrf)
    c.require("create_key")
    if scope not in SCOPES:
        raise InvalidRequest(f"Unknown scope '{scope}'; use one of {', '.join(SCOPES)}.", param="scope")
    expires = int(expires_in_days) * DAY_S if expires_in_days.strip().isdigit() else None
    row, plaintext = tenancy.create_key(c.db, c.org_id, name=name, scopes=[scope], expires_in_seconds=expires,
                                        created_by=c.principal.key_id)
    audit.record(c.db, actor(request, c), "api_key.created", target_type="api_key", target_id=row.id,
                 details={"name": row.name, "scopes": list(row.scopes), "expires_at": row.expires_at})
    rows, has_more = tenancy.list_keys(c.db, c.org_id, after=None, limit=PAGE)
    # The key is shown once, in this response (no-store); it is never stored or shown again.
    return render(request, "keys.html", status=201, keys=rows, has_more=has_more, after=None, scopes=SCOPES,
                  created={"row": row, "key": plaintext}, nav="keys")


@router.post("/keys/{key_id}/revoke")
def revoke_key(request: Request, c: ConsoleDep, key_id: str,
               csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("revoke_key")
    row = tenancy.revoke_key(c.db, c.org_id, key_id)
    # as the API's revoke does: stop honouring cached authentications at once
    c.state.services.auth_cache.invalidate(lambda _k, v: v[0].key_id == key_id)
    audit.record(c.db, actor(request, c), "api_key.revoked", target_type="api_key", target_id=row.id)
    return redirect("/ui/keys")


# ---- audit log ----------------------------------------------------------------------------------
@router.get("/audit")
def audit_log(request: Request, c: ConsoleDep, after: str | None = None, action: str | None = None) -> HTMLResponse:
    c.require("audit")
    rows, has_more = audit.list_logs(c.db, c.org_id, after=after, limit=PAGE, action=action or None)
    return render(request, "audit.html", logs=rows, has_more=has_more, after=after, action=action or "",
                  actions=sorted(audit.ACTIONS), nav="audit")
