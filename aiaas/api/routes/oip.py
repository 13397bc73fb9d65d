"""Open Inference Protocol v2 (KServe / Triton): health, metadata, readiness and inference, with the
binary tensor extension and gzip/deflate request bodies. Errors answer `{"error": "..."}`.

Model names are deployment names, fine-tuned model ids, registered model names (`support`, its latest
version), `name/N` and `name@alias`; a registered model's versions are its version numbers
(`/v2/models/support/versions/3`), a deployment's those of its model's registered model, and a model
outside any registered model has the one version "1".
Input `text` (BYTES, shape [N]); outputs `label` (BYTES [N]) and `scores` (FP32 [N, C]) for
classifiers, `value` (FP32 [N]) for regression, `embeddings` (FP32 [N, H]) for base models.
"""

from __future__ import annotations

import zlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from aiaas import __version__
from aiaas.api.deps import AppState, PrincipalDep, StateDep, caller
from aiaas.api.openapi import documented
from aiaas.protocol import responses as r
from aiaas.core.errors import InvalidRequest, PayloadTooLarge
from aiaas.registry import models as registry
from aiaas.security.keys import Principal
from aiaas.services.inference import OIP_VERSION, Target
from aiaas.serving import oip_codec as codec
from aiaas.serving.interface import EMBEDDING, REGRESSION
from aiaas.store import deployments as dep_store
from aiaas.store import versions

router = APIRouter(prefix="/v2", tags=["open-inference-protocol"])
VERSION = OIP_VERSION
# Bodies up to this size are decoded on the event loop: a few texts decode in microseconds, less than the
# thread hop (~0.2 ms of CPU a request in the serving bench); larger ones still go to the thread pool.
INLINE_DECODE_BYTES = 16 * 1024
MODEL_HEADER = "x-aiaas-model"  # the model (version) that answered


@router.get("", responses=documented(r.OipServerMetadata, public=True, oip=True))
async def server_metadata() -> dict:
    return {"name": "aiaas", "version": __version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", responses=documented(r.OipLive, public=True, oip=True))
async def live() -> dict:
    return {"live": True}


@router.get("/health/ready", responses=documented(r.OipReady, public=True, oip=True) | r.oip_not_ready(r.OipReady))
async def ready(state: StateDep) -> JSONResponse:
    healthy = await state.services.inference.healthy()
    return JSONResponse({"ready": healthy}, status_code=200 if healthy else 503)


@router.get("/models", responses=documented(r.OipModelIndex, oip=True))
def list_models(principal: PrincipalDep, state: StateDep) -> dict:
    with state.db.session() as s:
        deps, _ = dep_store.list_deployments(s, principal.org_id, after=None, limit=100)
        models = registry.model_ids(s, principal.org_id)  # ids only: cards are not read to name models
        registered = [(rm.name, [str(v.version) for v in versions.list_versions(s, rm)])
                      for rm in versions.list_registered(s, principal.org_id)]
        own = {m: versions.version_of_model(s, principal.org_id, m) for m in models}
    entries = [{"name": d.name, "versions": [VERSION], "platform": "onnxruntime_onnx", "model": d.model}
               for d in deps]
    entries += [{"name": name, "versions": vs, "platform": "onnxruntime_onnx"} for name, vs in registered]
    entries += [{"name": m, "versions": [str(v.version) if (v := own[m]) is not None else VERSION],
                 "platform": "onnxruntime_onnx"} for m in models]
    return {"models": entries}


def _outputs_meta(target: Target, n_labels: int | None) -> list[dict]:
    if target.task == EMBEDDING:
        return [{"name": "embeddings", "datatype": "FP32", "shape": [-1, -1]}]
    if target.task == REGRESSION:
        return [{"name": "value", "datatype": "FP32", "shape": [-1]}]
    return [{"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1, n_labels or -1]}]


async def _metadata(state: AppState, principal: Principal, name: str, version: str | None) -> dict:
    target = await state.services.inference.oip_target(principal.org_id, name, version)
    labels = list(target.labels) if target.task != EMBEDDING else []
    return {
        "name": name,
        "versions": await state.services.inference.targets.version_names(principal.org_id, name),
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": _outputs_meta(target, len(labels) if labels else None),
        "parameters": {"model": target.model_id, "task": target.task, "labels": labels},
    }


@router.get("/models/{model_name}", responses=documented(r.OipModelMetadata, "not_found", oip=True))
async def model_metadata(model_name: str, principal: PrincipalDep, state: StateDep) -> dict:
    return await _metadata(state, principal, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}",
            responses=documented(r.OipModelMetadata, "not_found", oip=True))
async def model_version_metadata(model_name: str, model_version: str, principal: PrincipalDep,
                                 state: StateDep) -> dict:
    return await _metadata(state, principal, model_name, model_version)


@router.get("/models/{model_name}/ready",
            responses=documented(r.OipModelReady, "not_found", oip=True) | r.oip_not_ready(r.OipModelReady))
async def model_ready(model_name: str, principal: PrincipalDep, state: StateDep) -> JSONResponse:
    return await _ready(state, principal, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready",
            responses=documented(r.OipModelReady, "not_found", oip=True) | r.oip_not_ready(r.OipModelReady))
async def model_version_ready(model_name: str, model_version: str, principal: PrincipalDep,
                              state: StateDep) -> JSONResponse:
    return await _ready(state, principal, model_name, model_version)


async def _ready(state: AppState, principal: Principal, name: str, version: str | None) -> JSONResponse:
    """200 when the model is loaded; 503 when it is not (scaled to zero: its next request loads it),
    which is what tritonclient's is_model_ready and KServe probes read."""
    ready = await state.services.inference.ready(principal.org_id, name, version)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@router.post("/models/{model_name}/infer", responses=documented(r.OipInferResponse, *r.SERVE_ERRORS, post=True, oip=True, media=r.OIP_BINARY))
async def infer(model_name: str, request: Request, principal: PrincipalDep, state: StateDep) -> Response:
    return await _infer(request, state, principal, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer",
             responses=documented(r.OipInferResponse, *r.SERVE_ERRORS, post=True, oip=True, media=r.OIP_BINARY))
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


async def _infer(request: Request, state: AppState, principal: Principal, name: str, version: str | None) -> Response:
    raw = _decompress(await request.body(), request.headers.get("content-encoding"),
                      state.settings.max_request_bytes)
    header_length = request.headers.get(codec.HEADER_LENGTH_HEADER)
    req = (codec.decode_request(raw, header_length) if len(raw) <= INLINE_DECODE_BYTES
           else await run_in_threadpool(codec.decode_request, raw, header_length))
    answer = await state.services.inference.infer_tensors(caller(request, principal), name, version, req,
                                                          headers=request.headers)
    body, header_len = codec.encode_response(model_name=name, model_version=version or VERSION,
                                             outputs=answer.results, request=req)
    headers = {MODEL_HEADER: answer.model_id}
    if header_len is None:
        return Response(body, media_type="application/json", headers=headers)
    return Response(body, media_type="application/octet-stream",
                    headers={codec.HEADER_LENGTH_HEADER: str(header_len), **headers})
