"""Overview and files: recent work at a glance; upload, list and the drawn data report."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from aiaas.core import clock
from aiaas.services import audit
from aiaas.services import files as file_service
from aiaas.services import usage as usage_service
from aiaas.store import deployments as dep_store
from aiaas.store import files as file_store
from aiaas.store import jobs as job_store
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.render import SECURITY_HEADERS, ConsoleRoute, bar_rows, render
from aiaas.ui.reports import file_report

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
PAGE = 20


def actor(request: Request, c: ConsoleDep) -> audit.Actor:
    return audit.Actor(org_id=c.org_id, key_id=c.principal.key_id,
                       request_id=request.scope.get("state", {}).get("request_id"),
                       client_ip=request.client.host if request.client else None)


def month_usage(c: ConsoleDep) -> dict:
    recorder = c.state.services.usage
    if recorder is not None:
        recorder.flush()  # this process's pending counts first, as the API's usage route does
    now = datetime.now(UTC)
    start = int(datetime(now.year, now.month, 1, tzinfo=UTC).timestamp())
    prices = usage_service.PriceSheet.from_settings(c.state.settings)
    return usage_service.summarize(c.db, c.org_id, start=start, end=clock.now() + 1, group_by="model",
                                   prices=prices)


@router.get("/overview")
def overview(request: Request, c: ConsoleDep) -> HTMLResponse:
    c.require("overview")
    jobs, _ = job_store.list_jobs(c.db, c.org_id, after=None, limit=8)
    deps, more_deps = dep_store.list_deployments(c.db, c.org_id, after=None, limit=8)
    usage = month_usage(c) if c.may("usage") else None
    requests = {b["model"]: b["requests"] for b in usage["data"]} if usage else {}
    return render(request, "overview.html", jobs=jobs, deployments=deps, more_deployments=more_deps,
                  usage=usage, requests_by_model=requests, nav="overview")


@router.get("/files")
def files(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("files")
    rows, has_more = file_store.list_files(c.db, c.org_id, after=after, limit=PAGE)
    return render(request, "files.html", files=rows, has_more=has_more, after=after, nav="files",
                  max_upload=c.state.settings.max_upload_bytes)


@router.post("/files")
def upload(request: Request, c: ConsoleDep, file: UploadFile, csrf: Annotated[str, Form(max_length=100)] = "",
           pii_policy: Annotated[str, Form(max_length=20)] = "allow") -> JSONResponse:
    """Called by the page's script (XMLHttpRequest, for the progress bar); answers JSON."""
    c.check_csrf(csrf)
    c.require("upload")
    row = file_service.upload(c.db, c.state.services.blobs, org_id=c.org_id, src=file.file,
                              filename=file.filename, purpose="fine-tune",
                              max_bytes=c.state.settings.max_upload_bytes, settings=c.state.settings,
                              pii_policy=pii_policy)
    pii = (row.summary or {}).get("pii") or {}
    audit.record(c.db, actor(request, c), "file.uploaded", target_type="file", target_id=row.id,
                 details={"filename": row.filename, "bytes": row.bytes, "purpose": row.purpose,
                          "pii_policy": pii_policy, "pii_redacted": pii.get("redacted", 0),
                          "pii_counts": {k: n for k, n in (pii.get("counts") or {}).items() if n}})
    return JSONResponse({"id": row.id, "url": f"/ui/files/{row.id}"}, headers=SECURITY_HEADERS)


@router.get("/files/{file_id}")
def file_page(request: Request, c: ConsoleDep, file_id: str, text_column: str | None = None,
              label_column: str | None = None) -> HTMLResponse:
    c.require("files")
    row, chunks = file_service.content(c.db, c.state.services.blobs, org_id=c.org_id, file_id=file_id)
    report = file_report(row, chunks, text_column=text_column, label_column=label_column)
    pii_counts = {k: n for k, n in ((report["pii"].get("counts")) or {}).items() if n}
    return render(request, "file.html", file=row, report=report, pii=bar_rows(pii_counts), nav="files")
