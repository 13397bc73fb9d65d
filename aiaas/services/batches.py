"""Batches (issue 16): creating one (checks only; a worker runs it) and answering a chunk of its lines.

A chunk is answered by the same inference use case as the online routes (InferenceService.classify and
.embed: the same checks, shaping and runtime), inside the worker process. Lines that ask the same model
with the same options are sent together, up to the per-request input limit, so a batch runs at the
model's batched throughput; each line is still answered, and metered, as one request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.core.settings import Settings
from aiaas.protocol.batches import BatchCreate
from aiaas.protocol.inference import classifications_public, embeddings_public, predictions_public
from aiaas.services import files as file_service
from aiaas.services.inference.metering import Caller
from aiaas.services.inference.service import InferenceService
from aiaas.services.usage import UsageRecorder
from aiaas.registry import models as registry
from aiaas.store import batches as batch_store
from aiaas.store import deployments as dep_store
from aiaas.store import files as file_store
from aiaas.store.models import Batch

ENDPOINTS = ("/v1/classifications", "/v1/embeddings")
TABLE_FORMATS = ("csv", "parquet")


def predict_deployment(endpoint: str) -> str | None:
    """The deployment a "/v1/deployments/{name}/predict" endpoint names, else None."""
    head, tail = "/v1/deployments/", "/predict"
    if not (endpoint.startswith(head) and endpoint.endswith(tail)):
        return None
    name = endpoint[len(head):-len(tail)]
    return name if 0 < len(name) <= 100 and "/" not in name else None


def create(session: Session, settings: Settings, *, org_id: str, key_id: str | None, body: BatchCreate) -> Batch:
    """Check what can be checked now (the file, the endpoint, the CSV options); the worker reads the lines."""
    if body.endpoint not in ENDPOINTS and predict_deployment(body.endpoint) is None:
        raise InvalidRequest(f"Unsupported endpoint '{body.endpoint[:100]}'; use one of {', '.join(ENDPOINTS)} or "
                             "/v1/deployments/{name}/predict.", param="endpoint")
    f = file_store.get_file(session, org_id, body.input_file_id, param="input_file_id")
    file_service.require_processed(f, param="input_file_id")
    if f.purpose != "batch":
        raise InvalidRequest(f"File {f.id} has purpose '{f.purpose}'; upload the input with purpose 'batch'.",
                             param="input_file_id")
    fmt = (f.summary or {}).get("format")
    options: dict[str, Any] = {}
    if fmt in TABLE_FORMATS:
        if not body.text_column:
            raise InvalidRequest(f"File {f.id} is a {fmt} table: name the column to score with 'text_column'.",
                                 param="text_column")
        if body.text_column not in ((f.summary or {}).get("columns") or []):
            raise InvalidRequest(f"File {f.id} has no column '{body.text_column[:100]}'.", param="text_column")
        if body.endpoint == "/v1/embeddings":
            raise InvalidRequest("A CSV or Parquet file is scored by a classifier; use /v1/classifications or a "
                                 "deployment's predict endpoint.", param="endpoint")
        deployment = predict_deployment(body.endpoint) or body.deployment
        model = deployment or body.model
        if not model:
            raise InvalidRequest("Name the model to score the table with: 'deployment' or 'model'.",
                                 param="deployment")
        # Checked now (in the caller's organisation), not first by the worker: a wrong name is a 404 here.
        if deployment:
            dep_store.get_deployment(session, org_id, deployment)
        else:
            registry.get_model(session, org_id, model, param="model")
        options = {"text_column": body.text_column, "model": model, "top_k": body.top_k,
                   "deployment_only": bool(predict_deployment(body.endpoint) or body.deployment)}
    elif body.text_column:
        raise InvalidRequest("'text_column' is for CSV or Parquet input; this file is JSONL.", param="text_column")
    return batch_store.create(session, org_id=org_id, created_by=key_id, endpoint=body.endpoint,
                              input_file_id=f.id, completion_window=body.completion_window,
                              metadata=body.metadata, options=options)


# ---- answering lines (in the worker) ----------------------------------------------------------
class DeferredUsage(UsageRecorder):
    """Collects what the service meters for a chunk; the runner passes it on once the chunk is committed,
    so a chunk answered twice (its first worker died before committing) is metered once."""

    def __init__(self) -> None:  # no database: nothing is written from here
        self.tokens: dict[str, int] = {}

    def record_inference(self, org_id: str, key_id: str | None, model: str, requests: int,
                         input_tokens: int) -> None:
        self.tokens[model] = self.tokens.get(model, 0) + int(input_tokens)


@dataclass
class Chunk:
    """One chunk's answers: output lines, error lines, and per model (lines answered, tokens read)."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    usage: dict[str, list[int]] = field(default_factory=dict)

    def meter(self, recorder: UsageRecorder, org_id: str, key_id: str | None) -> None:
        for model, (lines, tokens) in self.usage.items():
            recorder.record_inference(org_id, key_id, model, lines, tokens)


