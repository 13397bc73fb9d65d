"""The models a job may start from (base models and model families), and the models an organisation
may call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiaas.core.errors import AiaasError


@dataclass(frozen=True)
class JobModel:
    """What a job's `model` names: a family, and the transformer base model it trains (if any)."""

    name: str  # canonical, stored on the job: "minilm-l6", "tfidf-linear", "auto:minilm-l6"
    family: str  # "transformer" | "tfidf-linear" | "auto"
    base: Any  # the resolved transformer base model; None for tfidf-linear


def base_models(base_models_dir: Path) -> list[dict[str, Any]]:
    from aiaas.training.base_models import list_base_models

    return [
        {"id": m.id, "hidden_size": m.hidden_size, "do_lower_case": m.do_lower_case,
         "num_parameters": m.num_parameters}
        for m in list_base_models(base_models_dir)
    ]


def model_families() -> list[dict[str, Any]]:
    """The families a job may name instead of a base model (the transformer family is named by its base)."""
    from aiaas.training import families

    return [{"id": name, "family": name, "description": families.DESCRIPTIONS[name]}
            for name in families.FAMILIES if name != families.TRANSFORMER]


def families_hint() -> str:
    from aiaas.training import families

    return (f"Model families: {', '.join(f['id'] for f in model_families())} "
            f"(or '{families.AUTO}:<base model>' to pick auto's transformer).")


def resolve(name: str, base_models_dir: Path) -> Any:
    """Resolve a base model name; errors carry param='model' and list what is available."""
    from aiaas.training.base_models import resolve_base_model

    try:
        return resolve_base_model(name, base_models_dir=base_models_dir)
    except AiaasError as exc:
        if exc.param is None:
            exc.param = "model"
        raise


def resolve_job_model(name: str, base_models_dir: Path) -> JobModel:
    """A job's `model`: a family name, `auto:<base model>`, or a transformer base model.

    Unknown names answer the base-model error with the families added to what is available.
    """
    from aiaas.training import families
    from aiaas.training.classical import FAMILY as CLASSICAL

    family, base_name = families.family_for_model(name)
    if family == CLASSICAL:
        return JobModel(name=CLASSICAL, family=CLASSICAL, base=None)
    try:
        base = resolve(base_name, base_models_dir)
    except AiaasError as exc:
        if exc.code == "base_model_unavailable":
            exc.message = f"{exc.message} {families_hint()}"
            exc.args = (exc.message,)
        raise
    if family == families.AUTO:
        return JobModel(name=f"{families.AUTO}:{base.id}", family=family, base=base)
    return JobModel(name=base.id, family=family, base=base)
