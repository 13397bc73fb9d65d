"""OpenAI-style inference: /v1/embeddings (works with `openai.OpenAI().embeddings.create`) and
/v1/classifications in the same style."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import Field

from aiaas.api.deps import PrincipalDep, StateDep, caller
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import InvalidRequest
from aiaas.protocol.common import StrictModel
from aiaas.protocol.inference import classifications_public, embeddings_public

router = APIRouter(prefix="/v1", tags=["inference"])
MODEL_HEADER = "x-aiaas-model"  # the model (version) that answered


class EmbeddingsRequest(StrictModel):
    model: str = Field(min_length=1, max_length=300)
    input: Any
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


class ClassificationsRequest(StrictModel):
    model: str = Field(min_length=1, max_length=300)
    input: Any
    top_k: int | None = Field(default=None, ge=1, le=1000)
    user: str | None = None


def _input(value: Any) -> Any:
    """OpenAI's `input` minus what we do not serve (token ids); the service checks the rest."""
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        raise InvalidRequest("Token-id input is not supported; send text.", param="input")
    if isinstance(value, list) and any(isinstance(v, list) for v in value):
        raise InvalidRequest("Token-id input is not supported; send a string or a list of strings.", param="input")
    return value


@router.post("/embeddings", responses=documented(r.Embeddings, *r.SERVE_ERRORS, post=True))
async def embeddings(body: EmbeddingsRequest, request: Request, response: Response, principal: PrincipalDep,
                     state: StateDep) -> dict:
    answer = await state.services.inference.embed(caller(request, principal), body.model, _input(body.input),
                                                  dimensions=body.dimensions, headers=request.headers)
    response.headers[MODEL_HEADER] = answer.model_id
    return embeddings_public(answer.model_id, answer.results, answer.tokens,
                             base64_out=body.encoding_format == "base64")


@router.post("/classifications", responses=documented(r.Predictions, *r.SERVE_ERRORS, post=True),
             openapi_extra=r.CLASSIFY_EXAMPLE)
async def classifications(body: ClassificationsRequest, request: Request, response: Response,
                          principal: PrincipalDep, state: StateDep) -> dict:
    answer = await state.services.inference.classify(caller(request, principal), body.model, _input(body.input),
                                                     top_k=body.top_k, field="input", headers=request.headers)
    response.headers[MODEL_HEADER] = answer.model_id
    return classifications_public(answer.model_id, answer.results, answer.tokens)
