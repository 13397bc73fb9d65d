"""An organisation's limits (rate limits per key, quotas per organisation) and the quota checks.

Defaults come from Settings; an organisation's settings JSON overrides any of them by
the same name (`aiaas orgs limits NAME --set quota_deployments=5`). 0 means unlimited.
Quota checks lock the organisation row first, so concurrent creations cannot both take
the last free slot.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aiaas.core.errors import InvalidRequest, QuotaExceeded
from aiaas.core.settings import Settings
from aiaas.store import tenancy
from aiaas.store.jobs import ACTIVE
from aiaas.store.models import Deployment, File, FineTuningJob

# Quota errors are not worth retrying; OpenAI's SDK obeys this header.
NO_RETRY = {"x-should-retry": "false"}


@dataclass(frozen=True)
class OrgLimits:
    rate_limit_requests_per_minute: int
    rate_limit_tokens_per_minute: int
    quota_concurrent_jobs: int
    quota_stored_bytes: int
    quota_deployments: int


LIMIT_NAMES = tuple(f.name for f in fields(OrgLimits))


def org_limits(settings: Settings, org_settings: dict[str, Any] | None) -> OrgLimits:
    """The effective limits: the organisation's overrides on top of the server's defaults."""
    overrides = org_settings or {}
    values = {}
    for name in LIMIT_NAMES:
        value = overrides.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            values[name] = int(value)
        else:
            values[name] = getattr(settings, name)
    return OrgLimits(**values)


def parse_overrides(pairs: list[str]) -> dict[str, int | None]:
    """`name=value` pairs from the operator CLI; `name=default` removes an override."""
    out: dict[str, int | None] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name = name.strip()
        if not sep or name not in LIMIT_NAMES:
            raise InvalidRequest(f"Use NAME=VALUE with NAME one of: {', '.join(LIMIT_NAMES)} (got {pair!r}).")
        raw = raw.strip().replace("_", "")
        if raw == "default":
            out[name] = None
            continue
        if not raw.isdigit():
            raise InvalidRequest(f"{name} must be a whole number >= 0 (0 = unlimited) or 'default'; "
                                 f"got {raw!r}.")
        out[name] = int(raw)
    return out


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _limits(session: Session, settings: Settings, org_id: str) -> OrgLimits:
    org = tenancy.lock_organization(session, org_id)
    return org_limits(settings, org.settings)


def check_concurrent_jobs(session: Session, settings: Settings, org_id: str) -> None:
    limit = _limits(session, settings, org_id).quota_concurrent_jobs
    if not limit:
        return
    active = session.scalar(
        select(func.count()).select_from(FineTuningJob)
        .where(FineTuningJob.org_id == org_id, FineTuningJob.status.in_(ACTIVE))
    ) or 0
    if active >= limit:
        raise QuotaExceeded(
            f"Quota exceeded: concurrent fine-tuning jobs (limit {limit}, in use {active} validating, queued "
            "or running). Wait for a job to finish or cancel one, or ask the operator to raise "
            "quota_concurrent_jobs.",
            headers=NO_RETRY,
        )


def stored_bytes(session: Session, org_id: str) -> int:
    total = session.scalar(select(func.coalesce(func.sum(File.bytes), 0)).where(File.org_id == org_id))
    return int(total or 0)


def check_storage(session: Session, settings: Settings, org_id: str, *, adding: int) -> None:
    """Refuse `adding` more bytes when they would take the organisation past its storage quota."""
    limit = _limits(session, settings, org_id).quota_stored_bytes
    if not limit:
        return
    used = stored_bytes(session, org_id)
    if used + adding > limit:
        raise QuotaExceeded(
            f"Quota exceeded: stored bytes (limit {limit} = {_human_bytes(limit)}, in use {used} = "
            f"{_human_bytes(used)}, this file {adding}). Delete files you no longer need, or ask the "
            "operator to raise quota_stored_bytes.",
            param="file",
            headers=NO_RETRY,
        )


def check_deployments(session: Session, settings: Settings, org_id: str) -> None:
    limit = _limits(session, settings, org_id).quota_deployments
    if not limit:
        return
    count = session.scalar(
        select(func.count()).select_from(Deployment).where(Deployment.org_id == org_id)
    ) or 0
    if count >= limit:
        raise QuotaExceeded(
            f"Quota exceeded: deployments (limit {limit}, in use {count}). Delete a deployment you no longer "
            "need, or ask the operator to raise quota_deployments.",
            headers=NO_RETRY,
        )
