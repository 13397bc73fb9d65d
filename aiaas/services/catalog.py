"""The models a job may start from, and the models an organisation may call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiaas.core.errors import AiaasError


def base_models(base_models_dir: Path) -> list[dict[str, Any]]:
    from aiaas.training.base_models import list_base_models

    return [
        {"id": m.id, "hidden_size": m.hidden_size, "do_lower_case": m.do_lower_case,
         "num_parameters": m.num_parameters}
        for m in list_base_models(base_models_dir)
    ]


def resolve(name: str, base_models_dir: Path) -> Any:
    """Resolve a base model name; errors carry param='model' and list what is available."""
    from aiaas.training.base_models import resolve_base_model

    try:
        return resolve_base_model(name, base_models_dir=base_models_dir)
    except AiaasError as exc:
        if exc.param is None:
            exc.param = "model"
        raise
