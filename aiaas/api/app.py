"""create_app(): the FastAPI application, with middleware, error handlers and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import Scope

from aiaas import __version__
from aiaas.api.deps import RATE_LIMIT_HEADERS, AppState, Services, verify_key
from aiaas.api.docs import install_docs
from aiaas.api.errors import install_error_handlers
from aiaas.api.fastpath import FastRoutesMiddleware
from aiaas.api.idempotency import IdempotencyMiddleware
from aiaas.services.metrics import WorkQueueCollector, metrics_registry, runtime_source
from aiaas.api.middleware import ByteBudget, EdgeMiddleware
from aiaas.api.openapi import install_openapi
from aiaas.api.routes import (
    audit_logs,
    batches,
    deployments,
    files,
    fine_tuning,
    health,
    inference,
    keys,
    models,
    monitoring,
    oip,
    registered_models,
    usage,
    webhooks,
)
from aiaas.core import native_memory
from aiaas.core.settings import Settings, get_settings
from aiaas.core.telemetry import Publisher, Recorder, SharedDirectory
from aiaas.security.policy import POLICY, PUBLIC
from aiaas.security.ratelimit import create_rate_limiter
from aiaas.security.ttlcache import TtlCache
from aiaas.services.file_checks import FileChecker
from aiaas.services.inference import InferenceService
from aiaas.services.monitoring import drift_monitor, drift_source
from aiaas.services.request_log import RequestLog
from aiaas.services.usage import UsageRecorder
from aiaas.services.webhooks import webhook_dispatcher
from aiaas.store import migrate
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.db import Database
from aiaas.store.encrypted import encrypted
from aiaas.ui import PREFIX as CONSOLE_PREFIX
from aiaas.ui import SIGNIN_PATH as CONSOLE_SIGNIN
from aiaas.ui import install as install_console
from aiaas.ui.auth import authenticate_body_request as authenticate_console

UPLOAD_PATHS = ("/v1/files", "/ui/files")  # /ui/files: the web console's upload form
log = logging.getLogger(__name__)


def _freeze_startup_objects() -> None:
    """Collect once, then freeze what survives (imports, the app, the serving runtime, imported
    here so a first model load does not add its modules later), so full collections during
    serving skip them. Undone by gc.unfreeze() at shutdown."""
    import aiaas.serving.runtime  # noqa: F401 - onnxruntime + tokenizers, part of every server

    gc.collect()
    gc.freeze()


def _tune_allocator(settings: Settings) -> native_memory.PeriodicTrim | None:
    """Fewer malloc arenas and a periodic trim (AIAAS_MALLOC_ARENA_MAX, AIAAS_MALLOC_TRIM_SECONDS): without
    them the API process's RSS grew ~18% over the 10-minute soak with the bytes in use flat."""
    native_memory.limit_arenas(settings.malloc_arena_max)
    if settings.malloc_trim_seconds <= 0:
        return None
    trimmer = native_memory.PeriodicTrim(settings.malloc_trim_seconds)
    return trimmer if trimmer.start() else None


async def _warm_pinned(state: AppState) -> None:
    """Deployments with min_replicas=1 are loaded at start-up and never scaled to zero."""
    from starlette.concurrency import run_in_threadpool

    from aiaas.store.deployments import pinned_artifacts

    def find() -> list[str]:
        with state.db.session() as s:
            return pinned_artifacts(s)

    await state.services.inference.warm(await run_in_threadpool(find))


def build_services(settings: Settings, db: Database, secret: str, telemetry: Recorder | None = None) -> Services:
    """Every service the routes use, built once; the lifespan closes them."""
    blobs = encrypted(create_blob_store(settings.blobs_url, settings), db, secret)  # per-organisation keys at rest
    ratelimit = create_rate_limiter(settings.rate_limit_url)
    usage = UsageRecorder(db, flush_seconds=settings.usage_flush_seconds)
    monitoring = drift_monitor(settings, db) if settings.monitoring_enabled else None
    request_log = RequestLog(db, blobs, flush_seconds=settings.request_log_flush_seconds)
    return Services(
        blobs=blobs,
        ratelimit=ratelimit,
        usage=usage,
        inference=InferenceService(settings, db, blobs, limiter=ratelimit, usage=usage, monitor=monitoring,
                                   telemetry=telemetry, request_log=request_log),
        auth_cache=TtlCache(settings.lookup_cache_seconds),
        monitoring=monitoring,
        webhooks=webhook_dispatcher(settings, db, blobs.keyring),
        request_log=request_log,
        file_checks=FileChecker(db, blobs, settings),
    )


def _background_threads(state: AppState, publisher: Publisher | None) -> list[Any]:
    """What runs beside the requests while the app lives (each has start(); stopped by services.aclose or
    the lifespan): drift monitoring, webhook delivery, request-log flushes, upload checks a stopped server
    left, the metrics file and the console charts' minute ring."""
    parts = (state.services.monitoring, state.services.webhooks, state.services.request_log,
             state.services.file_checks, publisher, state.services.inference.traffic)
    return [part for part in parts if part is not None]


