"""What training a family returns, and the finishing steps the families share.

`FamilyResult` is a TrainResult that says which family produced it; `calibrate` folds the
validation-fit temperature into a transformer's head; `annotate` adds keys to a finished
model's aiaas.json (the exporter copies them into the serving artifact).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiaas.training.types import PreparedDataLike, TrainCallbacks, TrainResult

if TYPE_CHECKING:
    from aiaas.training.calibrate_transformer import CalibrationSplit

TRANSFORMER = "transformer"
META_FILE = "aiaas.json"


@dataclass
class FamilyResult(TrainResult):
    """A TrainResult that also says which family produced it and, for auto, how it was chosen."""

    family: str = TRANSFORMER
    selection: dict[str, Any] | None = None


def calibrate(
    result: TrainResult, task: str, data: PreparedDataLike, callbacks: TrainCallbacks,
    split: CalibrationSplit | None = None,
) -> None:  # fmt: skip
    """Temperature / per-label Platt fit on the validation rows `split` names (default: all), folded into
    the transformer's head (aiaas.training.calibrate_transformer); recorded in its metrics, aiaas.json
    and hyperparameters."""
    from aiaas.training import calibrate_transformer

    info = calibrate_transformer.calibrate(result, task, data, callbacks, split)
    if info:
        result.hyperparameters = {**result.hyperparameters, **info}


def as_family(result: TrainResult, family: str, selection: dict[str, Any] | None = None) -> FamilyResult:
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return FamilyResult(**values, family=family, selection=selection)


def annotate(model_dir: Path, extra: dict[str, Any]) -> None:
    """Add keys to a finished model's aiaas.json (the exporter copies them into the artifact)."""
    path = Path(model_dir) / META_FILE
    meta = json.loads(path.read_text())
    meta.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(path)
