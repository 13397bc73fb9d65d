"""Open Inference Protocol v2 (KServe / Triton): health, metadata, readiness and inference, with the
binary tensor extension and gzip/deflate request bodies. Errors answer `{"error": "..."}`.

Model names are deployment names or fine-tuned model ids; the one version is "1".
Input `text` (BYTES, shape [N]); outputs `label` (BYTES [N]) and `scores` (FP32 [N, C]) for
classifiers, `value` (FP32 [N]) for regression, `embeddings` (FP32 [N, H]) for base models.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from aiaas import __version__
from aiaas.api.deps import PrincipalDep, StateDep
from aiaas.core.errors import InvalidRequest, NotFound, PayloadTooLarge
from aiaas.registry import models as registry
from aiaas.serving import oip_codec as codec
from aiaas.services.inference import Target, check_inputs
from aiaas.store import deployments as dep_store

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])
VERSION = "1"


@router.get("")
async def server_metadata() -> dict:
    return {"name": "aiaas", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live")
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready")
async def ready() -> dict:
    return {"ready": True}


@router.get("/models")
def list_models(principal: PrincipalDep, state: StateDep) -> dict:
    with state.db.session() as s:
        deps, _ = dep_store.list_deployments(s, principal.org_id, after=None, limit=100)
        models = registry.list_models(s, principal.org_id)
    entries = [{"name": d.name, "versions": [VERSION], "platform": "onnxruntime_onnx", "model": d.model}
               for d in deps]
    entries += [{"name": m.id, "versions": [VERSION], "platform": "onnxruntime_onnx"} for m in models]
    return {"models": entries}


async def _target(state: Any, principal: Any, name: str, version: str | None) -> Target:
    if version is not None and version != VERSION:
        raise NotFound(f"Model '{name}' has no version '{version}'; available: {VERSION}.")
    return await state.services["inference"].resolve(state.db, principal.org_id, name)


def _outputs_meta(target: Target, n_labels: int | None) -> list[dict]:
    if target.task == "embedding":
        return [{"name": "embeddings", "datatype": "FP32", "shape": [-1, -1]}]
    if target.task == "regression":
        return [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, n_labels or -1]}]


async def _metadata(state: Any, principal: Any, name: str, version: str | None) -> dict:
    target = await _target(state, principal, name, version)
    labels = await run_in_threadpool(_labels, state, principal.org_id, target)
    return {
        "name": name,
        "versions": [VERSION],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": _outputs_meta(target, len(labels) if labels else None),
        "parameters": {"model": target.model_id, "task": target.task, "labels": labels},
    }


def _labels(state: Any, org_id: str, target: Target) -> list[str]:
    if target.task == "embedding":
        return []
    with state.db.session() as s:
        return list((registry.get_model(s, org_id, target.model_id).card or {}).get("labels") or [])


@router.get("/models/{model_name}")
async def model_metadata(model_name: str, principal: PrincipalDep, state: StateDep) -> dict:
    return await _metadata(state, principal, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}")
async def model_version_metadata(model_name: str, model_version: str, principal: PrincipalDep,
                                 state: StateDep) -> dict:
    return await _metadata(state, principal, model_name, model_version)


@router.get("/models/{model_name}/ready")
async def model_ready(model_name: str, principal: PrincipalDep, state: StateDep) -> dict:
    # A scaled-to-zero model is still ready: the next request loads it and is held meanwhile.
    await _target(state, principal, model_name, None)
    return {"name": model_name, "ready": True}


@router.get("/models/{model_name}/versions/{model_version}/ready")
async def model_version_ready(model_name: str, model_version: str, principal: PrincipalDep,
                              state: StateDep) -> dict:
    await _target(state, principal, model_name, model_version)
    return {"name": model_name, "ready": True}


@router.post("/models/{model_name}/infer")
async def infer(model_name: str, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    return await _infer(request, state, principal, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer")
async def infer_version(model_name: str, model_version: str, request: Request, principal: PrincipalDep,
                        state: StateDep) -> Response:
    return await _infer(request, state, principal, model_name, model_version)


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """gzip/deflate bodies, refusing to inflate past the request limit (no decompression bombs)."""
    if not encoding or encoding.lower() == "identity":
        return body
    enc = encoding.lower()
    if enc not in ("gzip", "deflate"):
        raise InvalidRequest(f"Unsupported Content-Encoding '{encoding}'; use gzip or deflate.")
    wbits = 16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidRequest(f"The {enc} body could not be decompressed: {exc}.") from None
    if len(out) > limit or d.unconsumed_tail:
        raise PayloadTooLarge(f"The decompressed body is larger than the limit of {limit} bytes.")
    return out


def _texts(req: codec.InferRequest, state: Any) -> list[str]:
    tensor = req.input("text")
    if tensor is None:
        names = ", ".join(t.name for t in req.inputs)
        raise InvalidRequest(f"Input 'text' (BYTES, shape [N]) is required; got: {names}.")
    if tensor.datatype != codec.BYTES:
        raise InvalidRequest(f"Input 'text' must have datatype BYTES, not {tensor.datatype}.")
    if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
        raise InvalidRequest(f"Input 'text' must have shape [N] or [N, 1], not {list(tensor.shape)}.")
    texts = []
    for i, item in enumerate(tensor.data.reshape(-1)):
        try:
            texts.append(item.decode("utf-8") if isinstance(item, bytes | bytearray) else str(item))
        except UnicodeDecodeError:
            raise InvalidRequest(f"Input 'text' element {i} is not valid UTF-8.") from None
    return check_inputs(texts, state.settings, field="text")


async def _infer(request: Request, state: Any, principal: Any, name: str, version: str | None) -> Response:
    raw = _decompress(await request.body(), request.headers.get("content-encoding"),
                      state.settings.max_request_bytes)
    req = await run_in_threadpool(codec.decode_request, raw, request.headers.get(codec.HEADER_LENGTH_HEADER))
    texts = _texts(req, state)
    target = await _target(state, principal, name, version)
    from aiaas.api.routes.inference import meter, precharge

    await precharge(request, texts)
    inference = state.services["inference"]
    kind = "embeddings" if target.task == "embedding" else "scores"
    predictor, rows, tokens = await inference.run(target.artifact, texts, kind,
                                                  deployment_id=target.deployment_id)
    outputs = _output_tensors(target, predictor, rows)
    if req.outputs:
        known = {t.name: t for t in outputs}
        unknown = [o.name for o in req.outputs if o.name not in known]
        if unknown:
            raise InvalidRequest(f"Unknown output(s) {unknown}; this model has: {', '.join(known)}.")
        outputs = [known[o.name] for o in req.outputs]
    await meter(request, state, principal, target.model_id, texts, tokens)
    body, header_len = codec.encode_response(model_name=name, model_version=VERSION, outputs=outputs, request=req)
    if header_len is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={codec.HEADER_LENGTH_HEADER: str(header_len)})


def _output_tensors(target: Target, predictor: Any, rows: np.ndarray) -> list[codec.Tensor]:
    n = rows.shape[0]
    if target.task == "embedding":
        return [codec.Tensor("embeddings", "FP32", tuple(rows.shape), rows.astype(np.float32))]
    if target.task == "regression":
        return [codec.Tensor("value", "FP32", (n,), rows[:, 0].astype(np.float32))]
    labels = list(predictor.labels)
    if target.task == "multi_label_classification":
        th = np.asarray(target.thresholds or predictor.thresholds or [0.5] * len(labels))
        names = ["|".join(labels[j] for j in np.flatnonzero(r >= th)) for r in rows]
    else:
        names = [labels[int(i)] for i in rows.argmax(axis=1)]
    label_arr = np.array([s.encode() for s in names], dtype=object)
    return [codec.Tensor("label", codec.BYTES, (n,), label_arr),
            codec.Tensor("scores", "FP32", tuple(rows.shape), rows.astype(np.float32))]
