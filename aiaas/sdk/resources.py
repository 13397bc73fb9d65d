"""Resource methods, written once as request builders.

Each method returns `self._c.call(request)`: a result for the sync client, an awaitable
for the async one. So `client.api_keys.create(...)` and `await aclient.api_keys.create(...)`
share one implementation. List methods return the client's page iterator (sync or async).
"""

from __future__ import annotations

import builtins  # `list` below is also a method name of the resource classes
from dataclasses import dataclass
from typing import Any, Protocol


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


class Resource:
    def __init__(self, caller: Caller) -> None:
        self._c = caller


class Organizations(Resource):
    def me(self) -> Any:
        return self._c.call(Request("GET", "/v1/organizations/me"))


class ApiKeys(Resource):
    def create(self, name: str, *, scopes: list[str] | None = None, expires_in_seconds: int | None = None) -> Any:
        body = clean({"name": name, "scopes": scopes, "expires_in_seconds": expires_in_seconds})
        return self._c.call(Request("POST", "/v1/api_keys", json=body, idempotent=False))

    def list(self, *, limit: int = 20) -> Any:
        return self._c.iterate("/v1/api_keys", limit=limit)

    def revoke(self, key_id: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/api_keys/{key_id}"))


class Files(Resource):
    def create(self, file: Any, *, purpose: str = "fine-tune", filename: str | None = None,
               pii_policy: str | None = None) -> Any:
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
        return self._c.call(Request("POST", "/v1/files", files={"file": (str(filename), content)},
                                    data=form, idempotent=False))

    def list(self, *, limit: int = 100, purpose: str | None = None) -> Any:
        return self._c.iterate("/v1/files", limit=limit, **clean({"purpose": purpose}))

    def retrieve(self, file_id: str) -> Any:
        return self._c.call(Request("GET", f"/v1/files/{file_id}"))

    def content(self, file_id: str) -> Any:
        return self._c.call(Request("GET", f"/v1/files/{file_id}/content", raw=True))

    def delete(self, file_id: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/files/{file_id}"))


class FineTuningJobs(Resource):
    def create(self, *, model: str, training_file: str, **fields: Any) -> Any:
        """`model`: a base model id, or a family: "tfidf-linear", "auto", "auto:<base model>"
        (auto also takes `time_budget_s`). Other fields: the wire's extensions (task, text_column, ...)."""
        body = clean({"model": model, "training_file": training_file, **fields})
        return self._c.call(Request("POST", "/v1/fine_tuning/jobs", json=body, idempotent=False))

    def list(self, *, limit: int = 20) -> Any:
        return self._c.iterate("/v1/fine_tuning/jobs", limit=limit)

    def retrieve(self, job_id: str) -> Any:
        return self._c.call(Request("GET", f"/v1/fine_tuning/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Any:
        return self._c.call(Request("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel"))

    def list_events(self, job_id: str, *, limit: int = 100) -> Any:
        return self._c.iterate(f"/v1/fine_tuning/jobs/{job_id}/events", limit=limit)

    def stream_events(self, job_id: str, *, after: str | None = None) -> Any:
        """Server-sent events, oldest first, until the job ends (yields event dicts)."""
        return self._c.stream_events(
            Request("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params=clean({"stream": "true", "after": after}))
        )

    def list_checkpoints(self, job_id: str, *, limit: int = 10) -> Any:
        return self._c.iterate(f"/v1/fine_tuning/jobs/{job_id}/checkpoints", limit=limit)


class FineTuning:
    def __init__(self, caller: Caller) -> None:
        self.jobs = FineTuningJobs(caller)


class Models(Resource):
    def list(self) -> Any:
        return self._c.call(Request("GET", "/v1/models"))

    def retrieve(self, model: str) -> Any:
        return self._c.call(Request("GET", f"/v1/models/{model}"))

    def delete(self, model: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/models/{model}"))


class Deployments(Resource):
    def create(self, name: str, *, model: str, min_replicas: int = 0) -> Any:
        body = {"name": name, "model": model, "min_replicas": min_replicas}
        return self._c.call(Request("POST", "/v1/deployments", json=body, idempotent=False))

    def list(self, *, limit: int = 20) -> Any:
        return self._c.iterate("/v1/deployments", limit=limit)

    def retrieve(self, name: str) -> Any:
        return self._c.call(Request("GET", f"/v1/deployments/{name}"))

    def delete(self, name: str) -> Any:
        return self._c.call(Request("DELETE", f"/v1/deployments/{name}"))

    def predict(self, name: str, inputs: builtins.list[str] | str, *, top_k: int | None = None) -> Any:
        body = clean({"inputs": [inputs] if isinstance(inputs, str) else inputs, "top_k": top_k})
        return self._c.call(Request("POST", f"/v1/deployments/{name}/predict", json=body))


class Embeddings(Resource):
    def create(self, *, model: str, input: str | list[str]) -> Any:  # noqa: A002 - the wire field's name
        return self._c.call(Request("POST", "/v1/embeddings", json={"model": model, "input": input}))


class Usage(Resource):
    def retrieve(self, *, start: int | None = None, end: int | None = None, group_by: str = "day") -> Any:
        """Usage and cost in [start, end) (unix seconds; default the last 30 days), by day, model or key."""
        params = clean({"start": start, "end": end, "group_by": group_by})
        return self._c.call(Request("GET", "/v1/usage", params=params))


class AuditLogs(Resource):
    def list(self, *, limit: int = 20, action: str | None = None) -> Any:
        """The organisation's audit log, newest first (needs an admin key)."""
        return self._c.iterate("/v1/audit_logs", limit=limit, **clean({"action": action}))

