"""What each /v1 route answers, as schemas for the OpenAPI document (the routes build these shapes as dicts).

The routes declare them (aiaas/api/openapi.py) without validating their answers against them at run time;
tests/api/test_openapi_truth.py checks every answer the suite provokes has exactly the documented fields,
and the fuzz test (tests/hostile/test_openapi_fuzz.py) checks every answer it gets conforms.
Examples shown in /docs are the `examples` of the request models and of these.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from aiaas.protocol.batches import BatchStatus
from aiaas.protocol.integrations import MlflowIntegration

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """A list: one page of items, oldest or newest first as the route says; `after=<last_id>` pages on."""

    object: Literal["list"] = "list"
    data: list[T]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


# ---- fine-tuning ---------------------------------------------------------------------------------


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any] | None = None
    model: str
    organization_id: str
    result_files: list[str] = []
    seed: int | None = None
    status: Literal["validating_files", "queued", "running", "succeeded", "failed", "cancelled"]
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[MlflowIntegration] = []
    metadata: dict[str, str] | None = None
    user_provided_suffix: str | None = None
    method: dict[str, Any]
    task: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    preprocessing: dict[str, Any] | None = None
    family: str = Field(description="transformer, tfidf-linear or auto (hyperparameters.family: what auto kept)")
    time_budget_s: float | None = None
    data_report: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    registered_model: str | None = Field(None, description="the registered model a success adds a version to")


class JobEvent(BaseModel):
    id: str | None = Field(description="None only on a stream's final server_shutdown event")
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"] = "message"
    data: dict[str, Any] | None = None


class JobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any]
    step_number: int


# ---- models, registered models and versions -------------------------------------------------------


class ModelPublic(BaseModel):
    """A fine-tuned model (`ft:…`), a base model or a model family (these two: owned_by `aiaas`)."""

    model_config = ConfigDict(protected_namespaces=())

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    task: str | None
    family: str
    base_model: str | None = None
    fine_tuning_job: str | None = None
    labels: list[str] | None = None
    card: dict[str, Any] | None = None
    details: dict[str, Any] | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelPublic]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class ModelDeleted(BaseModel):
    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class RegisteredModel(BaseModel):
    id: str
    object: Literal["registered_model"] = "registered_model"
    name: str
    latest_version: int
    aliases: dict[str, int]
    created_at: int
    updated_at: int | None = None


class PreviousVersion(BaseModel):
    version: int
    metrics: dict[str, Any] | None = None


class ModelVersion(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    id: str
    object: Literal["model_version"] = "model_version"
    registered_model: str
    version: int
    name: str
    model: str
    job_id: str | None = None
    aliases: list[str]
    lineage: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    previous: PreviousVersion | None = None
    created_at: int


class ModelVersionDeleted(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    object: Literal["model_version"] = "model_version"
    name: str
    model: str
    deleted: bool = True


class AliasSetResult(BaseModel):
    object: Literal["model.alias"] = "model.alias"
    registered_model: str
    alias: str
    version: int
    previous_version: int | None = None
    deployments: list[str] = Field(description="deployments following the alias, switched to the new version")


class AliasDeleted(BaseModel):
    object: Literal["model.alias"] = "model.alias"
    registered_model: str
    alias: str
    deleted: bool = True


# ---- deployments and inference ---------------------------------------------------------------------


class RequestLogging(BaseModel):
    sample_rate: float
    retention_days: int


class DeploymentPublic(BaseModel):
    id: str
    object: Literal["deployment"] = "deployment"
    name: str
    model: str
    min_replicas: int
    max_replicas: int | None = Field(None, description="bound on the inference threads (or Ray replicas) it may hold")
    created_at: int
    updated_at: int | None = None
    traffic: list[dict[str, Any]] | None = None
    sticky_header: str | None = None
    shadow: dict[str, Any] | None = None
    revision: int | None = None
    request_logging: RequestLogging | None = None


class DeploymentRevision(BaseModel):
    id: str
    object: Literal["deployment.revision"] = "deployment.revision"
    revision: int
    spec: dict[str, Any]
    reason: str | None = None
    actor: str | None = None
    created_at: int


class DeploymentShadow(BaseModel):
    object: Literal["deployment.shadow"] = "deployment.shadow"
    deployment: str
    shadow: dict[str, Any] | None = None
    stats: dict[str, Any] | None = Field(description="what this server process mirrored and compared; None before")


class DeploymentMonitoring(BaseModel):
    object: Literal["deployment.monitoring"] = "deployment.monitoring"
    deployment: str
    model: str
    psi_threshold: float
    min_samples: int
    windows: dict[str, Any]
    reference: dict[str, Any] | None = None
    drift: list[str]
    drifted: bool


class Ranked(BaseModel):
    label: str
    score: float


class Classification(BaseModel):
    """One input's answer: label + score (single label), labels (multi-label) or value (regression)."""

    index: int
    object: Literal["classification"] | None = None
    label: str | None = None
    labels: list[str] | None = None
    score: float | None = None
    value: float | None = None
    scores: list[Ranked] | None = None


class Predictions(BaseModel):
    object: Literal["list"] = "list"
    model: str
    deployment: str | None = None
    data: list[Classification]
    usage: Usage


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32 (encoding_format)")


