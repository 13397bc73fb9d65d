"""Dependencies: the app state, a database session, the authenticated principal, and the audit actor.

The principal dependency looks the matched route up in the policy table, so no route
can forget its scope check. It also charges the request to the key's requests/min
limit; the inference service charges their tokens (`caller` says whom) before running
the model. Both leave their `x-ratelimit-*` headers in the request state, where
EdgeMiddleware puts them on the response, errors included.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from aiaas.core.errors import AuthenticationFailed, PermissionDenied
from aiaas.core.settings import Settings
from aiaas.security.keys import Principal, hash_key
from aiaas.security.policy import required_scope
from aiaas.security.ratelimit import Limits, RateLimiter
from aiaas.security.ttlcache import TtlCache
from aiaas.services import audit, authn
from aiaas.services.file_checks import FileChecker
from aiaas.services.inference import Caller, InferenceService
from aiaas.services.inference.metering import refusal
from aiaas.services.monitoring import TrafficMonitor
from aiaas.services.quotas import OrgLimits, org_limits
from aiaas.services.request_log import RequestLog
from aiaas.services.usage import UsageRecorder
from aiaas.services.webhooks import WebhookDispatcher
from aiaas.store import tenancy
from aiaas.store.db import Database
from aiaas.store.encrypted import EncryptedBlobStore

log = logging.getLogger(__name__)
RATE_LIMIT_HEADERS = "ratelimit_headers"  # key in the request state (scope["state"])


@dataclass(frozen=True)
class Services:
    """The application's services, built once in create_app."""

    blobs: EncryptedBlobStore  # per-organisation keys at rest; the keyring also seals idempotent answers
    ratelimit: RateLimiter
    usage: UsageRecorder
    inference: InferenceService
    auth_cache: TtlCache
    monitoring: TrafficMonitor | None = None  # live traffic per deployment (None: AIAAS_MONITORING_ENABLED off)
    webhooks: WebhookDispatcher | None = None
    request_log: RequestLog | None = None
    file_checks: FileChecker | None = None  # background checks of large uploads (services/file_checks.py)

    async def aclose(self) -> None:
        """At shutdown, the reverse of the order they were built in."""
        if self.file_checks is not None:
            self.file_checks.close()
        if self.request_log is not None:
            await self.request_log.aclose()
        if self.webhooks is not None:
            await self.webhooks.aclose()
        if self.monitoring is not None:
            await self.monitoring.aclose()
        await self.inference.aclose()
        await self.usage.aclose()
        await self.ratelimit.aclose()


@dataclass
class AppState:
    settings: Settings
    db: Database
    master_secret: str
    services: Services


def app_state(request: Request) -> AppState:
    return request.app.state.aiaas


async def get_state(request: Request) -> AppState:
    """The dependency form of app_state. Async on purpose: FastAPI runs a plain `def`
    dependency in its thread pool, a thread hop (~40 us of CPU) on every request."""
    return app_state(request)


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


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _authenticate(db: Database, token: str) -> tuple[Principal, dict[str, Any], int | None]:
    with db.session() as s:
        principal, org_settings = authn.authenticate_with_settings(s, token)
        return principal, org_settings, tenancy.key_expiry(s, principal.key_id)


def forget_key(state: AppState, key_id: str) -> None:
    """A key was revoked here: stop honouring cached authentications of it at once."""
    state.services.auth_cache.invalidate(lambda _k, v: v[0].key_id == key_id)


async def _audit_auth_failure(request: Request, state: AppState, exc: AuthenticationFailed) -> None:
    """Record a rejected (well-formed) key; at most `auth_failure_audits_per_minute` per client address,
    so a flood of bad keys is not a flood of writes. Malformed keys never reach the database at all."""
    if isinstance(exc, authn.MalformedKey):
        return
    ip = _client_ip(request)
    per_minute = state.settings.auth_failure_audits_per_minute
    limiter = state.services.ratelimit
    if per_minute:
        if not (await limiter.check(f"authfail:{ip}", Limits(requests_per_minute=per_minute))).allowed:
            return
    actor = audit.Actor(
        org_id=exc.org_id if isinstance(exc, authn.KeyRejected) else None,
        key_id=exc.key_id if isinstance(exc, authn.KeyRejected) else None,
        request_id=request.scope.get("state", {}).get("request_id"),
        client_ip=ip,
    )
    try:
        await run_in_threadpool(audit.record_auth_failure, state.db, actor, code=exc.code)
    except Exception:  # noqa: BLE001 - the client still gets its 401; the operator gets the log
        log.exception("could not audit an authentication failure")


