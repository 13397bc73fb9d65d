"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from aiaas import __version__
from aiaas.api.deps import StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import NotFound

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=documented(r.Healthz, public=True))
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", responses=documented(r.Readyz, public=True) | r.NOT_READY)
async def readyz(state: StateDep) -> JSONResponse:
    def check() -> str | None:
        try:
            with state.db.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return None
        except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
            return type(exc).__name__

    problem = await run_in_threadpool(check)
    if problem:
        return JSONResponse({"status": "unavailable", "database": problem}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get("/metrics", response_class=Response, responses=documented(None, public=True, media=r.PROMETHEUS))
async def metrics(request: Request, state: StateDep) -> Response:
    """Prometheus text format: this process's numbers, or every API process's (aiaas/core/telemetry.py).
    With AIAAS_METRICS_PORT set they are served on that port instead, and this route is not there."""
    if state.settings.metrics_port is not None:
        raise NotFound(f"Metrics are served on port {state.settings.metrics_port} (AIAAS_METRICS_PORT), "
                       "not on the API port.")
    # Reading the other processes' files and rendering is blocking work: off the event loop.
    body = await run_in_threadpool(generate_latest, request.app.state.metrics_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
