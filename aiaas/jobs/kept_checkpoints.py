"""A succeeded job's checkpoints kept as servable artifacts, so one can become a model version (issue 14).

At the end of a transformer classification job, every checkpoint still on disk (the newest two and the
best one: training prunes the rest) is exported like a model: its weights with the final model's
aiaas.json (task, labels, max_length, thresholds) under `model/`, an fp32 ONNX graph under `onnx/`.
Optimizer, scheduler and trainer state stay behind (only a resume needs them, and the job is over).
Regression checkpoints are not kept: the final model folds the target's scale into its head, a
checkpoint's weights still predict the standardised target.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from aiaas.protocol.tasks import MULTI_LABEL, SINGLE_LABEL
from aiaas.store.blobs import BlobStore

log = logging.getLogger(__name__)

TRAINING_ONLY = {"optimizer.pt", "scheduler.pt", "trainer_state.pt"}
TASKS = (SINGLE_LABEL, MULTI_LABEL)


def on_disk(work_dir: Path) -> dict[int, Path]:
    """step -> checkpoint directory, for every complete checkpoint under the attempt's directory."""
    from aiaas.training.checkpoints import list_checkpoints

    found: dict[int, Path] = {}
    for root in sorted(work_dir.rglob("checkpoints")):
        if root.is_dir():
            found.update(dict(list_checkpoints(root)))
    return found


def keep(blobs: BlobStore, key: str, work_dir: Path, model_dir: Path, task: str) -> dict[int, str]:
    """Export and store the checkpoints on disk under `key`/step-N/; returns step -> artifact URI (the
    `model/` parent)."""
    if task not in TASKS or not (model_dir / "aiaas.json").is_file():
        return {}
    try:
        from aiaas.registry.export import export_model
    except ImportError:  # a worker without the export extra keeps none
        return {}
    kept: dict[int, str] = {}
    stage = work_dir / ".kept-checkpoints"
    for step, path in sorted(on_disk(work_dir).items()):
        out = stage / f"step-{step}"
        shutil.rmtree(out, ignore_errors=True)
        (out / "model").mkdir(parents=True)
        for f in path.iterdir():
            if f.is_file() and f.name not in TRAINING_ONLY:
                shutil.copy2(f, out / "model" / f.name)
        shutil.copy2(model_dir / "aiaas.json", out / "model" / "aiaas.json")
        try:
            export_model(out / "model", out / "onnx", precision="fp32")
        except Exception:  # noqa: BLE001 - a checkpoint that cannot be exported is simply not kept
            log.warning("checkpoint step %s could not be exported; not kept", step, exc_info=True)
            continue
        uri = blobs.put_dir(f"{key}/step-{step}/model", out / "model")
        blobs.put_dir(f"{key}/step-{step}/onnx", out / "onnx")
        kept[step] = uri.rsplit("/model", 1)[0]
    shutil.rmtree(stage, ignore_errors=True)
    return kept
