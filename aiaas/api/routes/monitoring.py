"""/v1/deployments/{name}/monitoring — live traffic against the training data, by window, with drift flags;
/v1/deployments/{name}/request_logs/export — the sampled requests as a training file."""

from __future__ import annotations

import io

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.core.errors import InvalidRequest, Unavailable
from aiaas.protocol import responses as r
from aiaas.protocol.files import FilePublic, file_public
from aiaas.services import audit, request_log
from aiaas.services import files as file_service
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


@router.post("/deployments/{name}/request_logs/export", status_code=201,
             responses=documented(FilePublic, "not_found", "no_request_logs", status=201, post=True))
def export_request_logs(name: str, principal: PrincipalDep, state: StateDep, session: SessionDep,
                        actor: ActorDep) -> dict:
    """The deployment's sampled requests still kept, as a new JSONL file (purpose `fine-tune`: one record per
    text with `text` and the answer, `label` for single-label models), to relabel and train on. The
    samples this API process has not written yet are flushed first."""
    dep = dep_store.get_deployment(session, principal.org_id, name)
    if state.services.request_log is not None:
        state.services.request_log.flush()
    data, records = request_log.export(state.db, state.services.blobs, principal.org_id, dep.id)
    if not records:
        raise InvalidRequest(f"Deployment '{name}' has no sampled requests to export; turn sampling on with "
                             "PATCH /v1/deployments/{name} {\"request_logging\": {\"sample_rate\": 0.1}}.",
                             param="name", code="no_request_logs")
    row = file_service.upload(session, state.services.blobs, org_id=principal.org_id, src=io.BytesIO(data),
                              filename=f"{name}-requests.jsonl", purpose="fine-tune",
                              max_bytes=state.settings.max_upload_bytes, settings=state.settings)
    audit.record(session, actor, "file.uploaded", target_type="file", target_id=row.id,
                 details={"filename": row.filename, "bytes": row.bytes, "purpose": row.purpose,
                          "source": "request_logs", "deployment": name, "records": records})
    return file_public(row)
