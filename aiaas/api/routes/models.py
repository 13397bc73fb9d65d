"""/v1/models — base models, model families and the organisation's fine-tuned models (OpenAI shapes).

Base models and families are what a fine-tuning job's `model` may name; only base models
(embeddings) and fine-tuned models can be called."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from aiaas.api.deps import ActorDep, PrincipalDep, SessionDep, StateDep
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import InvalidRequest, not_found
from aiaas.protocol.common import list_stream
from aiaas.protocol.models import base_model_public, family_public, model_public
from aiaas.registry import models as registry
from aiaas.services import audit, catalog, download
from aiaas.store import versions

router = APIRouter(prefix="/v1", tags=["models"])


def _base_models(state) -> list[dict]:
    """Base models, then the model families (both are starting points for jobs, owned by aiaas)."""
    bases = [base_model_public(m["id"], m) for m in catalog.base_models(state.settings.base_models_dir)]
    return bases + [family_public(f) for f in catalog.model_families()]


@router.get("/models", responses=documented(r.ModelList))
def list_models(principal: PrincipalDep, state: StateDep) -> StreamingResponse:
    """Every model (OpenAI's list has no pages), written a batch of the organisation's models at a time:
    the listing's memory does not grow with the number of models (registry.model_pages)."""
    pages = registry.model_pages(state.db, principal.org_id)
    first = next(pages, [])  # read before answering: a database error is still a 500 with the request id
    items = _public_pages(_base_models(state), first, pages)
    return StreamingResponse(iterate_in_threadpool(list_stream(items)), media_type="application/json")


def _public_pages(bases: list[dict], first: list[Any], pages: Iterator[list[Any]]) -> Iterator[list[dict]]:
    """The base models, then each batch of models as public dicts. A batch's rows and dicts are let go before
    the next batch is read, so a listing holds one batch (~0.6 MB of cards for 25 models), not the first
    batch for the whole listing plus two more (measured 6.5 MB; the soak's concurrent listings left the API
    process's Python heap that much larger each time: bench/README.md)."""
    yield bases
    batch: list[Any] | None = first
    del first
    while batch is not None:
        items = [model_public(m) for m in batch]
        batch = None
        yield items
        items = []
        batch = next(pages, None)


@router.get("/models/{model}", responses=documented(r.ModelPublic, "not_found"))
def retrieve_model(model: str, principal: PrincipalDep, session: SessionDep, state: StateDep) -> dict:
    if model.startswith("ft:"):
        return model_public(registry.get_model(session, principal.org_id, model))
    for base in _base_models(state):
        if base["id"] == model:
            return base
    raise not_found("model", model, param="model")


@router.get("/models/{model:path}/content", response_class=StreamingResponse,
            responses=documented(None, "not_found", "invalid_request", media=r.ARCHIVES))
async def download_model(model: str, principal: PrincipalDep, state: StateDep, actor: ActorDep,
                         format: Literal["hf", "onnx"] = "hf",  # noqa: A002 - the query parameter's name
                         archive: Literal["tar.gz", "zip"] = "tar.gz") -> StreamingResponse:
    """The decrypted artifact as an archive (`hf`: transformers directory + model card; `onnx`: the served
    graph, tokenizer and label map). `model`: `ft:…`, `name/N` or `name@alias`; the slash of `name/N`
    may be sent as is or encoded (`name%2FN`), both reach here as `name/N`."""
    filename, chunks = await run_in_threadpool(download.build_archive, state, actor, principal.org_id, model,
                                               format, archive)
    return StreamingResponse(iterate_in_threadpool(chunks),
                             media_type="application/zip" if archive == "zip" else "application/gzip",
                             headers={"content-disposition": f'attachment; filename="{filename}"'})


@router.delete("/models/{model}", responses=documented(r.ModelDeleted, "not_found", "invalid_request", "conflict"))
def delete_model(model: str, principal: PrincipalDep, session: SessionDep, state: StateDep,
                 actor: ActorDep) -> dict:
    if not model.startswith("ft:"):
        if any(b["id"] == model for b in _base_models(state)):
            raise InvalidRequest(
                "Base models and model families cannot be deleted; only your fine-tuned models.", param="model"
            )
        raise not_found("model", model, param="model")
    row = registry.get_model(session, principal.org_id, model)
    versions.check_unused(session, principal.org_id, model, what=f"Model '{model}'")  # 409 while deployed
    uri = row.artifact_uri
    versions.delete_version_of(session, principal.org_id, model)
    session.delete(row)
    audit.record(session, actor, "model.deleted", target_type="model", target_id=model)
    session.flush()
    state.services.inference.model_deleted(principal.org_id, model, uri)
    state.services.blobs.delete(uri)
    return {"id": model, "object": "model", "deleted": True}
