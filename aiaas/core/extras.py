"""The optional parts of an install (pip extras): which modules a role needs, one clear error without them.

`pip install aiaas` runs the API server, the serving runtime, the SDK and the CLI; training needs
`aiaas[train]`. Modules are looked up, not imported (importing torch takes seconds).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

from aiaas.core.errors import ConfigurationError

TRAIN_MODULES = ("torch", "transformers", "safetensors", "sklearn", "scipy")


def missing(modules: Iterable[str]) -> list[str]:
    """The modules of `modules` that this environment cannot import."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def train_missing_message(feature: str) -> str | None:
    gone = missing(TRAIN_MODULES)
    if not gone:
        return None
    return (
        f"{feature} needs the train extra, and this install lacks {', '.join(gone)}: "
        "pip install 'aiaas[train]' (the API server and serving run without it)."
    )


def require_train(feature: str) -> None:
    """Raise ConfigurationError saying what to install when the training packages are missing."""
    message = train_missing_message(feature)
    if message:
        raise ConfigurationError(message)
