"""Model cards: what a model is, what it was trained on and how well it does, generated per version."""

from __future__ import annotations

from typing import Any


def build_card(
    *,
    model_id: str,
    task: str,
    labels: list[str],
    lineage: dict[str, Any],
    data_report: dict[str, Any],
    metrics: dict[str, Any],
    export: dict[str, Any] | None,
    thresholds: Any = None,
) -> dict[str, Any]:
    n_train = data_report.get("n_train")
    n_val = data_report.get("n_validation")
    headline = {k: metrics[k] for k in ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2") if k in metrics}
    summary = ", ".join(f"{k} {v:.3f}" for k, v in headline.items() if isinstance(v, int | float))
    return {
        "model_id": model_id,
        "task": task,
        "labels": labels,
        "thresholds": thresholds,
        "base_model": lineage.get("base_model"),
        "training_data": {
            "training_file": lineage.get("training_file"),
            "validation_file": lineage.get("validation_file"),
            "rows": {"train": n_train, "validation": n_val},
            "label_counts": data_report.get("label_counts"),
            "rows_dropped": data_report.get("rows_dropped"),
            "pii": data_report.get("pii"),
        },
        "preprocessing": lineage.get("cleaning"),
        "hyperparameters": lineage.get("hyperparameters"),
        "metrics": metrics,
        "runtime": export,
        "description": (
            f"A {task.replace('_', ' ')} model fine-tuned from {lineage.get('base_model')} on {n_train} examples "
            f"(validated on {n_val}){': ' + summary if summary else ''}."
        ),
        "limitations": (
            "Trained on the uploaded data only; it inherits that data's biases and coverage. Inputs longer than the "
            "model's maximum length are truncated. Check the validation metrics before relying on predictions."
        ),
    }
