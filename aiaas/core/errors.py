"""One error hierarchy with stable codes, and one table mapping codes to HTTP status.

Domain code raises these; the API turns them into responses, the SDK rebuilds them
from the response body. Nothing here knows about FastAPI.
"""

from __future__ import annotations

from typing import Any

# The one code -> HTTP status table. Every code the server can answer lives here.
HTTP_STATUS: dict[str, int] = {
    "invalid_request": 400,
    "invalid_json": 400,
    "validation_error": 400,
    "invalid_file": 400,
    "pii_detected": 400,
    # An upload over a limit on what it decodes to (aiaas/data/limits.py); the message names the setting.
    "too_many_rows": 400,
    "too_many_columns": 400,
    "cell_too_large": 400,
    "row_too_large": 400,
    "file_too_large_decoded": 400,
    "unsupported_file": 415,
    "invalid_api_key": 401,
    "missing_api_key": 401,
    "expired_api_key": 401,
    "revoked_api_key": 401,
    "insufficient_scope": 403,
    "not_found": 404,
    "method_not_allowed": 405,  # answered by the router (aiaas/api/errors.py), never raised
    "conflict": 409,
    "file_not_ready": 409,  # a job or batch names a file still being checked, or one that failed its check
    "payload_too_large": 413,
    "rate_limit_exceeded": 429,
    "quota_exceeded": 429,
    "model_not_ready": 503,
    "unavailable": 503,
    "base_model_unavailable": 400,
    "internal_error": 500,
    # Encryption lifecycle and memory bounds (issue 13).
    "unencrypted_blob": 500,
    "insufficient_memory": 409,
    # Idempotency keys and upload capacity (issue #13).
    "idempotency_key_reused": 422,
    "idempotency_key_in_progress": 409,
    "upload_capacity": 503,
    # The database stayed locked past its busy timeout (SQLite under write contention, a PostgreSQL lock,
    # deadlock or serialization failure): nothing was written; the same request may be retried as is.
    "database_busy": 503,
    "worker_crashed": 500,  # a job's error (never an HTTP answer): its worker died AIAAS_JOB_MAX_ATTEMPTS times
    # The web console (issue 15): a form posted without its session's CSRF token.
    "csrf_failed": 403,
    "monitoring_disabled": 503,  # issue #16: AIAAS_MONITORING_ENABLED=false
    # A job's `integrations` (issue #19): a type this server does not support, or a tracking URI the
    # operator does not allow; integration_unavailable is a job's error (the worker lacks the extra).
    "unsupported_integration": 400,
    "integration_not_allowed": 400,
    "integration_unavailable": 500,
    "no_request_logs": 400,  # issue #16: export of a deployment with no sampled requests kept
    # Issue 14: a registered model or alias name outside the naming rules; a checkpoint whose weights
    # were not kept (pruned during training, or the job did not succeed).
    "invalid_name": 400,
    "checkpoint_unavailable": 409,
}

# OpenAI-style "type" per status class.
ERROR_TYPE: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def status_for(code: str) -> int:
    return HTTP_STATUS.get(code, 500)


def type_for(status: int) -> str:
    return ERROR_TYPE.get(status, "server_error" if status >= 500 else "invalid_request_error")


class AiaasError(Exception):
    """Base error. `code` is stable; `message` says what to fix; `param` names the field."""

    code: str = "internal_error"  # each subclass sets its own; an instance may override it

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return status_for(self.code)

    def to_dict(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "type": type_for(self.status),
            "code": self.code,
            "param": self.param,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, param={self.param!r})"


class InvalidRequest(AiaasError):
    code = "invalid_request"


class InvalidName(InvalidRequest):
    """A registered model or alias name outside the rules (lowercase letters, digits, '-', '_', '.')."""

    code = "invalid_name"


class InvalidFile(AiaasError):
    code = "invalid_file"


class DecodedLimitExceeded(InvalidFile):
    """An upload decodes to more than a limit allows (rows, columns, cell or row size, total); the code
    says which (too_many_rows, too_many_columns, cell_too_large, row_too_large, file_too_large_decoded)."""


class PiiDetected(AiaasError):
    """An upload under PII policy 'reject' holds personal data; the message says where, never what."""

    code = "pii_detected"


class AuthenticationFailed(AiaasError):
    code = "invalid_api_key"


class PermissionDenied(AiaasError):
    code = "insufficient_scope"


class NotFound(AiaasError):
    code = "not_found"


class Conflict(AiaasError):
    code = "conflict"


class CheckpointUnavailable(Conflict):
    """A job checkpoint asked to become a model version has no weights kept to build it from."""

    code = "checkpoint_unavailable"


class FileNotReady(AiaasError):
    code = "file_not_ready"


class PayloadTooLarge(AiaasError):
    code = "payload_too_large"


class RateLimited(AiaasError):
    code = "rate_limit_exceeded"


class QuotaExceeded(AiaasError):
    code = "quota_exceeded"


class Unavailable(AiaasError):
    code = "unavailable"


class DatabaseBusy(AiaasError):
    """The database stayed locked past its busy timeout; nothing was written, so a retry is safe."""

    code = "database_busy"


class UnencryptedBlob(AiaasError):
    """A stored blob has no encryption header: refused, never read as plaintext (the operator migrates it)."""

    code = "unencrypted_blob"


class InsufficientMemory(AiaasError):
    """A pinned deployment would not fit the model memory budget next to the models already pinned."""

    code = "insufficient_memory"


class ConfigurationError(AiaasError):
    """Raised at start-up when settings are unusable (never reaches a client)."""

    code = "internal_error"


def not_found(kind: str, ident: str, *, param: str | None = None) -> NotFound:
    """The one way to say 'no such object': a foreign tenant's id answers exactly the same."""
    return NotFound(f"No {kind} with id '{ident}'.", param=param)
