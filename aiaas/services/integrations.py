"""Where a job may send its tracking data: a job's MLflow tracking URI checked against the operator's settings.

file:// stores only inside AIAAS_MLFLOW_FILE_ROOT (a tenant must not make a worker write anywhere on its
disk); http(s) servers on public addresses only, unless AIAAS_MLFLOW_ALLOW_PRIVATE (as webhooks); no
credentials in the URI (it is stored with the job and shown back: a worker's MLFLOW_TRACKING_TOKEN or
MLFLOW_TRACKING_USERNAME/PASSWORD environment carries them instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from aiaas.core.errors import AiaasError, InvalidRequest
from aiaas.core.settings import Settings
from aiaas.protocol.integrations import MAX_INTEGRATIONS, SUPPORTED_TYPES, MlflowIntegration
from aiaas.services.webhooks import check_url


def check_integrations(raw: list[Any] | None, settings: Settings) -> list[dict[str, Any]]:
    """The job's integrations as stored with it; raises naming the item that is refused and why."""
    out = []
    for i, item in enumerate(parse_integrations(raw)):
        param = f"integrations[{i}].mlflow.tracking_uri"
        item.mlflow.tracking_uri = _check_uri(item.mlflow.tracking_uri, settings, param)
        out.append(item.model_dump())
    return out


def parse_integrations(raw: list[Any] | None) -> list[MlflowIntegration]:
    """The job's integrations, checked; raises naming the item and field that is wrong."""
    if not raw:
        return []
    if len(raw) > MAX_INTEGRATIONS:
        raise AiaasError(f"At most {MAX_INTEGRATIONS} integrations per job; this one lists {len(raw)}.",
                         code="validation_error", param="integrations")
    out = []
    for i, item in enumerate(raw):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind not in SUPPORTED_TYPES:
            shown = f"'{kind}'" if isinstance(kind, str) else "no type"
            raise AiaasError(
                f"integrations[{i}] has {shown}: this server supports type 'mlflow' only "
                "(`{\"type\": \"mlflow\", \"mlflow\": {\"tracking_uri\": ...}}`); remove the item or use MLflow.",
                code="unsupported_integration", param=f"integrations[{i}].type")
        try:
            out.append(MlflowIntegration.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first.get("loc", ()))
            raise AiaasError(f"integrations[{i}].{field}: {first.get('msg', 'invalid')}.",
                             code="validation_error", param=f"integrations[{i}].{field}") from exc
    return out


def _check_uri(uri: str, settings: Settings, param: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return _check_file_uri(parts.netloc, unquote(parts.path), settings, param)
    if parts.scheme in ("http", "https"):
        if parts.username or parts.password:
            raise AiaasError("The tracking URI must not carry credentials (it is stored and shown with the "
                             "job); the worker's MLFLOW_TRACKING_TOKEN environment carries them.",
                             code="integration_not_allowed", param=param)
        try:
            return check_url(uri, allow_private=settings.mlflow_allow_private)
        except InvalidRequest as exc:
            message = exc.message.replace("'url'", "The tracking URI").replace(
                "webhooks go to public hosts only (an operator may allow private ones: AIAAS_WEBHOOK_ALLOW_PRIVATE)",
                "tracking servers must be public hosts (an operator may allow private ones: "
                "AIAAS_MLFLOW_ALLOW_PRIVATE)")
            raise AiaasError(message, code="integration_not_allowed", param=param) from exc
    raise AiaasError(f"The tracking URI's scheme '{parts.scheme}' is not supported: use http://, https:// "
                     "or file:// (a local store, where the operator allows one).",
                     code="integration_not_allowed", param=param)


def _check_file_uri(host: str, path: str, settings: Settings, param: str) -> str:
    root = settings.mlflow_file_root
    if root is None:
        raise AiaasError("file:// tracking URIs are not allowed on this server (the operator enables them "
                         "under a directory with AIAAS_MLFLOW_FILE_ROOT); use an http(s) tracking server.",
                         code="integration_not_allowed", param=param)
    if host not in ("", "localhost") or not path.startswith("/"):
        raise AiaasError("A file tracking URI must be absolute: file:///path/to/store.",
                         code="integration_not_allowed", param=param)
    resolved, base = Path(path).resolve(), root.resolve()
    if resolved != base and base not in resolved.parents:
        raise AiaasError(f"The tracking store must be inside {base} (AIAAS_MLFLOW_FILE_ROOT); {path} is not.",
                         code="integration_not_allowed", param=param)
    return f"file://{resolved}"
