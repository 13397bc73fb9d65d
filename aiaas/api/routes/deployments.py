"""/v1/deployments — named endpoints serving a model, and native prediction."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep, caller
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.protocol.common import Deleted, StrictModel, list_response
from aiaas.protocol.inference import DeploymentCreate, PredictRequest, predictions_public
from aiaas.protocol.versions import revision_public
from aiaas.services import deployments as dep_service
from aiaas.services.deployments import DeploymentUpdate
from aiaas.store import deployments as dep_store
from aiaas.store import versions

router = APIRouter(prefix="/v1", tags=["deployments"])
MODEL_HEADER = "x-aiaas-model"  # the model (version) that answered


# The predict route is registered first: routes are matched in order, and it takes most requests.
@router.post("/deployments/{name}/predict", responses=documented(r.Predictions, *r.SERVE_ERRORS, post=True))
async def predict(name: str, body: PredictRequest, request: Request, principal: PrincipalDep,
                  state: StateDep) -> JSONResponse:
    answer = await state.services.inference.classify(caller(request, principal), name, body.inputs,
                                                     top_k=body.top_k, deployment_only=True,
                                                     headers=request.headers)
    return JSONResponse(predictions_public(name, answer.model_id, answer.results, answer.tokens),
                        headers={MODEL_HEADER: answer.model_id})


@router.post("/deployments", status_code=201, responses=documented(r.DeploymentPublic, *r.DEPLOY_ERRORS, status=201, post=True))
def create_deployment(body: DeploymentCreate, principal: PrincipalDep, session: SessionDep, state: StateDep,
                      actor: ActorDep) -> dict:
    row = dep_service.create(session, state, actor, principal.org_id, name=body.name, ref=body.model,
                             min_replicas=body.min_replicas, max_replicas=body.max_replicas)
    return dep_service.describe(session, row)


@router.get("/deployments", responses=documented(r.Page[r.DeploymentPublic]))
def list_deployments(
    principal: PrincipalDep,
    session: SessionDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    rows, has_more = dep_store.list_deployments(session, principal.org_id, after=after, limit=limit, order=order)
    return list_response([dep_service.describe(session, r) for r in rows], has_more=has_more)


@router.get("/deployments/{name}", responses=documented(r.DeploymentPublic, "not_found"))
def retrieve_deployment(name: str, principal: PrincipalDep, session: SessionDep) -> dict:
    return dep_service.describe(session, dep_store.get_deployment(session, principal.org_id, name))


@router.patch("/deployments/{name}", responses=documented(r.DeploymentPublic, "invalid_json", *r.DEPLOY_ERRORS))
def update_deployment(name: str, body: DeploymentUpdate, principal: PrincipalDep, state: StateDep,
                      actor: ActorDep) -> dict:
    """Change the model, the alias followed or the traffic split without downtime (a new revision)."""
    return dep_service.apply(state, actor, principal.org_id, name, body)


class Rollback(StrictModel):
    revision: int | None = Field(default=None, ge=1)


@router.post("/deployments/{name}/rollback", responses=documented(r.DeploymentPublic, *r.DEPLOY_ERRORS, post=True))
def rollback_deployment(name: str, principal: PrincipalDep, state: StateDep, actor: ActorDep,
                        body: Rollback | None = None) -> dict:
    """Back to the previous revision (or `revision`), as a new revision."""
    return dep_service.rollback(state, actor, principal.org_id, name, body.revision if body else None)


@router.get("/deployments/{name}/shadow", responses=documented(r.DeploymentShadow, "not_found"))
def deployment_shadow(name: str, principal: PrincipalDep, session: SessionDep, state: StateDep) -> dict:
    """What the shadow candidate did with the requests mirrored to it (in this server process)."""
    dep = dep_store.get_deployment(session, principal.org_id, name)
    spec = versions.current_spec(session, dep)
    stats = state.services.inference.shadows.stats(principal.org_id, name)
    return {"object": "deployment.shadow", "deployment": name, "shadow": spec.get("shadow"),
            **({"stats": stats.public()} if stats is not None else {"stats": None})}


@router.get("/deployments/{name}/revisions", responses=documented(r.Page[r.DeploymentRevision], "not_found"))
def list_deployment_revisions(name: str, principal: PrincipalDep, session: SessionDep) -> dict:
    dep = dep_store.get_deployment(session, principal.org_id, name)
    return list_response([revision_public(r) for r in versions.list_revisions(session, dep)],
                         has_more=False)


@router.delete("/deployments/{name}", response_model=Deleted, responses=documented(None, "not_found", "conflict"))
def delete_deployment(name: str, principal: PrincipalDep, session: SessionDep, actor: ActorDep,
                      state: StateDep) -> dict:
    row = dep_service.delete(session, state, actor, principal.org_id, name)
    return {"id": row.id, "object": "deployment", "deleted": True}
