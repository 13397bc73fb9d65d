"""Resource methods, written once as request builders.

Each method returns `self._c.call(request)` turned into a typed result (aiaas/sdk/types.py): the
result for the sync client, an awaitable of it for the async one. So `client.api_keys.create(...)` and
`await aclient.api_keys.create(...)` share one implementation. List methods return the client's page
iterator (sync or async) of typed items. Return annotations name the sync client's types; the async
client's methods return awaitables (and async iterators) of the same types.
"""

from __future__ import annotations

import builtins  # `list` below is also a method name of the resource classes
import inspect
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from aiaas.sdk import types as t

T = TypeVar("T", bound=BaseModel)


@dataclass
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    files: Any = None
    data: Any = None
    raw: bool = False
    idempotent: bool = True
    idempotency_key: str | None = None  # a POST's key; None: the client draws one per call


class Caller(Protocol):
    """What a resource needs of its client: sync results, or awaitables for the async client."""

    def call(self, req: Request) -> Any: ...
    def iterate(self, path: str, *, limit: int = 20, **params: Any) -> Any: ...
    def stream_events(self, req: Request) -> Any: ...


def clean(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def typed(result: Any, cls: type[T]) -> T:
    """The decoded body as `cls`: at once for the sync client, once awaited for the async one."""
    if inspect.isawaitable(result):
        async def later() -> T:
            return cls.model_validate(await result)
        return later()  # type: ignore[return-value]  # the async client's awaitable of T
    return cls.model_validate(result)


def typed_items(items: Any, cls: type[T]) -> Iterator[T]:
    """A page iterator (or event stream) of `cls`: sync or async, as the client's iterator is."""
    if hasattr(items, "__aiter__"):
        async def each() -> AsyncIterator[T]:
            async for item in items:
                yield cls.model_validate(item)
        return each()  # type: ignore[return-value]  # the async client's async iterator of T

    def each_sync() -> Iterator[T]:
        for item in items:
            yield cls.model_validate(item)
    return each_sync()


class Resource:
    def __init__(self, caller: Caller) -> None:
        self._c = caller


class Organizations(Resource):
    def me(self) -> t.Organization:
        return typed(self._c.call(Request("GET", "/v1/organizations/me")), t.Organization)


class ApiKeys(Resource):
    def create(self, name: str, *, scopes: list[str] | None = None, expires_in_seconds: int | None = None) -> t.ApiKeyCreated:
        body = clean({"name": name, "scopes": scopes, "expires_in_seconds": expires_in_seconds})
        return typed(self._c.call(Request("POST", "/v1/api_keys", json=body, idempotent=False)), t.ApiKeyCreated)

    def list(self, *, limit: int = 20) -> Iterator[t.ApiKey]:
        return typed_items(self._c.iterate("/v1/api_keys", limit=limit), t.ApiKey)

    def revoke(self, key_id: str) -> t.ApiKey:
        return typed(self._c.call(Request("DELETE", f"/v1/api_keys/{key_id}")), t.ApiKey)


class Files(Resource):
    def create(self, file: Any, *, purpose: str = "fine-tune", filename: str | None = None,
               pii_policy: str | None = None) -> t.File:
        """Upload a path or a binary file object.

        `pii_policy`: "allow" (the server's default) stores personal data found in the file as sent,
        "redact" stores the file with each value replaced by a placeholder such as [EMAIL], "reject"
        refuses it (BadRequestError, code "pii_detected", naming kinds, lines and columns). The scan's
        report is in the returned file's `summary["pii"]`.
        """
        from pathlib import Path

        if isinstance(file, str | Path):
            path = Path(file)
            content: Any = path.read_bytes()
            filename = filename or path.name
        else:
            content = file.read()
            filename = filename or getattr(file, "name", "upload")
        form = clean({"purpose": purpose, "pii_policy": pii_policy})
        return typed(self._c.call(Request("POST", "/v1/files", files={"file": (str(filename), content)},
                                          data=form, idempotent=False)), t.File)

    def list(self, *, limit: int = 100, purpose: str | None = None) -> Iterator[t.File]:
        return typed_items(self._c.iterate("/v1/files", limit=limit, **clean({"purpose": purpose})), t.File)

    def retrieve(self, file_id: str) -> t.File:
        return typed(self._c.call(Request("GET", f"/v1/files/{file_id}")), t.File)

    def content(self, file_id: str) -> bytes:
        result: bytes = self._c.call(Request("GET", f"/v1/files/{file_id}/content", raw=True))
        return result

    def delete(self, file_id: str) -> t.Deleted:
        return typed(self._c.call(Request("DELETE", f"/v1/files/{file_id}")), t.Deleted)


class FineTuningJobs(Resource):
    def create(self, *, model: str, training_file: str, **fields: Any) -> t.FineTuningJob:
        """`model`: a base model id, or a family: "tfidf-linear", "auto", "auto:<base model>"
        (auto also takes `time_budget_s`). Other fields: the wire's extensions (task, text_column, ...,
        `registered_model`: the registered model its model becomes a version of; default from `suffix`)."""
        body = clean({"model": model, "training_file": training_file, **fields})
        return typed(self._c.call(Request("POST", "/v1/fine_tuning/jobs", json=body, idempotent=False)),
                     t.FineTuningJob)

    def list(self, *, limit: int = 20) -> Iterator[t.FineTuningJob]:
        return typed_items(self._c.iterate("/v1/fine_tuning/jobs", limit=limit), t.FineTuningJob)

    def retrieve(self, job_id: str) -> t.FineTuningJob:
        return typed(self._c.call(Request("GET", f"/v1/fine_tuning/jobs/{job_id}")), t.FineTuningJob)

    def cancel(self, job_id: str) -> t.FineTuningJob:
        return typed(self._c.call(Request("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel")), t.FineTuningJob)

    def list_events(self, job_id: str, *, limit: int = 100) -> Iterator[t.FineTuningJobEvent]:
        """Newest first (the OpenAI order)."""
        return typed_items(self._c.iterate(f"/v1/fine_tuning/jobs/{job_id}/events", limit=limit),
                           t.FineTuningJobEvent)

    def stream_events(self, job_id: str, *, after: str | None = None) -> Iterator[t.FineTuningJobEvent]:
        """Server-sent events, oldest first, until the job ends."""
        return typed_items(self._c.stream_events(
            Request("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params=clean({"stream": "true", "after": after}))
        ), t.FineTuningJobEvent)

    def list_checkpoints(self, job_id: str, *, limit: int = 10) -> Iterator[t.FineTuningJobCheckpoint]:
        return typed_items(self._c.iterate(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", limit=limit),
                           t.FineTuningJobCheckpoint)


class FineTuning:
    def __init__(self, caller: Caller) -> None:
        self.jobs = FineTuningJobs(caller)


class Models(Resource):
    def list(self) -> t.ModelList:
        """Base models, model families and your fine-tuned models (one page: `.data`, or iterate it)."""
        return typed(self._c.call(Request("GET", "/v1/models")), t.ModelList)

    def retrieve(self, model: str) -> t.Model:
        return typed(self._c.call(Request("GET", f"/v1/models/{model}")), t.Model)

    def delete(self, model: str) -> t.Deleted:
        return typed(self._c.call(Request("DELETE", f"/v1/models/{model}")), t.Deleted)


class Deployments(Resource):
    def create(self, name: str, *, model: str, min_replicas: int = 0, max_replicas: int | None = None) -> t.Deployment:
        """`max_replicas`: at most that many inference threads (Ray: replicas) serve it at once."""
        body = clean({"name": name, "model": model, "min_replicas": min_replicas, "max_replicas": max_replicas})
        return typed(self._c.call(Request("POST", "/v1/deployments", json=body, idempotent=False)), t.Deployment)

    def list(self, *, limit: int = 20) -> Iterator[t.Deployment]:
        return typed_items(self._c.iterate("/v1/deployments", limit=limit), t.Deployment)

    def retrieve(self, name: str) -> t.Deployment:
        return typed(self._c.call(Request("GET", f"/v1/deployments/{name}")), t.Deployment)

    def delete(self, name: str) -> t.Deleted:
        return typed(self._c.call(Request("DELETE", f"/v1/deployments/{name}")), t.Deleted)

    def predict(self, name: str, inputs: builtins.list[str] | str, *, top_k: int | None = None) -> t.Predictions:
        body = clean({"inputs": [inputs] if isinstance(inputs, str) else inputs, "top_k": top_k})
        return typed(self._c.call(Request("POST", f"/v1/deployments/{name}/predict", json=body)), t.Predictions)

    # -- sampled request logging (issue 16) -----------------------------------------------------------------
    def update_request_logging(self, name: str, *, sample_rate: float,
                               retention_days: int | None = None) -> t.Deployment:
        """Keep `sample_rate` of the deployment's requests (0 turns it off) for `retention_days` (the server's
        default, 30, when not given). The answer's `request_logging` has both."""
        body = {"request_logging": clean({"sample_rate": sample_rate, "retention_days": retention_days})}
        return typed(self._c.call(Request("PATCH", f"/v1/deployments/{name}", json=body, idempotent=False)),
                     t.Deployment)

    def export_request_logs(self, name: str) -> t.File:
        """The sampled requests kept, as a new JSONL file of purpose `fine-tune` (`text` and the answer per
        line; `client.files.content(file.id)` has its bytes). Raises BadRequestError `no_request_logs` when
        none are kept."""
        return typed(self._c.call(Request("POST", f"/v1/deployments/{name}/request_logs/export",
                                          idempotent=False)), t.File)


class Embeddings(Resource):
    def create(self, *, model: str, input: str | list[str]) -> t.Embeddings:  # noqa: A002 - the wire field's name
        return typed(self._c.call(Request("POST", "/v1/embeddings", json={"model": model, "input": input})),
                     t.Embeddings)


class Usage(Resource):
    def retrieve(self, *, start: int | None = None, end: int | None = None,
                 group_by: str = "day") -> t.UsageReport:
        """Usage and cost in [start, end) (unix seconds; default the last 30 days), by day, model or key."""
        params = clean({"start": start, "end": end, "group_by": group_by})
        return typed(self._c.call(Request("GET", "/v1/usage", params=params)), t.UsageReport)


class AuditLogs(Resource):
    def list(self, *, limit: int = 20, action: str | None = None) -> Iterator[t.AuditLog]:
        """The organisation's audit log, newest first (needs an admin key)."""
        return typed_items(self._c.iterate("/v1/audit_logs", limit=limit, **clean({"action": action})), t.AuditLog)



class Classifications(Resource):
    def create(self, *, model: str, input: str | builtins.list[str],  # noqa: A002 - the wire field's name
               top_k: int | None = None) -> t.Predictions:
        """Classify texts with a fine-tuned model or a deployment (`model`: its id or the deployment's name)."""
        body = clean({"model": model, "input": input, "top_k": top_k})
        return typed(self._c.call(Request("POST", "/v1/classifications", json=body)), t.Predictions)


class Oip(Resource):
    """The Open Inference Protocol v2 (JSON tensors) under /v2: `model` is a deployment name or a model id."""

    def infer(self, model: str, texts: builtins.list[str] | str, *, version: str | None = None,
              outputs: builtins.list[str] | None = None, request_id: str | None = None) -> t.InferResponse:
        """One `text` input (BYTES, [N]); the answer's `label` (BYTES, [N]) and `scores` (FP32, [N, C]) as
        `.labels` and `.scores`."""
        batch = [texts] if isinstance(texts, str) else texts
        body: dict[str, Any] = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(batch)],
                                            "data": batch}]}
        if outputs is not None:
            body["outputs"] = [{"name": name} for name in outputs]
        if request_id is not None:
            body["id"] = request_id
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return typed(self._c.call(Request("POST", path, json=body)), t.InferResponse)

    def ready(self, model: str) -> bool:
        """Whether the model is ready to answer (a missing model raises NotFoundError)."""
        result = self._c.call(Request("GET", f"/v2/models/{model}/ready"))
        if inspect.isawaitable(result):
            async def later() -> bool:
                return bool((await result).get("ready"))
            return later()  # type: ignore[return-value]  # the async client's awaitable
        return bool(result.get("ready"))
