"""The policy table: every route of the API and the scope it needs.

`None` means public (health, metrics, docs). The API looks every request up here; a
test enumerates the OpenAPI spec and fails when a route is missing or stale.
"""

from __future__ import annotations

PUBLIC = None

POLICY: dict[tuple[str, str], str | None] = {
    # Health, metrics and docs.
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    # Organisations and keys.
    ("GET", "/v1/organizations/me"): "read",
    ("POST", "/v1/api_keys"): "admin",
    ("GET", "/v1/api_keys"): "admin",
    ("DELETE", "/v1/api_keys/{key_id}"): "admin",
    # Files.
    ("POST", "/v1/files"): "write",
    ("GET", "/v1/files"): "read",
    ("GET", "/v1/files/{file_id}"): "read",
    ("GET", "/v1/files/{file_id}/content"): "read",
    ("DELETE", "/v1/files/{file_id}"): "write",
    # Fine-tuning.
    ("POST", "/v1/fine_tuning/jobs"): "write",
    ("GET", "/v1/fine_tuning/jobs"): "read",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}"): "read",
    ("POST", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/cancel"): "write",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/events"): "read",
    ("GET", "/v1/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"): "read",
    # Batches (issue 16).
    ("POST", "/v1/batches"): "infer",
    ("GET", "/v1/batches"): "read",
    ("GET", "/v1/batches/{batch_id}"): "read",
    ("POST", "/v1/batches/{batch_id}/cancel"): "infer",
    # Models.
    ("GET", "/v1/models"): "read",
    ("GET", "/v1/models/{model}"): "read",
    ("DELETE", "/v1/models/{model}"): "write",
    # Deployments and native inference.
    ("POST", "/v1/deployments"): "write",
    ("GET", "/v1/deployments"): "read",
    ("GET", "/v1/deployments/{name}"): "read",
    ("DELETE", "/v1/deployments/{name}"): "write",
    ("POST", "/v1/deployments/{name}/predict"): "infer",
    # OpenAI-style inference.
    ("POST", "/v1/embeddings"): "infer",
    ("POST", "/v1/classifications"): "infer",
    # Open Inference Protocol v2.
    ("GET", "/v2"): PUBLIC,
    ("GET", "/v2/health/live"): PUBLIC,
    ("GET", "/v2/health/ready"): PUBLIC,
    ("GET", "/v2/models"): "infer",
    ("GET", "/v2/models/{model_name}"): "infer",
    ("GET", "/v2/models/{model_name}/ready"): "infer",
    ("POST", "/v2/models/{model_name}/infer"): "infer",
    ("GET", "/v2/models/{model_name}/versions/{model_version}"): "infer",
    ("GET", "/v2/models/{model_name}/versions/{model_version}/ready"): "infer",
    ("POST", "/v2/models/{model_name}/versions/{model_version}/infer"): "infer",
    # Registered models, versions, aliases; deployment changes and revisions (issue 14).
    ("GET", "/v1/registered_models"): "read",
    ("GET", "/v1/registered_models/{registered_model}"): "read",
    ("GET", "/v1/registered_models/{registered_model}/versions"): "read",
    ("POST", "/v1/registered_models/{registered_model}/versions"): "write",
    ("GET", "/v1/registered_models/{registered_model}/versions/{version}"): "read",
    ("DELETE", "/v1/registered_models/{registered_model}/versions/{version}"): "write",
    ("PUT", "/v1/registered_models/{registered_model}/aliases/{alias}"): "write",
    ("DELETE", "/v1/registered_models/{registered_model}/aliases/{alias}"): "write",
    ("PATCH", "/v1/deployments/{name}"): "write",
    ("POST", "/v1/deployments/{name}/rollback"): "write",
    ("GET", "/v1/deployments/{name}/revisions"): "read",
    ("GET", "/v1/deployments/{name}/shadow"): "read",
    ("GET", "/v1/models/{model}/content"): "read",
    # Metering and audit.
    ("GET", "/v1/usage"): "read",
    ("GET", "/v1/audit_logs"): "admin",
    # Monitoring and webhooks (issue #16).
    ("GET", "/v1/deployments/{name}/monitoring"): "read",
    ("POST", "/v1/deployments/{name}/request_logs/export"): "write",
    ("POST", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}"): "admin",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "admin",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "admin",
}


def required_scope(method: str, path_template: str) -> str | None:
    """The scope a route needs. A route missing from the table is refused (fail closed)."""
    try:
        return POLICY[(method.upper(), path_template)]
    except KeyError:
        raise LookupError(f"route {method} {path_template} is not in the policy table") from None