def _line(batch_id: str, n: int, custom_id: Any, status: int, body: Any, error: dict[str, Any] | None) -> str:
    # Ids are derived from the batch and the line, so a chunk answered again writes the same bytes.
    rid = f"{batch_id}-{n}"
    return json.dumps({"id": f"batch_req_{rid}", "custom_id": custom_id,
                       "response": {"status_code": status, "request_id": rid, "body": body}, "error": error},
                      separators=(",", ":"))


def _error_body(err: AiaasError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": "invalid_request_error", "param": err.param,
                      "code": err.code}}


@dataclass
class _Request:
    n: int
    custom_id: Any
    kind: str  # "classify" | "embed" | "predict"
    model: str
    texts: list[str]
    one: bool  # `input` was one string
    opts: tuple[Any, ...]


def parse_line(raw: str, n: int, endpoint: str) -> _Request:
    """One JSONL line -> a request, or InvalidRequest naming what is wrong with it."""
    try:
        obj = json.loads(raw)
    except ValueError:
        raise InvalidRequest(f"Line {n} is not valid JSON.", param=f"line {n}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str) or not obj["custom_id"]:
        raise InvalidRequest(f"Line {n} needs a string 'custom_id'.", param=f"line {n}")
    if obj.get("method", "POST") != "POST" or obj.get("url") != endpoint:
        raise InvalidRequest(f"Line {n}: method must be POST and url the batch's endpoint ({endpoint}).",
                             param=f"line {n}")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest(f"Line {n} needs an object 'body'.", param=f"line {n}")
    deployment = predict_deployment(endpoint)
    opts: tuple[Any, ...]
    if deployment is not None:
        texts, model, kind, opts = body.get("inputs"), deployment, "predict", (body.get("top_k"),)
    else:
        named = body.get("model")
        if not isinstance(named, str) or not named:
            raise InvalidRequest(f"Line {n}: body needs a 'model'.", param=f"line {n}")
        model = named
        texts = body.get("input")
        if endpoint == "/v1/embeddings":
            kind, opts = "embed", (body.get("dimensions"), body.get("encoding_format", "float"))
        else:
            kind, opts = "classify", (body.get("top_k"),)
    one = isinstance(texts, str)
    texts = [texts] if one else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest(f"Line {n}: the input must be a string or a non-empty list of strings.",
                             param=f"line {n}")
    return _Request(n, obj["custom_id"], kind, model, texts, one, opts)


async def answer_jsonl(service: InferenceService, caller: Caller, batch_id: str, endpoint: str,
                       lines: Sequence[tuple[int, str]], max_inputs: int) -> Chunk:
    """Answer JSONL lines (number, text): same-model lines go to the model together."""
    chunk = Chunk()
    groups: dict[tuple[Any, ...], list[_Request]] = {}
    for n, raw in lines:
        try:
            req = parse_line(raw, n, endpoint)
        except InvalidRequest as exc:
            cid = _custom_id(raw)
            chunk.err.append(_line(batch_id, n, cid, 400, _error_body(exc), {"code": exc.code, "message": exc.message}))
            continue
        groups.setdefault((req.kind, req.model, req.opts), []).append(req)
    for (kind, model, opts), reqs in groups.items():
        start = 0
        while start < len(reqs):
            part: list[_Request] = []
            count = 0
            while start < len(reqs) and (not part or count + len(reqs[start].texts) <= max_inputs):
                part.append(reqs[start])
                count += len(reqs[start].texts)
                start += 1
            await _answer_group(service, caller, batch_id, kind, model, opts, part, chunk)
    return chunk


def _custom_id(raw: str) -> Any:
    try:
        obj = json.loads(raw)
        return obj.get("custom_id") if isinstance(obj, dict) else None
    except ValueError:
        return None


async def _answer_group(service: InferenceService, caller: Caller, batch_id: str, kind: str, model: str,
                        opts: tuple[Any, ...], reqs: list[_Request], chunk: Chunk) -> None:
    texts = [t for r in reqs for t in r.texts]
    usage = service.usage
    assert isinstance(usage, DeferredUsage)
    before = usage.tokens.get(model, 0)
    try:
        if kind == "embed":
            answer = await service.embed(caller, model, texts, dimensions=opts[0])
        else:
            answer = await service.classify(caller, model, texts, top_k=opts[0], field="input",
                                            deployment_only=kind == "predict")
    except AiaasError as exc:
        if len(reqs) > 1:  # one line's input may be at fault: answer each on its own
            for r in reqs:
                await _answer_group(service, caller, batch_id, kind, model, opts, [r], chunk)
            return
        r = reqs[0]
        chunk.err.append(_line(batch_id, r.n, r.custom_id, exc.status, _error_body(exc),
                               {"code": exc.code, "message": exc.message}))
        return
    tokens = usage.tokens.get(model, 0) - before
    lines_tokens = chunk.usage.setdefault(answer.model_id, [0, 0])
    lines_tokens[0] += len(reqs)
    lines_tokens[1] += tokens
    i = 0
    chars = max(1, sum(map(len, texts)))
    for r in reqs:
        results = answer.results[i:i + len(r.texts)]
        i += len(r.texts)
        # Each line's usage is its share of the group's tokens, by characters (the group was one call).
        share = round(tokens * sum(map(len, r.texts)) / chars)
        chunk.out.append(_line(batch_id, r.n, r.custom_id, 200, _body(kind, model, answer.model_id, results,
                                                                       share, opts), None))


def _body(kind: str, name: str, model_id: str, results: Any, tokens: int, opts: tuple[Any, ...]) -> dict[str, Any]:
    """The body the online route answers (api/routes/inference.py, deployments.py predict)."""
    if kind == "embed":
        return embeddings_public(model_id, results, tokens, base64_out=opts[1] == "base64")
    if kind == "predict":
        return predictions_public(name, model_id, results, tokens)
    return classifications_public(model_id, results, tokens)


async def score_rows(service: InferenceService, caller: Caller, model: str, texts: Sequence[Any], *,
                     top_k: int, deployment_only: bool, max_inputs: int) -> tuple[list[list[Any]], Chunk]:
    """CSV scoring: for each text, [label, score, label_1, score_1, ..., error]."""
    chunk = Chunk()
    cells: list[list[Any]] = []
    empty = [None] * (2 + 2 * top_k)
    usage = service.usage
    assert isinstance(usage, DeferredUsage)
    for start in range(0, len(texts), max_inputs):
        part = [("" if t is None else str(t)) for t in texts[start:start + max_inputs]]
        before = sum(usage.tokens.values())
        try:
            answer = await service.classify(caller, model, part, top_k=top_k, deployment_only=deployment_only)
        except AiaasError as exc:
            if len(part) > 1:
                for t in part:
                    sub, subchunk = await score_rows(service, caller, model, [t], top_k=top_k,
                                                     deployment_only=deployment_only, max_inputs=1)
                    cells.extend(sub)
                    for m, (n, tok) in subchunk.usage.items():
                        acc = chunk.usage.setdefault(m, [0, 0])
                        acc[0] += n
                        acc[1] += tok
                continue
            cells.append([*empty, f"{exc.code}: {exc.message}"])
            continue
        acc = chunk.usage.setdefault(answer.model_id, [0, 0])
        acc[0] += len(part)
        acc[1] += sum(usage.tokens.values()) - before
        for r in answer.results:
            ranked = [x for s in r.get("scores", [])[:top_k] for x in (s["label"], s["score"])]
            ranked += [None] * (2 * top_k - len(ranked))
            label = r.get("label", ";".join(r.get("labels", [])))
            cells.append([label, r.get("score", r.get("value")), *ranked, None])
    return cells, chunk


def score_header(columns: Sequence[str], top_k: int) -> list[str]:
    extra = ["label", "score", *[f"{w}_{i}" for i in range(1, top_k + 1) for w in ("label", "score")], "error"]
    return [*columns, *extra]
