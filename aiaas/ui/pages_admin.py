"""Models, deployments (with the try-it box), usage and cost, API keys, and the audit log."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import InvalidRequest
from aiaas.registry import models as registry
from aiaas.security.keys import SCOPES
from aiaas.security.ratelimit import Limits
from aiaas.services import audit
from aiaas.services import deployments as dep_service
from aiaas.services import usage as usage_service
from aiaas.services.inference import Caller
from aiaas.services.inference.metering import refusal
from aiaas.services.quotas import org_limits
from aiaas.store import deployments as dep_store
from aiaas.store import tenancy
from aiaas.store.models import Model
from aiaas.store.pagination import page
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.pages import PAGE, actor
from aiaas.ui.render import SECURITY_HEADERS, ConsoleRoute, bar_rows, redirect, render

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
DAY_S = 86_400


# ---- models -------------------------------------------------------------------------------------
@router.get("/models")
def models(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("models")
    rows, has_more = page(c.db, select(Model).where(Model.org_id == c.org_id), Model.id, after=after, limit=PAGE)
    return render(request, "models.html", models=rows, has_more=has_more, after=after, nav="models")


@router.get("/models/{model_id:path}")
def model_page(request: Request, c: ConsoleDep, model_id: str) -> HTMLResponse:
    c.require("models")
    row = registry.get_model(c.db, c.org_id, model_id)
    return render(request, "model.html", model=row, card=row.card or {}, lineage=row.lineage or {}, nav="models")


# ---- deployments --------------------------------------------------------------------------------
@router.get("/deployments")
def deployments(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("deployments")
    rows, has_more = dep_store.list_deployments(c.db, c.org_id, after=after, limit=PAGE)
    models_, _ = (page(c.db, select(Model).where(Model.org_id == c.org_id), Model.id, after=None, limit=100)
                  if c.may("create_deployment") else ([], False))
    return render(request, "deployments.html", deployments=rows, has_more=has_more, after=after, models=models_,
                  nav="deployments")


@router.post("/deployments")
def create_deployment(request: Request, c: ConsoleDep, name: Annotated[str, Form(max_length=64)],
                      model: Annotated[str, Form(max_length=300)],
                      csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("create_deployment")
    row = dep_service.create(c.db, c.state, actor(request, c), c.org_id, name=name, ref=model, min_replicas=0)
    return redirect(f"/ui/deployments/{row.name}")


@router.get("/deployments/{name}")
def deployment_page(request: Request, c: ConsoleDep, name: str) -> HTMLResponse:
    c.require("deployments")
    row = dep_store.get_deployment(c.db, c.org_id, name)
    rate = None
    if c.may("usage"):
        recorder = c.state.services.usage
        if recorder is not None:
            recorder.flush()
        end = int(time.time()) + 1
        by_day = usage_service.summarize(c.db, c.org_id, start=end - 14 * DAY_S, end=end, group_by="day",
                                         prices=usage_service.PriceSheet.from_settings(c.state.settings))
        by_model = usage_service.summarize(c.db, c.org_id, start=end - DAY_S, end=end, group_by="model",
                                           prices=usage_service.PriceSheet.from_settings(c.state.settings))
        rate = {"last_24h": sum(b["requests"] for b in by_model["data"] if b["model"] == row.model),
                "org_by_day": bar_rows({b["day"]: b["requests"] for b in by_day["data"]})}
    return render(request, "deployment.html", deployment=row, rate=rate, nav="deployments")


@router.post("/deployments/{name}/delete")
def delete_deployment(request: Request, c: ConsoleDep, name: str,
                      csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("delete_deployment")
    dep_service.delete(c.db, c.state, actor(request, c), c.org_id, name)
    return redirect("/ui/deployments")


@router.post("/deployments/{name}/try")
async def try_it(request: Request, c: ConsoleDep, name: str, text: Annotated[str, Form()],
                 csrf: Annotated[str, Form(max_length=100)] = "") -> JSONResponse:
    """The try-it box: what POST /v1/deployments/{name}/predict does, for the signed-in key
    (same scope, same token charge, same usage metering)."""
    c.check_csrf(csrf)
    c.require("predict")
    state = c.state
    org = await run_in_threadpool(tenancy.get_organization, c.db, c.org_id)
    limits = org_limits(state.settings, org.settings)
    rpm, tpm = limits.rate_limit_requests_per_minute, limits.rate_limit_tokens_per_minute
    if rpm:  # one request against the key's requests/min, as every API call
        decision = await state.services.ratelimit.check(f"r:{c.principal.key_id}", Limits(requests_per_minute=rpm))
        if not decision.allowed:
            raise refusal(decision)
    # The same use case as POST /v1/deployments/{name}/predict: check, charge, resolve, run, settle, shape, meter.
    caller = Caller(c.org_id, c.principal.key_id, Limits(tokens_per_minute=tpm) if tpm else None, {})
    answer = await state.services.inference.classify(caller, name, [text], field="text", deployment_only=True)
    result = answer.results[0]
    return JSONResponse({"model": answer.model_id, "deployment": name, "result": result}, headers=SECURITY_HEADERS)


# ---- usage and cost -----------------------------------------------------------------------------
@router.get("/usage")
def usage(request: Request, c: ConsoleDep, days: int = 30) -> HTMLResponse:
    c.require("usage")
    days = max(1, min(days, 366))
    recorder = c.state.services.usage
    if recorder is not None:
        recorder.flush()
    end = int(time.time()) + 1
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
