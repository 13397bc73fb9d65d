"""Typed results: what each SDK method returns, as pydantic models.

Where aiaas/protocol has the wire model (files, API keys, organisations, deletions), the result is that
model; the others are declared here with the fields the server sends. Every result keeps fields a newer
server adds (`extra="allow"`), and reads like a dict too (`job["id"]`, `job.get("error")`), so code
written against the dict-returning SDK keeps working for one release; prefer attributes (`job.id`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict

from aiaas.protocol.common import Deleted as _Deleted
from aiaas.protocol.files import FilePublic
from aiaas.protocol.keys import ApiKeyCreated as _ApiKeyCreated
from aiaas.protocol.keys import ApiKeyPublic, OrganizationPublic

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class Result(BaseModel):
    """Base of every SDK result: attributes, plus read-only dict-style access (deprecated, one release)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    # Item access follows the body the server sent, as the dicts did: a field it left out (a regression
    # result's `score`) is missing (KeyError, `get` -> default, `in` -> False) though the attribute is None.

    def __getitem__(self, key: str) -> Any:
        if key in self.model_fields_set:
            return getattr(self, key)
        extra = self.__pydantic_extra__ or {}
        if key in extra:
            return extra[key]
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (key in self.model_fields_set or key in (self.__pydantic_extra__ or {}))

    def keys(self) -> list[str]:
        return [*(k for k in type(self).model_fields if k in self.model_fields_set), *(self.__pydantic_extra__ or {})]

    def to_dict(self) -> dict[str, Any]:
        """The result as the server sent it (JSON-compatible)."""
        return self.model_dump(mode="json", by_alias=True)


# ---- Resources with a wire model in aiaas/protocol ----------------------------------------------


class Organization(Result, OrganizationPublic):
    pass


class ApiKey(Result, ApiKeyPublic):
    pass


class ApiKeyCreated(Result, _ApiKeyCreated):
    pass


class File(Result, FilePublic):
    pass


class Deleted(Result, _Deleted):
    pass


# ---- Declared here ------------------------------------------------------------------------------


class FineTuningJob(Result):
    id: str
    object: str = "fine_tuning.job"
    created_at: int
    status: str
    model: str
    training_file: str
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    error: dict[str, Any] | None = None
    hyperparameters: dict[str, Any] | None = None
    organization_id: str | None = None
    result_files: list[str] = []
    seed: int | None = None
    trained_tokens: int | None = None
    estimated_finish: int | None = None
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    task: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    family: str | None = None
    time_budget_s: float | None = None
    registered_model: str | None = None  # the registered model its model becomes a version of
    data_report: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class FineTuningJobEvent(Result):
    id: str | None  # None only on a stream's final `server_shutdown` event (data.after says where to resume)
    object: str = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str = "message"
    data: dict[str, Any] | None = None


class FineTuningJobCheckpoint(Result):
    id: str
    object: str = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any] = {}
    step_number: int


class Model(Result):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str
    task: str | None = None
    family: str | None = None
    base_model: str | None = None
    fine_tuning_job: str | None = None
    labels: list[str] | None = None
    card: dict[str, Any] | None = None
    details: dict[str, Any] | None = None


class ModelList(Result):
    object: str = "list"
    data: list[Model]

    def __iter__(self) -> Iterator[Model]:  # type: ignore[override]  # iterate the models, not the fields
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class Deployment(Result):
    id: str
    object: str = "deployment"
    name: str
    model: str
    min_replicas: int = 0
    max_replicas: int | None = None
    created_at: int
    updated_at: int | None = None
    request_logging: dict[str, Any] | None = None  # {"sample_rate": …, "retention_days": …}


class Ranked(Result):
    label: str
    score: float


class Classification(Result):
    """One input's answer: `label` + `score` (single label), `labels` (multi-label) or `value` (regression);
    `scores` ranks the labels (top_k of them when asked)."""

    index: int
    object: str | None = None
    label: str | None = None
    labels: list[str] | None = None
    score: float | None = None
    value: float | None = None
    scores: list[Ranked] | None = None


class TokenUsage(Result):
    prompt_tokens: int
    total_tokens: int


class Predictions(Result):
    """The answer of a deployment's predict route and of /v1/classifications: one entry per input, in order."""

    object: str = "list"
    model: str
    deployment: str | None = None
    data: list[Classification]
    usage: TokenUsage | None = None

    def __iter__(self) -> Iterator[Classification]:  # type: ignore[override]  # the entries, not the fields
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def labels(self) -> list[str | list[str] | float | None]:
        """The top answer per input: a label, a label set (multi-label) or a value (regression)."""
        out: list[str | list[str] | float | None] = []
        for row in self.data:
            out.append(row.label if row.label is not None else row.labels if row.labels is not None else row.value)
        return out


class Embedding(Result):
    object: str = "embedding"
    index: int
    embedding: list[float] | str


class Embeddings(Result):
    object: str = "list"
    model: str
    data: list[Embedding]
    usage: TokenUsage | None = None


class Cost(Result):
    inference: float
    training: float
    total: float


class UsageBucket(Result):
    requests: int
    input_tokens: int
    trained_tokens: int
    cpu_seconds: float
    cost: Cost
    day: str | None = None
    model: str | None = None
    key_id: str | None = None
    key_name: str | None = None


class UsageReport(Result):
    object: str = "usage"
    start: int
    end: int
    group_by: str
    prices: dict[str, Any]
    data: list[UsageBucket]
    total: UsageBucket


class AuditLog(Result):
    id: str
    object: str = "audit_log"
    created_at: int
    action: str
    actor: dict[str, Any] | None = None
    target: dict[str, Any] | None = None
    request_id: str | None = None
    client_ip: str | None = None
    details: dict[str, Any] = {}


# ---- Open Inference Protocol v2 (JSON) ----------------------------------------------------------


class InferTensor(Result):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferResponse(Result):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[InferTensor]
    parameters: dict[str, Any] | None = None

    def output(self, name: str) -> InferTensor:
        for tensor in self.outputs:
            if tensor.name == name:
                return tensor
        raise KeyError(f"no output named {name!r}; outputs: {[t.name for t in self.outputs]}")

    @property
    def labels(self) -> list[str]:
        """The `label` output, one per input."""
        return [str(v) for v in self.output("label").data]

    @property
    def scores(self) -> list[list[float]]:
        """The `scores` output as rows ([N, C], FP32 sent flat in row-major order)."""
        tensor = self.output("scores")
        n, c = tensor.shape
        flat = [float(v) for v in tensor.data]
        return [flat[i * c:(i + 1) * c] for i in range(n)]

