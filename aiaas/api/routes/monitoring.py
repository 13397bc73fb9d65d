"""/v1/deployments/{name}/monitoring — live traffic against the training data, by window, with drift flags."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import PrincipalDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import Unavailable
from aiaas.store import deployments as dep_store

router = APIRouter(prefix="/v1", tags=["deployments"])


@router.get("/deployments/{name}/monitoring", responses=documented(r.DeploymentMonitoring, "not_found", "monitoring_disabled"))
async def deployment_monitoring(name: str, principal: PrincipalDep, state: StateDep) -> dict:
    """Windows (last 1,000 requests, last hour, last day) of this API process's traffic, the reference
    stored at training time, the PSI of each feature and the drift flags."""
    monitor = state.services.monitoring
    if monitor is None:
        raise Unavailable("Monitoring is off on this server (AIAAS_MONITORING_ENABLED=false).",
                          code="monitoring_disabled")

    def report() -> dict:
        with state.db.session() as s:
            dep = dep_store.get_deployment(s, principal.org_id, name)
            dep_id, model = dep.id, dep.model
        return monitor.report(dep_id, name, model)

    return await run_in_threadpool(report)
