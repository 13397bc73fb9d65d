"""The fine-tuning engine: TrainConfig, the base-model catalog, one training loop.

`runtime` is imported first on purpose: it sets OMP_WAIT_POLICY=PASSIVE before torch
(and its OpenMP runtime) can be loaded by anything below.
"""

from aiaas.training import runtime  # noqa: F401  (must stay first, see above)
from aiaas.training.base_models import ResolvedBaseModel, list_base_models, resolve_base_model
from aiaas.training.config import TrainConfig
from aiaas.training.loop import train
from aiaas.training.types import TrainCallbacks, TrainingStopped, TrainResult

__all__ = [
    "ResolvedBaseModel",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "list_base_models",
    "resolve_base_model",
    "train",
]
