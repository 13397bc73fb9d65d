"""Who is looking at the console: the session cookie, the scope each page needs, and CSRF.

Scopes come from the API's policy table: each console page names the API route it shows or acts
like, and needs exactly the scope that route needs (a `read` key sees but cannot change; an
`infer` key reaches only the deployments it may call and the try-it box).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aiaas.core.errors import AuthenticationFailed, PermissionDenied
from aiaas.security.keys import Principal
from aiaas.security.policy import required_scope
from aiaas.store import ui_sessions
from aiaas.ui.render import SignInRequired

COOKIE = "aiaas_console"
SESSION_LIFETIME_S = 8 * 3600

# The console's sections and the API route whose scope each needs (the nav shows what the key may see).
SECTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "overview": (("GET", "/v1/fine_tuning/jobs"),),
    "files": (("GET", "/v1/files"),),
    "upload": (("POST", "/v1/files"),),
    "jobs": (("GET", "/v1/fine_tuning/jobs"),),
    "create_job": (("POST", "/v1/fine_tuning/jobs"),),
    "cancel_job": (("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),),
    "models": (("GET", "/v1/models"),),
    "registered": (("GET", "/v1/registered_models/{registered_model}/versions"),),
    "set_alias": (("PUT", "/v1/registered_models/{registered_model}/aliases/{alias}"),),
    "delete_alias": (("DELETE", "/v1/registered_models/{registered_model}/aliases/{alias}"),),
    "download": (("GET", "/v1/models/{model}/content"),),
    # An infer key may list what it can call (GET /v2/models); a read key sees the deployments' settings.
    "deployments": (("GET", "/v1/deployments"), ("GET", "/v2/models")),
    "create_deployment": (("POST", "/v1/deployments"),),
    "delete_deployment": (("DELETE", "/v1/deployments/{name}"),),
    "update_deployment": (("PATCH", "/v1/deployments/{name}"),),
    "rollback": (("POST", "/v1/deployments/{name}/rollback"),),
    "revisions": (("GET", "/v1/deployments/{name}/revisions"),),
    "shadow": (("GET", "/v1/deployments/{name}/shadow"),),
    "traffic": (("GET", "/v1/deployments/{name}/monitoring"),),
    "predict": (("POST", "/v1/deployments/{name}/predict"),),
    "usage": (("GET", "/v1/usage"),),
    "keys": (("GET", "/v1/api_keys"),),
    "create_key": (("POST", "/v1/api_keys"),),
    "revoke_key": (("DELETE", "/v1/api_keys/{key_id}"),),
    "audit": (("GET", "/v1/audit_logs"),),
}


def may(principal: Principal, section: str) -> bool:
    for method, template in SECTIONS[section]:
        needed = required_scope(method, template)
        if needed is None or principal.allows(needed):
            return True
    return False


@dataclass
class Console:
    """The signed-in session, the app state, and the open database session of one request."""

    principal: Principal
    csrf_token: str
    state: Any  # aiaas.api.deps.AppState (not imported: the console sits beside the API, not on it)
    db: Session

    @property
    def org_id(self) -> str:
        return self.principal.org_id

    def may(self, section: str) -> bool:
        return may(self.principal, section)

    def require(self, section: str) -> None:
        if not self.may(section):
            method, template = SECTIONS[section][0]
            raise PermissionDenied(
                f"This API key lacks the '{required_scope(method, template)}' scope this page needs "
                f"(as for {method} {template}); it has: {', '.join(sorted(self.principal.scopes))}.",
            )

    def check_csrf(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            raise PermissionDenied("The form's CSRF token is missing or stale; reload the page and try again.",
                                   code="csrf_failed", param="csrf")


def app_state(request: Request) -> Any:
    return request.app.state.aiaas


def console_session(request: Request) -> Iterator[Console]:
    """A sync dependency (FastAPI runs it in its thread pool): the lookup and the page's queries share
    one database session, committed when the page returns."""
    state = app_state(request)
    token = request.cookies.get(COOKIE)
    with state.db.session() as s:
        found = ui_sessions.find_session(s, token) if token else None
        if found is None:
            raise SignInRequired()
        ctx = Console(principal=found.principal, csrf_token=found.csrf_token, state=state, db=s)
        request.state.console = ctx
        yield ctx


ConsoleDep = Annotated[Console, Depends(console_session, scope="function")]


def set_cookie(response: Any, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(COOKIE, token, max_age=max_age, path="/ui", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def clear_cookie(response: Any, request: Request) -> None:
    response.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")


async def authenticate_body_request(scope: Any, db: Any) -> None:
    """The edge's check before a console request's body is read (as an API key is checked for /v1): a form
    post or an upload without a live session is answered 401 before any body byte is read or spooled."""
    from starlette.concurrency import run_in_threadpool

    request = Request(scope)
    token = request.cookies.get(COOKIE)
    if not token:
        raise AuthenticationFailed("Sign in to the console first (no session cookie).")

    def find() -> bool:
        with db.session() as s:
            return ui_sessions.find_session(s, token) is not None

    if not await run_in_threadpool(find):
        raise AuthenticationFailed("Your console session has ended; sign in again.")