def _rate_headers(request: Request) -> dict[str, str]:
    """The request's x-ratelimit-* headers (EdgeMiddleware puts them on the answer, errors included)."""
    headers = getattr(request.state, RATE_LIMIT_HEADERS, None)
    if headers is None:
        headers = {}
        setattr(request.state, RATE_LIMIT_HEADERS, headers)
    return headers


async def _charge_request(request: Request, state: AppState, principal: Principal, limits: OrgLimits) -> None:
    """One request against the key's requests/min; the tokens bucket is read (not charged) for its headers."""
    limiter = state.services.ratelimit
    rpm, tpm = limits.rate_limit_requests_per_minute, limits.rate_limit_tokens_per_minute
    checks = []
    if rpm:
        checks.append(limiter.check(f"r:{principal.key_id}", Limits(requests_per_minute=rpm)))
    if tpm:
        checks.append(limiter.check(f"t:{principal.key_id}", Limits(tokens_per_minute=tpm), tokens=0))
    decisions = [await check for check in checks] if limiter.local else await asyncio.gather(*checks)
    headers = _rate_headers(request)
    for decision in decisions:
        decision.copy_rate_headers(headers)
    for decision in decisions:
        if not decision.allowed:
            raise refusal(decision)


def caller(request: Request, principal: Principal) -> Caller:
    """The caller as the inference service sees it: whom to charge and meter, where its headers go."""
    limits: OrgLimits | None = getattr(request.state, "limits", None)
    tpm = limits.rate_limit_tokens_per_minute if limits is not None else 0
    return Caller(principal.org_id, principal.key_id, Limits(tokens_per_minute=tpm) if tpm else None,
                  _rate_headers(request))


VERIFIED_KEY = "verified_key"  # key in the request state: (principal, organisation settings)


async def verify_key(request: Request) -> tuple[Principal, dict[str, Any]]:
    """The caller's key checked (format and checksum first, then the cached lookup), or
    AuthenticationFailed. Kept in the request state: the edge middleware checks it before reading
    a body (aiaas/api/middleware.py), and the route's get_principal does not check it again."""
    done = request.scope.get("state", {}).get(VERIFIED_KEY)
    if done is not None:
        return done
    state = app_state(request)
    token = _bearer(request)
    cache = state.services.auth_cache
    digest = hash_key(token)
    hit = cache.get(digest)
    if hit is not None and (hit[2] is None or hit[2] > time.time()):
        principal, org_settings = hit[0], hit[1]
    else:
        try:
            # Its own short transaction: last_used_at is kept even when the route fails.
            principal, org_settings, expires_at = await run_in_threadpool(_authenticate, state.db, token)
        except AuthenticationFailed as exc:
            await _audit_auth_failure(request, state, exc)
            raise
        cache.put(digest, (principal, org_settings, expires_at))
    request.scope.setdefault("state", {})[VERIFIED_KEY] = (principal, org_settings)
    return principal, org_settings


async def get_principal(request: Request) -> Principal:
    state = app_state(request)  # not a sub-dependency: FastAPI's resolver costs more than the lookup
    route = request.scope.get("route")
    template = getattr(route, "path_format", request.url.path)
    needed = required_scope(request.method, template)
    principal, org_settings = await verify_key(request)
    limits = org_limits(state.settings, org_settings)
    request.state.principal = principal
    request.state.limits = limits
    await _charge_request(request, state, principal, limits)
    if needed is not None and not principal.allows(needed):
        raise PermissionDenied(
            f"This API key lacks the '{needed}' scope needed for {request.method} {template}; "
            f"it has: {', '.join(sorted(principal.scopes))}.",
        )
    return principal


async def get_actor(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> audit.Actor:
    """The audit log's view of the caller: organisation, key, request id and client address."""
    return audit.Actor(
        org_id=principal.org_id,
        key_id=principal.key_id,
        request_id=request.scope.get("state", {}).get("request_id"),
        client_ip=_client_ip(request),
    )


StateDep = Annotated[AppState, Depends(get_state)]
# scope="function": the transaction commits when the route returns, before the response is sent, so a
# client that got its 200 always reads its own write (and a failed commit is a 500, not a lost write).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ActorDep = Annotated[audit.Actor, Depends(get_actor)]
