"""OpenAI-style inference: /v1/embeddings (works with `openai.OpenAI().embeddings.create`) and
/v1/classifications in the same style."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Request
from pydantic import Field

from aiaas.api.deps import PrincipalDep, StateDep
from aiaas.core.errors import InvalidRequest
from aiaas.protocol.common import StrictModel
from aiaas.services.inference import check_inputs, shape_predictions

router = APIRouter(prefix="/v1", tags=["inference"])


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


def _texts(value: Any, state: Any) -> list[str]:
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        raise InvalidRequest("Token-id input is not supported; send text.", param="input")
    if isinstance(value, list) and any(isinstance(v, list) for v in value):
        raise InvalidRequest("Token-id input is not supported; send a string or a list of strings.", param="input")
    return check_inputs(value, state.settings, field="input")


async def meter(request: Request, state: Any, principal: Any, model: str, texts: list[str], tokens: int) -> None:
    """Count the request as usage (the recorder batches writes off the hot path)."""
    usage = state.services.get("usage")
    if usage is not None:
        usage.record_inference(principal.org_id, principal.key_id, model, 1, tokens)


async def precharge(request: Request, texts: list[str]) -> None:
    """Charge an estimate of the tokens against the key's tokens/min limit before running the model."""
    from aiaas.api import deps

    charge = getattr(deps, "charge_tokens", None)
    if charge is not None:
        await charge(request, sum(len(t) for t in texts) // 4 + 2 * len(texts))


@router.post("/embeddings")
async def embeddings(body: EmbeddingsRequest, request: Request, principal: PrincipalDep, state: StateDep) -> dict:
    texts = _texts(body.input, state)
    await precharge(request, texts)
    inference = state.services["inference"]
    target = await inference.resolve(state.db, principal.org_id, body.model)
    _, vectors, tokens = await inference.run(target.artifact, texts, "embeddings")
    if body.dimensions is not None:
        if body.dimensions > vectors.shape[1]:
            raise InvalidRequest(f"dimensions must be at most {vectors.shape[1]} for this model.", param="dimensions")
        vectors = vectors[:, : body.dimensions]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    await meter(request, state, principal, target.model_id, texts, tokens)
    data = []
    for i, v in enumerate(vectors.astype(np.float32)):
        emb: Any = base64.b64encode(v.astype("<f4").tobytes()).decode() if body.encoding_format == "base64" \
            else v.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": target.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


@router.post("/classifications")
async def classifications(body: ClassificationsRequest, request: Request, principal: PrincipalDep,
                          state: StateDep) -> dict:
    texts = _texts(body.input, state)
    await precharge(request, texts)
    inference = state.services["inference"]
    target = await inference.resolve(state.db, principal.org_id, body.model)
    if target.task == "embedding":
        raise InvalidRequest(f"'{body.model}' is a base model without a classification head; fine-tune it first.",
                             param="model")
    predictor, scores, tokens = await inference.run(target.artifact, texts, "scores",
                                                    deployment_id=target.deployment_id)
    results = shape_predictions(predictor, scores, top_k=body.top_k, thresholds=target.thresholds)
    await meter(request, state, principal, target.model_id, texts, tokens)
    return {
        "object": "list",
        "model": target.model_id,
        "data": [{"object": "classification", "index": i, **r} for i, r in enumerate(results)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
