"""Model families: which one a job's `model` names, and training it.

    transformer    aiaas.training.train: fine-tune a BERT-family encoder (the default)
    tfidf-linear   aiaas.training.classical(_train): n-gram TF-IDF + a linear model, seconds on a CPU
    auto           both, judged on the validation set by the engine's selection metric (under 1,000
                   rows: by k-fold cross-validation, aiaas.training.auto_cv)

The modules behind it:
    families.py       names, `family_for_model`, `train_family` (this module)
    family_result.py  FamilyResult, calibration of a transformer, aiaas.json annotations
    auto.py           auto: candidates, the choice, the ensemble candidate
    auto_plan.py      auto's transformer plan: readability, cost estimate, epochs (and k folds) that fit
    auto_cv.py        auto on small data: the k folds, fold fits, per-fold scores and their mean ± std
    auto_kfold.py     which candidates are cross-validated, the choice by fold means, what is served
    auto_refit.py     tfidf-linear's fold fits and its refit on all rows (calibrated out of fold)
"""

from __future__ import annotations

from pathlib import Path

from aiaas.core.errors import InvalidRequest
from aiaas.training import auto, auto_cv, classical
from aiaas.training.base_models import MINILM_ID
from aiaas.training.calibrate_transformer import split_for_calibration
from aiaas.training.classical_train import train_classical
from aiaas.training.config import TrainConfig
from aiaas.training.family_result import TRANSFORMER, FamilyResult, annotate, as_family, calibrate
from aiaas.training.loop import train
from aiaas.training.types import PreparedDataLike, TrainCallbacks

AUTO = "auto"
FAMILIES = (TRANSFORMER, classical.FAMILY, AUTO)
# auto's transformer candidate when the job names none ("auto" rather than "auto:<base model>").
DEFAULT_AUTO_BASE = MINILM_ID
# What each family is, for catalogs and error messages.
DESCRIPTIONS = {
    TRANSFORMER: "fine-tune a BERT-family encoder: name the base model itself (e.g. 'minilm-l6')",
    classical.FAMILY: "word and character n-gram TF-IDF with a linear model; trains in seconds on a CPU, "
    "any language",
    AUTO: f"trains {classical.FAMILY} first, then the transformer within time_budget_s, and keeps the "
    "better on the validation set (under 1,000 rows: by k-fold cross-validation, then refit on all rows); "
    "'auto:<base model>' picks the transformer",
}
# What auto may spend on both families together when the caller sets no budget.
DEFAULT_TIME_BUDGET_S = 900.0


def family_for_model(model: str) -> tuple[str, str]:
    """A job's `model` -> (family, base model for the transformer side).

    "tfidf-linear" and "auto" are families; "auto:<base model>" is auto with that base
    model as its transformer candidate ("auto" alone uses DEFAULT_AUTO_BASE); any other
    name is a transformer base model. Family names are matched case-insensitively.
    """
    name = (model or "").strip()
    lowered = name.lower()
    if lowered == classical.FAMILY:
        return classical.FAMILY, classical.FAMILY
    if lowered == AUTO:
        return AUTO, DEFAULT_AUTO_BASE
    if lowered.startswith(AUTO + ":"):
        base = name[len(AUTO) + 1 :].strip()
        if not base:
            raise InvalidRequest(
                "'auto:' needs a base model after the colon, e.g. 'auto:minilm-l6'; or send 'auto' "
                f"to use {DEFAULT_AUTO_BASE}.",
                param="model",
            )
        if base.lower() in (classical.FAMILY, AUTO) or base.lower().startswith(AUTO + ":"):
            raise InvalidRequest(
                f"'{name}': after 'auto:' comes the transformer base model auto compares "
                f"{classical.FAMILY} with, e.g. 'auto:minilm-l6'.",
                param="model",
            )
        return AUTO, base
    return TRANSFORMER, name


def train_family(
    family: str,
    config: TrainConfig,
    data: PreparedDataLike,
    work_dir: Path,
    callbacks: TrainCallbacks,
    *,
    base_models_dir: Path | None = None,
    time_budget_s: float | None = None,
    kfold: auto_cv.KFold | None = None,
) -> FamilyResult:
    """Train `family` ("transformer" | "tfidf-linear" | "auto"). For auto, `config.base_model` is
    the transformer candidate, `time_budget_s` (default DEFAULT_TIME_BUDGET_S) bounds both, and
    `kfold` (default: under 1,000 rows, 5 folds) says when the choice is made by k-fold CV."""
    work_dir = Path(work_dir)
    if family == TRANSFORMER:
        # Validation picks the epoch and fits the calibration (split_for_calibration says which rows).
        split = split_for_calibration(config, data)
        result = train(config, split.data, work_dir, callbacks, base_models_dir=base_models_dir)
        calibrate(result, config.task, data, callbacks, split)
        annotate(result.model_dir, {"family": TRANSFORMER})
        return as_family(result, TRANSFORMER)
    if family == classical.FAMILY:
        return as_family(train_classical(config, data, work_dir, callbacks), classical.FAMILY)
    if family == AUTO:
        budget = DEFAULT_TIME_BUDGET_S if time_budget_s is None else float(time_budget_s)
        return auto.train_auto(config, data, work_dir, callbacks, base_models_dir, budget, kfold)
    raise InvalidRequest(f"Unknown model family {family!r}; use one of {', '.join(FAMILIES)}.", param="model")


__all__ = [
    "AUTO",
    "DEFAULT_AUTO_BASE",
    "DEFAULT_TIME_BUDGET_S",
    "DESCRIPTIONS",
    "FAMILIES",
    "TRANSFORMER",
    "FamilyResult",
    "family_for_model",
    "train_family",
]
