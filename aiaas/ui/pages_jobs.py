"""Jobs: the create form (offering the file's columns, the task and the model family), the job page
(live curves over the events stream, confusion matrix, per-label scores, events, checkpoints, cancel)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, StreamingResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import InvalidRequest
from aiaas.protocol.jobs import TERMINAL, JobCreate, event_public
from aiaas.protocol.tasks import DEFAULT_TASK, TASKS
from aiaas.registry import models as registry
from aiaas.services import audit, catalog, quotas
from aiaas.services import jobs as job_service
from aiaas.store import files as file_store
from aiaas.store import jobs as job_store
from aiaas.store.models import JobEvent
from aiaas.ui.auth import ConsoleDep
from aiaas.ui.pages import PAGE, actor
from aiaas.ui.render import SECURITY_HEADERS, ConsoleRoute, bar_rows, heat, redirect, render

router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
STREAM_POLL_S = 0.5
CHOICES_TTL_S = 10.0  # listing the base models reads each one's config (~40 ms): the form reuses it briefly
_choices: dict[str, tuple[float, list[dict]]] = {}


def _model_choices(c: ConsoleDep) -> list[dict]:
    where = str(c.state.settings.base_models_dir)
    hit = _choices.get(where)
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    bases = [{"id": m["id"], "kind": "base model"} for m in catalog.base_models(c.state.settings.base_models_dir)]
    choices = bases + [{"id": f["id"], "kind": "family"} for f in catalog.model_families()]
    _choices[where] = (time.monotonic() + CHOICES_TTL_S, choices)
    return choices


@router.get("/jobs")
def jobs(request: Request, c: ConsoleDep, after: str | None = None) -> HTMLResponse:
    c.require("jobs")
    rows, has_more = job_store.list_jobs(c.db, c.org_id, after=after, limit=PAGE)
    return render(request, "jobs.html", jobs=rows, has_more=has_more, after=after, nav="jobs")


@router.get("/jobs/new")
def new_job(request: Request, c: ConsoleDep, file: str | None = None, error: str | None = None) -> HTMLResponse:
    c.require("create_job")
    files, _ = file_store.list_files(c.db, c.org_id, after=None, limit=50)
    chosen = file_store.get_file(c.db, c.org_id, file) if file else (files[0] if files else None)
    columns = (chosen.summary or {}).get("columns") or [] if chosen else []
    return render(request, "job_new.html", files=files, chosen=chosen, columns=columns, tasks=TASKS,
                  models=_model_choices(c), nav="jobs")


@router.post("/jobs")
def create_job(
    request: Request, c: ConsoleDep,
    training_file: Annotated[str, Form(max_length=64)],
    model: Annotated[str, Form(max_length=300)],
    text_column: Annotated[str, Form(max_length=200)] = "text",
    label_column: Annotated[str, Form(max_length=200)] = "label",
    task: Annotated[str, Form(max_length=40)] = DEFAULT_TASK,
    n_epochs: Annotated[str, Form(max_length=8)] = "auto",
    suffix: Annotated[str, Form(max_length=40)] = "",
    csrf: Annotated[str, Form(max_length=100)] = "",
) -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("create_job")
    try:
        body = JobCreate.model_validate({  # from a dict: the form's task string is validated as the API's is
            "model": model, "training_file": training_file, "text_column": text_column,
            "label_column": label_column, "task": task, "suffix": suffix or None,
            "hyperparameters": {"n_epochs": int(n_epochs) if n_epochs.strip().isdigit() else "auto"}})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise InvalidRequest(f"{field}: {first['msg']}", param=field) from None
    quotas.check_concurrent_jobs(c.db, c.state.settings, c.org_id)
    job = job_service.create_job(c.db, c.state.settings, org_id=c.org_id, body=body)
    job.created_by = c.principal.key_id
    audit.record(c.db, actor(request, c), "fine_tuning.job.created", target_type="fine_tuning.job",
                 target_id=job.id, details={"model": job.model, "training_file": job.training_file})
    return redirect(f"/ui/jobs/{job.id}")


@router.get("/jobs/{job_id}")
def job_page(request: Request, c: ConsoleDep, job_id: str, events_after: str | None = None) -> HTMLResponse:
    c.require("jobs")
    job = job_store.get_job(c.db, c.org_id, job_id)
    events, more_events = job_store.list_events(c.db, c.org_id, job_id, after=events_after, limit=25)
    checkpoints, _ = job_store.list_checkpoints(c.db, c.org_id, job_id, after=None, limit=20)
    metrics = job.metrics or {}
    report = job.data_report or {}
    labels = report.get("labels") or []
    selection = None
    if job.fine_tuned_model:
        try:
            selection = (registry.get_model(c.db, c.org_id, job.fine_tuned_model).lineage or {}).get(
                "model_selection")
        except Exception:  # noqa: BLE001 - a deleted model leaves the job page intact
            selection = None
    counts = (report.get("label_counts") or {})
    # The automatic choices' reasons, wherever they fall in a long event log ("auto: ..." events).
    reasons = list(c.db.scalars(
        select(JobEvent.message).where(JobEvent.org_id == c.org_id, JobEvent.job_id == job.id,
                                       JobEvent.message.like("auto:%")).order_by(JobEvent.id).limit(20)))
    return render(
        request, "job.html", job=job, events=events, more_events=more_events, checkpoints=checkpoints,
        metrics=metrics, report=report, labels=labels, selection=selection, reasons=reasons,
        matrix=heat(metrics.get("confusion_matrix") or []),
        train_counts=bar_rows(counts.get("train") or {}), validation_counts=bar_rows(counts.get("validation") or {}),
        dropped=bar_rows(report.get("rows_dropped") or {}), terminal=job.status in TERMINAL, nav="jobs",
    )


@router.post("/jobs/{job_id}/cancel")
def cancel_job(request: Request, c: ConsoleDep, job_id: str,
               csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    c.check_csrf(csrf)
    c.require("cancel_job")
    job = job_store.request_cancel(c.db, c.org_id, job_id)
    audit.record(c.db, actor(request, c), "fine_tuning.job.cancelled", target_type="fine_tuning.job",
                 target_id=job.id)
    return redirect(f"/ui/jobs/{job.id}")


@router.get("/jobs/{job_id}/stream")
def job_stream(c: ConsoleDep, job_id: str) -> StreamingResponse:
    """The job's events as server-sent events, oldest first, until it ends (the page's curves read it)."""
    c.require("jobs")
    job_store.get_job(c.db, c.org_id, job_id)  # a foreign id: the same 404 as a missing one, before streaming
    return StreamingResponse(_events(c.state, c.org_id, job_id), media_type="text/event-stream",
                             headers=SECURITY_HEADERS | {"X-Accel-Buffering": "no"})


async def _events(state, org_id: str, job_id: str) -> AsyncIterator[bytes]:
    def poll(cursor: str | None) -> tuple[list[dict], str]:
        with state.db.session() as s:
            rows, _ = job_store.list_events(s, org_id, job_id, after=cursor, limit=500, order="asc")
            return [event_public(r) for r in rows], job_store.get_job(s, org_id, job_id).status

    cursor = None
    while True:
        events, status = await run_in_threadpool(poll, cursor)
        for ev in events:
            cursor = ev["id"]
            yield f"data: {json.dumps(ev)}\n\n".encode()
        if status in TERMINAL and not events:
            yield f"event: end\ndata: {json.dumps({'status': status})}\n\n".encode()
            return
        if not events:
            await asyncio.sleep(STREAM_POLL_S)