class Embeddings(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: Usage


# ---- usage, audit, webhooks, batches, health -------------------------------------------------------


class UsageReport(BaseModel):
    object: Literal["usage"] = "usage"
    start: int
    end: int
    group_by: Literal["day", "model", "key"]
    prices: dict[str, Any]
    data: list[dict[str, Any]]
    total: dict[str, Any]


class AuditRef(BaseModel):
    type: str | None
    id: str


class AuditLogPublic(BaseModel):
    id: str
    object: Literal["audit_log"] = "audit_log"
    created_at: int
    action: str
    actor: AuditRef | None = None
    target: AuditRef | None = None
    request_id: str | None = None
    client_ip: str | None = None
    details: dict[str, Any]


class WebhookEndpoint(BaseModel):
    id: str
    object: Literal["webhook_endpoint"] = "webhook_endpoint"
    url: str
    events: list[str]
    description: str | None = None
    enabled: bool
    created_at: int


class WebhookCreated(WebhookEndpoint):
    secret: str = Field(description="the signing secret (whsec_…), shown this once")


class WebhookDelivery(BaseModel):
    id: str
    object: Literal["webhook_delivery"] = "webhook_delivery"
    webhook_id: str
    event_type: str
    event_id: str | None = None
    status: str
    attempts: int
    next_attempt_at: int | None = None
    attempt_log: list[dict[str, Any]]
    created_at: int
    delivered_at: int | None = None


class BatchPublic(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: dict[str, Any] | None = None
    input_file_id: str
    completion_window: str
    status: BatchStatus
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: dict[str, int]
    metadata: dict[str, str] | None = None
    options: dict[str, Any] | None = None
    progress: dict[str, int]


class Healthz(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class Readyz(BaseModel):
    status: Literal["ready", "unavailable"]
    database: str = Field(description="ok, or the error's type when the database cannot be reached")


# ---- Open Inference Protocol v2 ---------------------------------------------------------------------


class OipServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class OipLive(BaseModel):
    live: bool


class OipReady(BaseModel):
    ready: bool


class OipModelReady(BaseModel):
    name: str
    ready: bool


class OipModelEntry(BaseModel):
    name: str
    versions: list[str]
    platform: str
    model: str | None = Field(default=None, description="a deployment's model")


class OipModelIndex(BaseModel):
    models: list[OipModelEntry]


class OipTensorMeta(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class OipModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[OipTensorMeta]
    outputs: list[OipTensorMeta]
    parameters: dict[str, Any]


class OipTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any] | None = Field(default=None, description="absent when the tensor is sent as binary data")
    parameters: dict[str, Any] | None = None


class OipInferResponse(BaseModel):
    """JSON; with the binary extension, this header then raw tensors (application/octet-stream,
    Inference-Header-Content-Length giving the header's length)."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[OipTensor]
    parameters: dict[str, Any] | None = None


# ---- what routes declare beside their schema (aiaas/api/openapi.py turns codes into statuses) ---------

SERVE_ERRORS = ("not_found", "invalid_request", "conflict", "insufficient_memory", "quota_exceeded",
                "model_not_ready", "unavailable")
DEPLOY_ERRORS = ("not_found", "conflict", "invalid_request", "quota_exceeded", "insufficient_memory")
JOB_ERRORS = ("not_found", "invalid_request", "invalid_file", "base_model_unavailable", "quota_exceeded",
              "unsupported_integration", "integration_not_allowed")
UPLOAD_ERRORS = ("invalid_file", "pii_detected", "too_many_rows", "too_many_columns", "cell_too_large",
                 "row_too_large", "file_too_large_decoded", "unsupported_file", "quota_exceeded", "upload_capacity")
BATCH_ERRORS = ("not_found", "invalid_request", "invalid_file", "conflict", "quota_exceeded")

OCTETS: dict[str, Any] = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
ARCHIVES: dict[str, Any] = {"application/gzip": {"schema": {"type": "string", "format": "binary"}},
                            "application/zip": {"schema": {"type": "string", "format": "binary"}}}
PROMETHEUS: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
# Each server-sent event of the stream (validators such as schemathesis check every event against this).
EVENT_STREAM: dict[str, Any] = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "description": "with stream=true: events oldest first, each `data: <event JSON>` (a fine_tuning.job.event), "
                   "until `data: [DONE]` (or an `event: shutdown` when the server stops)",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}}}}}
OIP_BINARY: dict[str, Any] = {"application/octet-stream": {"schema": {
    "type": "string", "format": "binary", "description": "the binary tensor extension: the JSON header "
                                                         "(Inference-Header-Content-Length bytes), then the tensors"}}}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": Readyz, "description": "The database is not reachable."}}


def oip_not_ready(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    return {503: {"model": model, "description": "Not ready (a model scaled to zero loads at its next request)."}}

# Request examples for bodies whose model lives with its route (openapi_extra of the route's decorator).
CLASSIFY_EXAMPLE: dict[str, Any] = {"requestBody": {"content": {"application/json": {"examples": {"texts": {
    "summary": "two texts, the top two labels of each",
    "value": {"model": "support", "input": ["where is my parcel?", "I want my money back"], "top_k": 2}}}}}}}