def create_app(settings: Settings | None = None, *, db: Database | None = None, migrate_db: bool = True) -> FastAPI:
    settings = settings or get_settings()
    secret = settings.master_secret()  # refuses to start without a usable secret
    db = db or Database(settings.sqlalchemy_url)
    if migrate_db:  # production only checks the schema is current (`aiaas db upgrade` migrates)
        migrate.prepare_for_serving(db.engine, env=settings.env)
    telemetry = Recorder()  # this process's numbers for /metrics (aiaas/core/telemetry.py)
    state = AppState(settings=settings, db=db, master_secret=secret,
                     services=build_services(settings, db, secret, telemetry))
    telemetry.sources.append(runtime_source(state.services.inference.local))
    if state.services.monitoring is not None:  # drift flags per deployment, read at scrape time
        telemetry.sources.append(drift_source(state.services.monitoring))
    work = WorkQueueCollector(db, lease_seconds=settings.lease_seconds)
    shared = SharedDirectory(settings.metrics_dir) if settings.metrics_dir is not None else None
    publisher = Publisher(telemetry, shared, settings.metrics_flush_seconds) if shared is not None else None
    state.services.inference.traffic.share(shared)  # the console's charts: every process's requests

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.gc_freeze:
            _freeze_startup_objects()
        trimmer = _tune_allocator(settings)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        warm = asyncio.create_task(_warm_pinned(state))
        for background in _background_threads(state, publisher):
            background.start()
        try:
            yield
        finally:
            work.close()  # a jobs count in flight finishes (and returns its connection) before the database goes
            if publisher is not None:
                await asyncio.to_thread(publisher.stop)  # the last numbers, for the processes still scraping
            sys.setswitchinterval(switch_interval)
            if trimmer is not None:
                trimmer.stop()
            if settings.gc_freeze:
                gc.unfreeze()  # an app stopped inside a longer-lived process must not pin its garbage
            warm.cancel()
            await state.services.aclose()

    app = FastAPI(
        title="aiaas",
        version=__version__,
        description="Self-hosted AI model as a service: fine-tune BERT-family models and serve them.",
        lifespan=lifespan,
        docs_url=None,  # install_docs: the same pages, with their assets served from the package
        redoc_url=None,
    )
    app.state.aiaas = state
    app.state.telemetry = telemetry
    app.state.metrics_registry = metrics_registry(telemetry, shared, work)

    install_error_handlers(app)
    # Serving routes first: FastAPI finds a route by trying each in order (an included router's
    # twice), and inference requests are most of the traffic. Measured on the benchmark's
    # predict route: 31 route comparisons per request with the serving routers after the others.
    # Each route declares its answer and error codes (aiaas/api/openapi.py documented()).
    app.include_router(deployments.router)
    app.include_router(inference.router)
    app.include_router(oip.router)
    app.include_router(health.router)
    for module in (keys, files, fine_tuning, models, registered_models, usage, audit_logs, monitoring, webhooks):
        app.include_router(module.router)
    app.include_router(batches.router)  # issue 16
    install_console(app)  # the web console at /ui (aiaas.ui): its pages and its static files
    install_docs(app)  # last: the hot routes are matched first
    install_openapi(app)

    def limit_for(path: str) -> int:
        return settings.max_upload_bytes if path.startswith(UPLOAD_PATHS) else settings.max_request_bytes

    if settings.fast_predict_route:  # inside the edge layer: ids, limits, metrics and the 500 still apply
        app.add_middleware(FastRoutesMiddleware, handlers=lambda: app.exception_handlers)
    # Idempotency-Key on every POST, the shortcut's included; inside the edge layer, which has checked the key.
    app.add_middleware(IdempotencyMiddleware, db=db, settings=settings,
                       data_key=lambda org_id: state.services.blobs.keyring.data_key(org_id, create=True))

    async def authenticate(scope: Scope) -> None:
        if scope["path"].startswith(CONSOLE_PREFIX + "/"):  # the console's session cookie stands for the key
            await authenticate_console(scope, db)
        else:
            await verify_key(Request(scope))

    public = {path for (_method, path), scope in POLICY.items() if scope is PUBLIC}
    public.add(CONSOLE_SIGNIN)  # its form carries the key; small (max_request_bytes)
    public |= {p for p in (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url) if p}
    uploads = ByteBudget(settings.upload_bytes_in_flight or 4 * settings.max_upload_bytes)
    # Request id, NUL check, catch-all 500, metrics, key before body, body limit, upload bytes in flight,
    # rate-limit headers: one layer.
    app.add_middleware(
        EdgeMiddleware, telemetry=telemetry, limit_for=limit_for, authenticate=authenticate,
        ratelimit_state_key=RATE_LIMIT_HEADERS,
        public_paths=frozenset(public), budget_for=lambda path: uploads if path.startswith(UPLOAD_PATHS) else None,
    )
    return app
