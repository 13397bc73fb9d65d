"""A fine-tuning job's `integrations`: where its metrics, parameters and model card are also sent.

The shape follows OpenAI's (`[{"type": "wandb", "wandb": {...}}]`); the one type supported is
`{"type": "mlflow", "mlflow": {"tracking_uri": ..., "experiment_name": ...}}`. Anything else is refused
with `unsupported_integration`, naming the item, rather than accepted and ignored
(aiaas/services/integrations.py checks them).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aiaas.protocol.common import StrictModel

SUPPORTED_TYPES = ("mlflow",)
MAX_INTEGRATIONS = 4


class MlflowOptions(StrictModel):
    """Where an MLflow run for the job goes: a tracking server (http/https) or a file store (file://)."""

    tracking_uri: str = Field(min_length=1, max_length=2000)
    experiment_name: str = Field(default="aiaas", min_length=1, max_length=250)
    run_name: str | None = Field(default=None, max_length=250)
    tags: dict[str, str] = Field(default_factory=dict, max_length=20)


class MlflowIntegration(StrictModel):
    type: str = "mlflow"
    mlflow: MlflowOptions


def integration_public(stored: dict[str, Any]) -> dict[str, Any]:
    """As a job shows it: the type and its options (a tracking URI's credentials, if any, never)."""
    options = dict(stored.get("mlflow") or {})
    return {"type": stored.get("type", "mlflow"), "mlflow": options}
