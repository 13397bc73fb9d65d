"""/v1/registered_models — named models, their numbered versions and aliases (logic: services/versions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Path
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.protocol.common import StrictModel, list_response
from aiaas.services import versions as service

router = APIRouter(prefix="/v1", tags=["registered models"])
Version = Path(ge=1, le=10**9)


class AliasSet(StrictModel):
    version: int = Field(ge=1, le=10**9)


class VersionCreate(StrictModel):
    checkpoint: str = Field(min_length=1, max_length=64)  # a job checkpoint's id (ftckpt-…)


@router.get("/registered_models", responses=documented(r.Page[r.RegisteredModel]))
def list_registered_models(principal: PrincipalDep, state: StateDep) -> dict:
    return list_response(service.list_registered(state, principal.org_id), has_more=False)


@router.get("/registered_models/{registered_model}", responses=documented(r.RegisteredModel, "not_found"))
def retrieve_registered_model(registered_model: str, principal: PrincipalDep, state: StateDep) -> dict:
    return service.get_registered(state, principal.org_id, registered_model)


@router.get("/registered_models/{registered_model}/versions", responses=documented(r.Page[r.ModelVersion], "not_found"))
def list_model_versions(registered_model: str, principal: PrincipalDep, state: StateDep) -> dict:
    return list_response(service.list_versions(state, principal.org_id, registered_model), has_more=False)


@router.post("/registered_models/{registered_model}/versions", status_code=201,
             responses=documented(r.ModelVersion, "not_found", "conflict", "checkpoint_unavailable", status=201, post=True))
async def create_model_version(registered_model: str, body: VersionCreate, principal: PrincipalDep,
                               state: StateDep, actor: ActorDep) -> dict:
    """Register a kept checkpoint of a succeeded job as the next version (lineage: checkpoint and step)."""
    return await run_in_threadpool(service.register_checkpoint, state, actor, principal.org_id, registered_model,
                                   body.checkpoint)


@router.get("/registered_models/{registered_model}/versions/{version}", responses=documented(r.ModelVersion, "not_found"))
def retrieve_model_version(registered_model: str, principal: PrincipalDep, state: StateDep,
                           version: int = Version) -> dict:
    return service.get_version(state, principal.org_id, registered_model, version)


@router.delete("/registered_models/{registered_model}/versions/{version}",
                responses=documented(r.ModelVersionDeleted, "not_found", "conflict"))
def delete_model_version(registered_model: str, principal: PrincipalDep, state: StateDep, actor: ActorDep,
                         version: int = Version) -> dict:
    return service.delete_version(state, actor, principal.org_id, registered_model, version)


@router.put("/registered_models/{registered_model}/aliases/{alias}",
             responses=documented(r.AliasSetResult, "invalid_json", "invalid_request", "not_found", "conflict", "insufficient_memory"))
def set_alias(registered_model: str, alias: str, body: AliasSet, principal: PrincipalDep, state: StateDep,
              actor: ActorDep) -> dict:
    return service.set_alias(state, actor, principal.org_id, registered_model, alias, body.version)


@router.delete("/registered_models/{registered_model}/aliases/{alias}",
                responses=documented(r.AliasDeleted, "not_found", "conflict"))
def delete_alias(registered_model: str, alias: str, principal: PrincipalDep, state: StateDep,
                 actor: ActorDep) -> dict:
    return service.delete_alias(state, actor, principal.org_id, registered_model, alias)
