"""Deployments: list, create, the deployment page (traffic split and sticky header, revisions, rollback,
request rate and p50/p99 latency redrawn live from a fragment, shadow agreement, the try-it box), change
model / alias / split / shadow, roll back, delete.

Changes call the same use cases as the API routes (services/deployments.py: apply, rollback, create,
delete): each is a numbered, audited revision, its models loaded before traffic moves."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from aiaas.core import clock
from aiaas.core.errors import InvalidRequest
from aiaas.protocol.versions import revision_public
from aiaas.security.ratelimit import Limits
from aiaas.services import deployments as dep_service
from aiaas.services import usage as usage_service
from aiaas.services.deployments import MAX_TRAFFIC_ENTRIES, DeploymentUpdate
from aiaas.services.inference import Caller
from aiaas.services.inference.metering import refusal
from aiaas.services.quotas import org_limits
from aiaas.store import deployments as dep_store
from aiaas.store import tenancy
from aiaas.store import versions as version_store
from aiaas.store.models import Model, ModelAlias, ModelVersion, RegisteredModel
from aiaas.store.pagination import page
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.charts import traffic_charts
from aiaas.ui.pages import PAGE, actor
from aiaas.ui.render import SECURITY_HEADERS, ConsoleRoute, redirect, render

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
DAY_S = 86_400
REVISIONS_SHOWN = 20
REFS_OFFERED = 100
REFRESH_S = 5  # how often the page redraws its charts (console.js; `?refresh=N` picks 1..60)


def model_refs(c: ConsoleDep) -> list[str]:
    """What the change forms offer: `name@alias` and `name/N` of the organisation's registered models."""
    aliases = c.db.execute(
        select(RegisteredModel.name, ModelAlias.alias).join(ModelAlias, ModelAlias.registered_model_id ==
                                                            RegisteredModel.id)
        .where(RegisteredModel.org_id == c.org_id).order_by(RegisteredModel.name, ModelAlias.alias)
        .limit(REFS_OFFERED))
    numbered = c.db.execute(
        select(RegisteredModel.name, ModelVersion.version).join(ModelVersion, ModelVersion.registered_model_id ==
                                                                RegisteredModel.id)
        .where(RegisteredModel.org_id == c.org_id)
        .order_by(RegisteredModel.name, ModelVersion.version.desc()).limit(REFS_OFFERED))
    return [f"{n}@{a}" for n, a in aliases] + [f"{n}/{v}" for n, v in numbered]


