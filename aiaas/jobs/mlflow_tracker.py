"""The MLflow sink of a job's tracking (aiaas/jobs/tracking.py): one MLflow run per job attempt.

Needs the `mlflow` extra (`pip install 'aiaas[mlflow]'`: mlflow-skinny, the client without the server);
imported in the tracker's thread, so its import time (seconds) is never the training loop's. The run is
tagged with the job id and attempt; metrics go in batches (`train/loss` per logged step,
`validation/accuracy` per epoch), parameters once each, the model card as `model_card.json`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

EXTRA_MODULES = ("mlflow",)


class MlflowSink:
    name = "MLflow"

    def __init__(self, options: dict[str, Any], *, job_id: str, attempt: int | None) -> None:
        self.tracking_uri = str(options["tracking_uri"])
        self.experiment_name = str(options.get("experiment_name") or "aiaas")
        self.run_name = options.get("run_name") or f"{job_id}-attempt-{attempt or 1}"
        self.tags = {**(options.get("tags") or {}), "aiaas.job_id": job_id, "aiaas.attempt": str(attempt or 1)}
        self.client: Any = None
        self.run_id: str | None = None
        self.logged: dict[str, str] = {}

    def open(self, params: dict[str, str]) -> None:
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps its file store only behind this switch; the API allowed this path
            # (AIAAS_MLFLOW_FILE_ROOT), and the switch changes nothing for other stores.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(self.experiment_name)
            except Exception:  # noqa: BLE001 - created meanwhile by another job: use that one
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        run = self.client.create_run(experiment_id, run_name=self.run_name, tags=self.tags)
        self.run_id = run.info.run_id
        self.log_params(params)

    def log_metrics(self, points: list[tuple[str, float, int]]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, stamp, step) for k, v, step in points])

    def log_params(self, params: dict[str, str]) -> None:
        """Each parameter once: MLflow refuses a second, different value (a resumed run's new thread count)."""
        from mlflow.entities import Param

        new = {k: v for k, v in params.items() if k not in self.logged}
        if new:
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in new.items()])
            self.logged.update(new)

    def log_text(self, artifact_path: str, text: str) -> None:
        self.client.log_text(self.run_id, text, artifact_path)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def card_text(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2, sort_keys=True, default=str)
