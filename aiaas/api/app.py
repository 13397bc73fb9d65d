"""create_app(): the FastAPI application, with middleware, error handlers and routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from aiaas import __version__
from aiaas.api.deps import AppState
from aiaas.api.errors import install_error_handlers
from aiaas.api.fastpath import FastPredictMiddleware
from aiaas.api.middleware import EdgeMiddleware
from aiaas.api.routes import (
    audit_logs, deployments, files, fine_tuning, health, inference, keys, models, oip, usage,
)
from aiaas.core.settings import Settings, get_settings
from aiaas.protocol.common import ErrorResponse, OipErrorResponse, declared_errors
from aiaas.security.ratelimit import create_rate_limiter
from aiaas.security.ttlcache import TtlCache
from aiaas.services.inference import InferenceService
from aiaas.services.usage import UsageRecorder
from aiaas.store import migrate
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.db import Database
from aiaas.store.encrypted import encrypted
from aiaas.ui import install as install_console

UPLOAD_PATHS = ("/v1/files", "/ui/files")  # /ui/files: the web console's upload form
log = logging.getLogger(__name__)


def _freeze_startup_objects() -> None:
    """Collect once, then freeze what survives (imports, the app, the serving runtime, imported
    here so a first model load does not add its modules later), so full collections during
    serving skip them. Undone by gc.unfreeze() at shutdown."""
    import aiaas.serving.runtime  # noqa: F401 - onnxruntime + tokenizers, part of every server

    gc.collect()
    gc.freeze()


async def _warm_pinned(state: AppState) -> None:
    """Deployments with min_replicas=1 are loaded at start-up and never scaled to zero."""
    from starlette.concurrency import run_in_threadpool

    from aiaas.store.deployments import pinned_artifacts

    def find() -> list[str]:
        with state.db.session() as s:
            return pinned_artifacts(s)

    inference = state.services["inference"]
    for uri in await run_in_threadpool(find):
        inference.pin(uri, True)
        try:
            await inference.cache.get(uri)
        except Exception:  # noqa: BLE001 - a broken artifact must not stop the server; requests will say why
            log.warning("could not preload %s", uri, exc_info=True)


def create_app(settings: Settings | None = None, *, db: Database | None = None, migrate_db: bool = True) -> FastAPI:
    settings = settings or get_settings()
    secret = settings.master_secret()  # refuses to start without a usable secret
    db = db or Database(settings.sqlalchemy_url)
    if migrate_db:
        migrate.upgrade(db.engine)
    state = AppState(settings=settings, db=db, master_secret=secret)
    blobs = encrypted(create_blob_store(settings.blobs_url, settings), db, secret)  # per-organisation keys at rest
    state.services["blobs"] = blobs
    state.services["ratelimit"] = create_rate_limiter(settings.rate_limit_url)
    state.services["usage"] = UsageRecorder(db, flush_seconds=settings.usage_flush_seconds)
    state.services["inference"] = InferenceService(settings, blobs)
    state.services["auth_cache"] = TtlCache(settings.lookup_cache_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.gc_freeze:
            _freeze_startup_objects()
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.gil_switch_interval_ms / 1000)
        warm = asyncio.create_task(_warm_pinned(state))
        try:
            yield
        finally:
            sys.setswitchinterval(switch_interval)
            if settings.gc_freeze:
                gc.unfreeze()  # an app stopped inside a longer-lived process must not pin its garbage
            warm.cancel()
            for service in reversed(list(state.services.values())):
                close = getattr(service, "aclose", None)
                if close is not None:
                    await close()

    app = FastAPI(
        title="aiaas",
        version=__version__,
        description="Self-hosted AI model as a service: fine-tune BERT-family models and serve them.",
        lifespan=lifespan,
    )
    app.state.aiaas = state
    app.state.metrics_registry = CollectorRegistry()

    install_error_handlers(app)
    # Serving routes first: FastAPI finds a route by trying each in order (an included router's
    # twice), and inference requests are most of the traffic. Measured on the benchmark's
    # predict route: 31 route comparisons per request with the serving routers after the others.
    app.include_router(deployments.router, responses=declared_errors(ErrorResponse))
    app.include_router(inference.router, responses=declared_errors(ErrorResponse))
    app.include_router(oip.router, responses=declared_errors(OipErrorResponse))
    app.include_router(health.router)
    for module in (keys, files, fine_tuning, models, usage, audit_logs):
        app.include_router(module.router, responses=declared_errors(ErrorResponse))
    install_console(app)  # the web console at /ui (aiaas.ui): its pages and its static files

    def limit_for(path: str) -> int:
        return settings.max_upload_bytes if path.startswith(UPLOAD_PATHS) else settings.max_request_bytes

    if settings.fast_predict_route:  # inside the edge layer: ids, limits, metrics and the 500 still apply
        app.add_middleware(FastPredictMiddleware, handlers=lambda: app.exception_handlers)
    # Request id, NUL check, catch-all 500, metrics, body limit, rate-limit headers: one layer.
    app.add_middleware(EdgeMiddleware, registry=app.state.metrics_registry, limit_for=limit_for)
    return app
