"""/v1/deployments — named endpoints serving a model, and native prediction."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal

from anyio import from_thread
from fastapi import APIRouter, Query, Request

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep, caller
from aiaas.protocol.common import Deleted, list_response
from aiaas.protocol.inference import DeploymentCreate, PredictRequest, deployment_public
from aiaas.registry import models as registry
from aiaas.services import audit, quotas
from aiaas.store import deployments as dep_store

router = APIRouter(prefix="/v1", tags=["deployments"])


# The predict route is registered first: routes are matched in order, and it takes most requests.
@router.post("/deployments/{name}/predict")
async def predict(name: str, body: PredictRequest, request: Request, principal: PrincipalDep,
                  state: StateDep) -> dict:
    answer = await state.services.inference.classify(caller(request, principal), name, body.inputs,
                                                     top_k=body.top_k, deployment_only=True)
    return {
        "object": "list",
        "model": answer.model_id,
        "deployment": name,
        "data": [{"index": i, **r} for i, r in enumerate(answer.results)],
        "usage": {"prompt_tokens": answer.tokens, "total_tokens": answer.tokens},
    }


@router.post("/deployments", status_code=201)
def create_deployment(body: DeploymentCreate, principal: PrincipalDep, session: SessionDep, state: StateDep,
                      actor: ActorDep) -> dict:
    model = registry.get_model(session, principal.org_id, body.model)
    quotas.check_deployments(session, state.settings, principal.org_id)
    row = dep_store.create_deployment(session, principal.org_id, name=body.name, model=model.id,
                                      min_replicas=body.min_replicas)
    audit.record(session, actor, "deployment.created", target_type="deployment", target_id=row.id,
                 details={"name": row.name, "model": row.model, "min_replicas": row.min_replicas})
    session.flush()  # a conflict answers before anything starts serving
    from_thread.run(state.services.inference.deployed, row.id, model.artifact_uri, row.min_replicas)
    return deployment_public(row)


@router.get("/deployments")
def list_deployments(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    rows, has_more = dep_store.list_deployments(session, principal.org_id, after=after, limit=limit, order=order)
    return list_response([deployment_public(r) for r in rows], has_more=has_more)


@router.get("/deployments/{name}")
def retrieve_deployment(name: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return deployment_public(dep_store.get_deployment(session, principal.org_id, name))


@router.delete("/deployments/{name}", response_model=Deleted)
def delete_deployment(name: str, principal: PrincipalDep, session: SessionDep, actor: ActorDep,
                      state: StateDep) -> dict:
    row = dep_store.get_deployment(session, principal.org_id, name)
    session.delete(row)
    audit.record(session, actor, "deployment.deleted", target_type="deployment", target_id=row.id,
                 details={"name": row.name, "model": row.model})
    unpin = None
    if row.min_replicas:
        session.flush()
        model = registry.get_model(session, principal.org_id, row.model)
        if model.artifact_uri not in dep_store.pinned_artifacts(session):  # by another deployment
            unpin = model.artifact_uri  # may scale to zero again
    from_thread.run(partial(state.services.inference.undeployed, principal.org_id, row.name, row.id, unpin=unpin))
    return {"id": row.id, "object": "deployment", "deleted": True}
