"""The aiaas Python SDK: `Client` (sync) and `AsyncClient`, typed results (`aiaas.sdk.types`), typed errors
rebuilt from the server's body."""

from aiaas.sdk.client import AsyncClient, Client
from aiaas.sdk.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
)
from aiaas.sdk.types import (
    Deployment,
    File,
    FineTuningJob,
    FineTuningJobEvent,
    InferResponse,
    Model,
    Predictions,
    Result,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncClient",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Deployment",
    "File",
    "FineTuningJob",
    "FineTuningJobEvent",
    "InferResponse",
    "InternalServerError",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "Predictions",
    "RateLimitError",
    "Result",
    "ServiceUnavailableError",
]
