"""Sign in with an API key (it becomes a server-side session), sign out."""

from __future__ import annotations

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import AuthenticationFailed
from aiaas.security.keys import Principal
from aiaas.security.ratelimit import Limits
from aiaas.services import audit, authn
from aiaas.store import ui_sessions
from aiaas.ui.auth import COOKIE, SESSION_LIFETIME_S, app_state, clear_cookie, may, set_cookie
from aiaas.ui.render import ConsoleRoute, redirect, render

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", route_class=ConsoleRoute)
PRE_COOKIE = "aiaas_console_pre"  # sign-in CSRF: a double-submit token, before any session exists
SIGNIN_ATTEMPTS_PER_MINUTE = 20


def _safe_next(target: str | None) -> str:
    """Only a console path may follow sign-in (never another site: no open redirect); else ""."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _actor(request: Request, principal: Principal) -> audit.Actor:
    return audit.Actor(org_id=principal.org_id, key_id=principal.key_id,
                       request_id=request.scope.get("state", {}).get("request_id"),
                       client_ip=request.client.host if request.client else None)


def _landing(principal: Principal) -> str:
    return "/ui/overview" if may(principal, "overview") else "/ui/deployments"


def _signin_page(request: Request, *, status: int = 200, error: str | None = None,
                 next_url: str | None = None) -> HTMLResponse:
    pre = secrets.token_urlsafe(24)
    response = render(request, "signin.html", status=status, pre_token=pre, error=error,
                      next_url=_safe_next(next_url))
    response.set_cookie(PRE_COOKIE, pre, max_age=1800, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


@router.get("")
@router.get("/")
def root() -> RedirectResponse:
    return redirect("/ui/overview")


@router.get("/signin")
def signin_form(request: Request, next: str | None = None) -> HTMLResponse:
    return _signin_page(request, next_url=next)


@router.post("/signin")
async def signin(request: Request, api_key: Annotated[str, Form(max_length=200)],
                 csrf: Annotated[str, Form(max_length=100)] = "",
                 next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    state = app_state(request)
    pre = request.cookies.get(PRE_COOKIE, "")
    if not pre or not hmac.compare_digest(pre.encode(), csrf.encode()):
        return _signin_page(request, status=403, error="The sign-in form expired; try again.", next_url=next)
    ip = request.client.host if request.client else None
    limiter = state.services.ratelimit
    if limiter is not None:
        decision = await limiter.check(f"ui-signin:{ip}", Limits(requests_per_minute=SIGNIN_ATTEMPTS_PER_MINUTE))
        if not decision.allowed:
            return _signin_page(request, status=429, error="Too many sign-in attempts; wait a minute.",
                                next_url=next)

    def open_session() -> tuple[str, Principal]:
        with state.db.session() as s:
            principal = authn.authenticate(s, api_key.strip())
            token, _ = ui_sessions.open_session(s, principal, lifetime_s=SESSION_LIFETIME_S)
            audit.record(s, _actor(request, principal), "console.signed_in", target_type="api_key",
                         target_id=principal.key_id, details={"scopes": sorted(principal.scopes)})
            return token, principal

    try:
        token, principal = await run_in_threadpool(open_session)
    except AuthenticationFailed as exc:
        if isinstance(exc, authn.KeyRejected):  # a known key that may no longer be used: audited
            actor = audit.Actor(org_id=exc.org_id, key_id=exc.key_id, client_ip=ip)
            await run_in_threadpool(audit.record_auth_failure, state.db, actor, code=exc.code)
        return _signin_page(request, status=401, error=exc.message, next_url=next)
    response = redirect(_safe_next(next) or _landing(principal))
    set_cookie(response, request, token, SESSION_LIFETIME_S)
    response.delete_cookie(PRE_COOKIE, path="/ui")
    return response


@router.post("/signout")
async def signout(request: Request, csrf: Annotated[str, Form(max_length=100)] = "") -> RedirectResponse:
    state = app_state(request)
    token = request.cookies.get(COOKIE)

    def close() -> bool:
        with state.db.session() as s:
            found = ui_sessions.find_session(s, token) if token else None
            if found is None:
                return True  # nothing to end
            if not hmac.compare_digest(csrf.encode(), found.csrf_token.encode()):
                return False
            ui_sessions.close_session(s, token or "")
            audit.record(s, _actor(request, found.principal), "console.signed_out", target_type="api_key",
                         target_id=found.principal.key_id)
            return True

    if not await run_in_threadpool(close):
        return redirect("/ui/overview")  # a cross-site sign-out attempt changes nothing
    response = redirect("/ui/signin")
    clear_cookie(response, request)
    return response