@router.get("/deployments")
def deployments(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("deployments")
    rows, has_more = dep_store.list_deployments(c.db, c.org_id, after=after, limit=PAGE)
    models_, _ = (page(c.db, select(Model).where(Model.org_id == c.org_id), Model.id, after=None, limit=100)
                  if c.may("create_deployment") else ([], False))
    refs = model_refs(c) if c.may("create_deployment") else []
    return render(request, "deployments.html", deployments=rows, has_more=has_more, after=after, models=models_,
                  refs=refs, nav="deployments")


@router.post("/deployments")
def create_deployment(request: Request, c: ConsoleDep, name: Annotated[str, Form(max_length=64)],
                      model: Annotated[str, Form(max_length=300)],
                      csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("create_deployment")
    row = dep_service.create(c.db, c.state, actor(request, c), c.org_id, name=name, ref=model.strip(),
                             min_replicas=0)
    return redirect(f"/ui/deployments/{row.name}")


def _requests_24h(c: ConsoleDep, model: str) -> int:
    """Metered requests to the deployment's model over the last day (every key, every deployment of it)."""
    recorder = c.state.services.usage
    if recorder is not None:
        recorder.flush()
    end = clock.now() + 1
    by_model = usage_service.summarize(c.db, c.org_id, start=end - DAY_S, end=end, group_by="model",
                                       prices=usage_service.PriceSheet.from_settings(c.state.settings))
    return sum(b["requests"] for b in by_model["data"] if b["model"] == model)


def _refresh_s(refresh: int | None) -> int:
    return REFRESH_S if refresh is None else max(1, min(60, refresh))


@router.get("/deployments/{name}/charts")
def deployment_charts(request: Request, c: ConsoleDep, name: str, refresh: int | None = None) -> HTMLResponse:
    """The deployment page's live part alone (request rate and p50/p99 by minute), which the page fetches
    every few seconds while it is shown. A sync route: with a shared metrics directory it reads files."""
    c.require("traffic")
    row = dep_store.get_deployment(c.db, c.org_id, name)
    charts = traffic_charts(c.state.services.inference.traffic.series(row.id))
    return render(request, "_traffic_live.html", deployment=row, charts=charts, refresh_s=_refresh_s(refresh))


@router.get("/deployments/{name}")
def deployment_page(request: Request, c: ConsoleDep, name: str, refresh: int | None = None) -> HTMLResponse:
    c.require("deployments")
    row = dep_store.get_deployment(c.db, c.org_id, name)
    desc = dep_service.describe(c.db, row)  # as GET /v1/deployments/{name}: the current revision's spec
    inference = c.state.services.inference
    revisions = ([revision_public(r) for r in version_store.list_revisions(c.db, row)[:REVISIONS_SHOWN]]
                 if c.may("revisions") else [])
    shadow = None
    if c.may("shadow"):  # as GET /v1/deployments/{name}/shadow
        stats = inference.shadows.stats(c.org_id, name)
        shadow = {"spec": desc.get("shadow"), "stats": stats.public() if stats is not None else None}
    charts = traffic_charts(inference.traffic.series(row.id)) if c.may("traffic") else None
    changing = c.may("update_deployment")
    return render(request, "deployment.html", deployment=row, desc=desc, revisions=revisions, shadow=shadow,
                  charts=charts, requests_24h=_requests_24h(c, row.model) if c.may("usage") else None,
                  refs=model_refs(c) if changing else [], max_entries=MAX_TRAFFIC_ENTRIES,
                  refresh_s=_refresh_s(refresh), nav="deployments")


def _may_change(c: ConsoleDep, csrf: str, section: str = "update_deployment") -> None:
    """The form's token, then the scope (before anything in the form is looked at)."""
    c.check_csrf(csrf)
    c.require(section)


def _apply(request: Request, c: ConsoleDep, name: str, **fields: Any) -> RedirectResponse:
    """PATCH /v1/deployments/{name} with `fields`, checked by the API's own body model."""
    try:
        change = DeploymentUpdate(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None
    dep_service.apply(c.state, actor(request, c), c.org_id, name, change)
    return redirect(f"/ui/deployments/{name}")


@router.post("/deployments/{name}/model")
def change_model(request: Request, c: ConsoleDep, name: str, model: Annotated[str, Form(max_length=300)],
                 csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    """All traffic to one model: `ft:…`, `name/N`, or `name@alias` (the deployment then follows the alias)."""
    _may_change(c, csrf)
    return _apply(request, c, name, model=model.strip())


@router.post("/deployments/{name}/traffic")
def change_traffic(request: Request, c: ConsoleDep, name: str,
                   ref: Annotated[list[str], Form()],
                   weight: Annotated[list[str], Form()],
                   sticky_header: Annotated[str, Form(max_length=64)] = "",
                   csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    """A canary split: up to MAX_TRAFFIC_ENTRIES (model, weight) rows adding up to 100; empty rows skipped.
    `sticky_header`: the request header whose value keeps a caller on one model of the split (empty: none,
    each request picks at random); the form always sends it, so saving the form sets or clears it."""
    _may_change(c, csrf)
    if len(ref) != len(weight) or len(ref) > MAX_TRAFFIC_ENTRIES:
        raise InvalidRequest("Each traffic row needs a model and a weight.", param="traffic")
    entries = []
    for i, (r, w) in enumerate(zip(ref, weight, strict=True)):
        if not r.strip() and not w.strip():
            continue
        if not w.strip().isdigit() or len(w.strip()) > 3:
            raise InvalidRequest(f"Row {i + 1}: the weight must be a whole number from 0 to 100.",
                                 param=f"traffic.{i}.weight")
        entries.append({"model": r.strip(), "weight": int(w)})
    return _apply(request, c, name, traffic=entries, sticky_header=sticky_header.strip() or None)


@router.post("/deployments/{name}/shadow")
def change_shadow(request: Request, c: ConsoleDep, name: str, model: Annotated[str, Form(max_length=300)] = "",
                  percent: Annotated[str, Form(max_length=4)] = "",
                  csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    """Mirror `percent` of requests to `model` (the caller only ever gets the primary's answer); no model
    stops the shadow."""
    _may_change(c, csrf)
    if not model.strip():
        return _apply(request, c, name, shadow=None)
    if not percent.strip().isdigit():
        raise InvalidRequest("The shadow's share must be a whole percentage from 1 to 100.", param="shadow.percent")
    return _apply(request, c, name, shadow={"model": model.strip(), "percent": int(percent)})


@router.post("/deployments/{name}/rollback")
def rollback(request: Request, c: ConsoleDep, name: str, revision: Annotated[str, Form(max_length=12)] = "",
             csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    """POST /v1/deployments/{name}/rollback: back to `revision` (default: the one before the newest), as a
    new revision."""
    _may_change(c, csrf, "rollback")
    if revision.strip() and not revision.strip().isdigit():
        raise InvalidRequest("The revision to roll back to must be a number.", param="revision")
    dep_service.rollback(c.state, actor(request, c), c.org_id, name, int(revision) if revision.strip() else None)
    return redirect(f"/ui/deployments/{name}")


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
