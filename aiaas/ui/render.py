"""Templates (Jinja2, autoescaped), the security headers every console page carries, and the route
class that turns domain errors into the console's error page."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from aiaas import __version__
from aiaas.core.errors import AiaasError

log = logging.getLogger(__name__)

# No inline script or style anywhere: scripts and styles come from /ui/static only. Charts are SVG
# attributes or drawn by script (CSSOM), which this policy allows.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class ConsoleStatic(StaticFiles):
    """The console's own files: cached by the browser for an hour (revalidated by ETag after), never
    sniffed as another type."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


class SignInRequired(Exception):
    """No live console session: the page answers with a redirect to the sign-in form."""


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def _num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or v is None:
        return "-" if v is None else str(v)
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}g}"
    return str(v)


env = Environment(
    loader=PackageLoader("aiaas.ui", "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["when"] = _when
env.filters["num"] = _num
env.filters["urlpart"] = lambda s: quote(str(s), safe="")
env.globals["version"] = __version__


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    ctx = getattr(request.state, "console", None)
    html = env.get_template(template).render(request=request, console=ctx, **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(request: Request, exc: AiaasError) -> HTMLResponse:
    # A foreign id and a missing id raise the same NotFound, so they render the same page.
    return render(request, "error.html", status=exc.status, error=exc)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers=SECURITY_HEADERS)


class ConsoleRoute(APIRoute):
    """Every console route: no OpenAPI entry (the API's policy test covers /v1 and /v2), domain errors
    rendered as the console's error page, and an expired session sent back to sign in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["include_in_schema"] = False
        super().__init__(*args, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return redirect("/ui/signin?next=" + quote(target, safe=""))
            except AiaasError as exc:
                return error_page(request, exc)

        return console_handler


def bar_rows(counts: dict[str, Any], *, width: int = 300) -> list[dict[str, Any]]:
    """{label: n} -> rows for the horizontal bar chart macro (SVG widths, no inline style)."""
    items = [(str(k), float(v or 0)) for k, v in counts.items()]
    top = max((v for _, v in items), default=0) or 1
    return [{"label": k, "value": v, "w": round(width * v / top, 1)} for k, v in items]


def histogram(values: list[float], bins: int = 12) -> list[dict[str, Any]]:
    """Equal-width bins over [min, max] -> [{lo, hi, n, h}] with h in [0, 100] for the SVG columns."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    width = (hi - lo) / bins or 1
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / width), bins - 1)] += 1
    top = max(counts) or 1
    return [{"lo": round(lo + i * width), "hi": round(lo + (i + 1) * width), "n": n, "h": round(100 * n / top, 1)}
            for i, n in enumerate(counts)]


def heat(matrix: list[list[int]]) -> list[list[dict[str, int]]]:
    """A confusion matrix as cells with a 0-9 shade class, normalised per true-label row."""
    out = []
    for row in matrix:
        total = sum(row) or 1
        out.append([{"n": n, "shade": min(9, int(10 * n / total))} for n in row])
    return out
