"""`/docs` (Swagger UI) and `/redoc` with their assets served from the package, so both render offline.

The assets are vendored, pinned, by scripts/vendor_docs_assets.sh (versions and sha512 in
aiaas/api/static/docs/VERSIONS); FastAPI's defaults would load them from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_DIR = Path(__file__).parent / "static" / "docs"
ASSETS_URL = "/docs-assets"


def install_docs(app: FastAPI) -> None:
    """Add /docs, /redoc and the assets they load. The app must be created with docs_url=None, redoc_url=None."""
    if not (ASSETS_DIR / "swagger-ui" / "swagger-ui-bundle.js").is_file():
        raise RuntimeError(f"the /docs assets are missing from {ASSETS_DIR}: run scripts/vendor_docs_assets.sh")
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/swagger-ui/favicon-32x32.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
