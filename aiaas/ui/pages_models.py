"""Models: fine-tuned models and registered models with their versions and aliases side by side (metric
deltas against the previous version, lineage, the deployments that send each version traffic), alias
set/move/delete, and the download of a version.

Every change goes through the same service call as its API route (services/versions.py,
services/download.py), which checks, audits and moves deployments that follow an alias."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from sqlalchemy import select
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from aiaas.core.errors import InvalidRequest
from aiaas.protocol.versions import registered_public
from aiaas.registry import models as registry
from aiaas.services import download
from aiaas.services import versions as version_service
from aiaas.store import versions as version_store
from aiaas.store.models import Model, ModelAlias, RegisteredModel
from aiaas.store.pagination import page
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.charts import metric_cells, metric_columns
from aiaas.ui.pages import PAGE, actor
from aiaas.ui.render import SECURITY_HEADERS, ConsoleRoute, redirect, render
from aiaas.ui.serving import current_specs, served_by, version_refs

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
VERSION_FIELD = 10**9


def _registered_page(c: ConsoleDep, after: str | None) -> tuple[list[dict], bool]:
    """A page of registered models by name, as GET /v1/registered_models shapes them (aliases read in one
    query for the page, not one per model)."""
    stmt = select(RegisteredModel).where(RegisteredModel.org_id == c.org_id)
    if after:
        stmt = stmt.where(RegisteredModel.name > after)
    rows = list(c.db.scalars(stmt.order_by(RegisteredModel.name).limit(PAGE + 1)))
    aliases: dict[str, dict[str, int]] = {r.id: {} for r in rows[:PAGE]}
    for a in c.db.scalars(select(ModelAlias).where(ModelAlias.registered_model_id.in_(list(aliases)))):
        aliases[a.registered_model_id][a.alias] = a.version
    return [registered_public(r, aliases[r.id]) for r in rows[:PAGE]], len(rows) > PAGE


@router.get("/models")
def models(request: Request, c: ConsoleDep, after: str | None = None, rm_after: str | None = None) -> HTMLResponse:
    c.require("models")
    rows, has_more = page(c.db, select(Model).where(Model.org_id == c.org_id), Model.id, after=after, limit=PAGE)
    registered, more_registered = _registered_page(c, rm_after) if c.may("registered") else ([], False)
    return render(request, "models.html", models=rows, has_more=has_more, after=after, registered=registered,
                  more_registered=more_registered, rm_after=rm_after, nav="models")


@router.get("/registered/{name}")
def registered_page(request: Request, c: ConsoleDep, name: str) -> HTMLResponse:
    c.require("registered")
    rm = version_service.get_registered(c.state, c.org_id, name)
    rows = sorted(version_service.list_versions(c.state, c.org_id, name), key=lambda v: -v["version"])
    columns = metric_columns(rows)
    for v in rows:
        v["cells"] = metric_cells(v, columns)
        v["other_metrics"] = {k: x for k, x in (v.get("metrics") or {}).items() if k not in columns}
    serving = (served_by(current_specs(c.db, c.org_id), version_refs(rm["name"], rows, rm["aliases"]))
               if c.may("deployments") else None)
    return render(request, "registered.html", rm=rm, versions=rows, columns=columns,
                  aliases=sorted(rm["aliases"].items()), formats=download.FORMATS, archives=download.ARCHIVES,
                  serving=serving, nav="models")


def _version(value: str) -> int:
    if not value.strip().isdigit() or not 1 <= int(value) <= VERSION_FIELD:
        raise InvalidRequest(f"Version '{value[:20]}' is not a version number; pick one from the list.",
                             param="version")
    return int(value)


@router.post("/registered/{name}/aliases")
def set_alias(request: Request, c: ConsoleDep, name: str, alias: Annotated[str, Form(max_length=64)],
              version: Annotated[str, Form(max_length=12)], csrf: Annotated[str, Form(max_length=100)] = "",
              ) -> RedirectResponse:
    """Set or move `name@alias` (PUT /v1/registered_models/{name}/aliases/{alias}): audited by the service;
    deployments that follow the alias move with it, the new version loaded first."""
    c.check_csrf(csrf)
    c.require("set_alias")
    version_service.set_alias(c.state, actor(request, c), c.org_id, name, alias.strip(), _version(version))
    return redirect(f"/ui/registered/{name}")


@router.post("/registered/{name}/aliases/{alias}/delete")
def delete_alias(request: Request, c: ConsoleDep, name: str, alias: str,
                 csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    """DELETE /v1/registered_models/{name}/aliases/{alias}: refused (409) while a deployment follows it."""
    c.check_csrf(csrf)
    c.require("delete_alias")
    version_service.delete_alias(c.state, actor(request, c), c.org_id, name, alias)
    return redirect(f"/ui/registered/{name}")


@router.post("/download")
async def download_model(request: Request, c: ConsoleDep, model: Annotated[str, Form(max_length=300)],
                         format: Annotated[str, Form(max_length=10)] = "hf",  # noqa: A002 - as the API's
                         archive: Annotated[str, Form(max_length=10)] = "tar.gz",
                         csrf: Annotated[str, Form(max_length=100)] = "") -> StreamingResponse:
    """GET /v1/models/{model}/content for the signed-in key: the archive streamed as an attachment
    (a POST here, so that building and auditing an archive needs the form's CSRF token)."""
    c.check_csrf(csrf)
    c.require("download")
    filename, chunks = await run_in_threadpool(download.build_archive, c.state, actor(request, c), c.org_id,
                                               model, format, archive)
    headers = SECURITY_HEADERS | {"content-disposition": f'attachment; filename="{filename}"'}
    return StreamingResponse(iterate_in_threadpool(chunks), headers=headers,
                             media_type="application/zip" if archive == "zip" else "application/gzip")


@router.get("/models/{model_id:path}")
def model_page(request: Request, c: ConsoleDep, model_id: str) -> HTMLResponse:
    c.require("models")
    row = registry.get_model(c.db, c.org_id, model_id)
    mv = version_store.version_of_model(c.db, c.org_id, row.id)
    registered = None
    refs = {row.id: row.id}
    if mv is not None:
        rm = c.db.get(RegisteredModel, mv.registered_model_id)
        if rm is not None:
            registered = {"name": rm.name, "version": mv.version}
            refs |= dict.fromkeys(version_refs(rm.name, [{"model": row.id, "version": mv.version}],
                                               {a: v for a, v in version_store.aliases(c.db, rm).items()
                                                if v == mv.version}), row.id)
    serving = (served_by(current_specs(c.db, c.org_id), refs).get(row.id, []) if c.may("deployments")
               else None)
    return render(request, "model.html", model=row, card=row.card or {}, lineage=row.lineage or {},
                  registered=registered, serving=serving, formats=download.FORMATS, archives=download.ARCHIVES,
                  nav="models")
