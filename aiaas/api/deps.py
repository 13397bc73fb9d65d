"""Dependencies: the app state, a database session, and the authenticated principal.

The principal dependency looks the matched route up in the policy table, so no route
can forget its scope check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from aiaas.core.errors import AuthenticationFailed, PermissionDenied
from aiaas.core.settings import Settings
from aiaas.security.keys import Principal
from aiaas.security.policy import required_scope
from aiaas.store import tenancy
from aiaas.store.db import Database


@dataclass
class AppState:
    settings: Settings
    db: Database
    master_secret: str
    services: dict[str, Any] = field(default_factory=dict)


def get_state(request: Request) -> AppState:
    return request.app.state.aiaas


def get_session(state: Annotated[AppState, Depends(get_state)]) -> Iterator[Session]:
    with state.db.session() as s:
        yield s


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    # tritonclient and KServe clients set arbitrary headers more easily than Authorization.
    alt = request.headers.get("x-api-key") or request.headers.get("api-key")
    if alt:
        return alt.strip()
    raise AuthenticationFailed(
        "Missing API key: send 'Authorization: Bearer <key>' (create keys with `aiaas keys create`).",
        code="missing_api_key",
    )


def get_principal(request: Request, session: Annotated[Session, Depends(get_session)]) -> Principal:
    route = request.scope.get("route")
    template = getattr(route, "path_format", request.url.path)
    needed = required_scope(request.method, template)
    principal = tenancy.authenticate(session, _bearer(request))
    if needed is not None and not principal.allows(needed):
        raise PermissionDenied(
            f"This API key lacks the '{needed}' scope needed for {request.method} {template}; "
            f"it has: {', '.join(sorted(principal.scopes))}.",
        )
    request.state.principal = principal
    return principal


StateDep = Annotated[AppState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
