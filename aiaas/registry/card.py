"""Model cards: what a model is, what it was trained on and how well it does, generated per version."""

from __future__ import annotations

from typing import Any

from aiaas.training.classical import FAMILY as CLASSICAL_FAMILY


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
    family = lineage.get("family") or "transformer"
    selection = lineage.get("model_selection")
    calibration = _calibration(metrics, lineage.get("hyperparameters") or {})
    description = _description(task, family, lineage, metrics, n_train, n_val, calibration)
    card = {
        "model_id": model_id,
        "task": task,
        "family": family,
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
        "description": description,
        "limitations": (
            "Trained on the uploaded data only; it inherits that data's biases and coverage. Inputs longer than the "
            "model's maximum length are truncated. Check the validation metrics before relying on predictions."
            + (" It has no text embeddings: /v1/embeddings needs a transformer model."
               if family == CLASSICAL_FAMILY else "")
        ),
    }
    if selection:
        card["model_selection"] = selection
    if calibration:
        card["calibration"] = calibration
    return card


def _description(
    task: str,
    family: str,
    lineage: dict[str, Any],
    metrics: dict[str, Any],
    n_train: Any,
    n_val: Any,
    calibration: dict[str, Any] | None,
) -> str:
    """One paragraph: which kind of model, trained on how much, how well it does, how it was chosen."""
    headline = {k: metrics[k] for k in ("accuracy", "macro_f1", "micro_f1", "rmse", "mae", "r2") if k in metrics}
    summary = ", ".join(f"{k} {v:.3f}" for k, v in headline.items() if isinstance(v, int | float))
    if family == CLASSICAL_FAMILY:
        what = (f"A {task.replace('_', ' ')} {CLASSICAL_FAMILY} model (word and character n-gram TF-IDF "
                f"with a linear model) trained on {n_train} examples")
    elif family == "ensemble":
        weight = (lineage.get("hyperparameters") or {}).get("weight")
        what = (f"A {task.replace('_', ' ')} ensemble: the weighted average ({weight} on the transformer) of a "
                f"model fine-tuned from {lineage.get('base_model')} and a {CLASSICAL_FAMILY} model, trained on "
                f"{n_train} examples")
    elif family == "char-cnn":
        what = (f"A {task.replace('_', ' ')} character CNN trained from scratch (no base model: the base model's "
                f"tokenizer could not read the text) on {n_train} examples")
    else:
        what = (f"A {task.replace('_', ' ')} model fine-tuned from {lineage.get('base_model')} "
                f"on {n_train} examples")
    description = f"{what} (validated on {n_val}){': ' + summary if summary else ''}."
    selection = lineage.get("model_selection")
    if selection:
        description += f" Chosen by auto: {selection.get('reason')}."
    if calibration:
        fit_on = f"; fit on {calibration['fit_on']}" if calibration.get("fit_on") else ""
        description += (f" Scores calibrated on validation ({calibration['method']}{fit_on}): expected calibration "
                        f"error {calibration['ece_before']:.3f} before, {calibration['ece_after']:.3f} after.")
    return description


def _calibration(metrics: dict[str, Any], hyperparameters: dict[str, Any]) -> dict[str, Any] | None:
    """ECE before and after the calibration fit (aiaas.training.calibration), when training measured it."""
    after, before = metrics.get("ece"), metrics.get("ece_uncalibrated")
    if not isinstance(after, int | float) or not isinstance(before, int | float):
        return None
    out = {"method": hyperparameters.get("calibration") or "none", "ece_before": before, "ece_after": after}
    if "temperature" in hyperparameters:
        out["temperature"] = hyperparameters["temperature"]
    if hyperparameters.get("fit_on"):  # which validation rows the fit used (and whether they picked the epoch)
        out["fit_on"] = hyperparameters["fit_on"]
    return out
