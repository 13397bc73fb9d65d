"""The web console: server-rendered pages at /ui, served by `aiaas serve` beside the API.

Same process, same policy table and tenancy as the API; its own sign-in (an API key becomes a
server-side session, see aiaas.store.ui_sessions). Imports services and the store, never aiaas.api.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/ui"
SIGNIN_PATH = f"{PREFIX}/signin"  # the one console form posted without a session


def routers() -> list[Any]:
    """The console's routers (each route's path starts with PREFIX): what install() adds, and what the page
    budget test walks to find every page."""
    from aiaas.ui import pages, pages_admin, pages_deployments, pages_jobs, pages_models, signin

    return [module.router for module in (signin, pages, pages_jobs, pages_models, pages_deployments, pages_admin)]


def install(app: Any) -> None:
    """Add the console's routes and its static files to the FastAPI app (called by create_app)."""
    from aiaas.ui.render import ConsoleStatic

    for router in routers():
        app.include_router(router)
    app.mount(f"{PREFIX}/static", ConsoleStatic(directory=STATIC_DIR), name="ui-static")
