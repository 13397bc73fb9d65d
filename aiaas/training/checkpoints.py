"""Checkpoints: `work_dir/checkpoints/step-<n>/`, written atomically, read without unpickling.

A checkpoint holds everything needed to continue as if never stopped:
  config.json + model.safetensors   the weights (and tokenizer files: a loadable HF dir)
  optimizer.pt, scheduler.pt        their state_dicts (tensors and plain containers)
  trainer_state.pt                  RunState (step, epoch, position in the epoch, best metric,
                                    history, config) and RNG states (python, numpy, torch)
  metrics.json                      the same numbers for humans and other tools
Everything goes through torch.save of tensors and plain containers and comes back only
through torch.load(weights_only=True), which refuses anything that would run code.

Atomicity: files go to a hidden temporary directory that is fsynced and then renamed
into place, so a SIGKILL mid-write leaves at worst a stray `.tmp-*` directory (removed
on the next start), never a half-written latest checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(kw_only=True)
class RunState:
    """Where a run is: everything a checkpoint saves besides weights, optimizer, scheduler and RNG.

    Saved as a plain dict (`to_dict`, `trainer_state.pt`), so it loads under weights_only.
    """

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already trained
    trained_tokens: int = 0
    epoch_loss_sum: float = 0.0
    epoch_loss_count: int = 0
    best_score: list[float] | None = None  # metrics.selection_score of the best evaluation
    best_step: int | None = None
    best_metrics: dict[str, Any] | None = None
    bad_epochs: int = 0  # evaluations since the best one
    stopped_early: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)  # the latest record, for checkpoint callbacks
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any]
    hyperparameters: dict[str, Any]  # resolved values, with "reasons"
    fingerprint: str  # of the task, labels and data: a resume must see the same

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> RunState:
        return cls(**saved)


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def remove_partial(root: Path) -> None:
    """Drop leftovers of writes that a crash interrupted."""
    if root.is_dir():
        for child in root.iterdir():
            if child.name.startswith((".tmp-", ".old-")):
                shutil.rmtree(child, ignore_errors=True)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: Any,
    scheduler: Any,
    state: dict[str, Any],
) -> Path:
    import torch
    from safetensors.torch import save_model

    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.config.save_pretrained(tmp)
    # save_model copes with shared tensors; "format: pt" is what transformers expects.
    save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    full_state = {**plain(state), "rng": rng_state()}
    torch.save(full_state, tmp / STATE_FILE)
    summary = {k: full_state.get(k) for k in ("step", "epoch", "batch_in_epoch", "best_step", "metrics")}
    (tmp / "metrics.json").write_text(json.dumps(summary, indent=2))
    _fsync_tree(tmp)

    if final.exists():  # same step written again (e.g. after a resume): swap, then drop the old
        old = root / f".old-step-{step}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _fsync_dir(root)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Optimizer, scheduler and trainer state (weights: load_weights).

    Tensors and plain containers only: weights_only=True refuses anything else.
    """
    import torch

    return {
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True),
        "state": torch.load(path / STATE_FILE, map_location="cpu", weights_only=True),
    }


def load_weights(model: Any, path: Path) -> None:
    """Weights from safetensors; load_model also restores tensors that save_model de-duplicated."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"), strict=True)


def prune(root: Path, *, keep: set[int], keep_last: int = 2) -> None:
    """Keep the newest `keep_last` checkpoints plus the steps in `keep` (the best one)."""
    found = list_checkpoints(root)
    newest = {step for step, _ in found[-keep_last:]}
    for step, path in found:
        if step not in newest and step not in keep:
            shutil.rmtree(path, ignore_errors=True)


def rng_state() -> dict[str, Any]:
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's own arrays are not allowed under weights_only; a tensor is.
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    random.setstate(_as_tuple(state["python"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def plain(value: Any) -> Any:
    """numpy scalars/arrays to Python values, recursively (weights_only accepts only those)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _as_tuple(value: Any) -> Any:
    # random.setstate needs tuples all the way down.
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            fd = os.open(child, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
