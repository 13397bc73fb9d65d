"""Checkpoints: contents, weights_only loading, atomic writes, pruning, resume equivalence."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from aiaas.core.errors import AiaasError
from aiaas.training import TrainConfig, TrainingStopped, train
from aiaas.training import checkpoints as ck
from tests.training.conftest import TINY, Recorder, single_label_data

# 48 examples, batch 8: 6 steps per epoch, 18 in all; a checkpoint every 4 steps.
CONFIG = {
    "n_epochs": 3,
    "batch_size": 8,
    "learning_rate": 3e-3,
    "checkpoint_every_steps": 4,
    "early_stopping_patience": None,
    "precision": "fp32",
}


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("stop_at", [8, 12])  # mid-epoch, and exactly at an epoch end
def test_resume_matches_an_uninterrupted_run(tmp_path: Path, base_models_dir: Path, stop_at: int) -> None:
    import torch

    data = single_label_data(48, 16)
    config = TrainConfig(base_model=TINY, **CONFIG)
    straight = train(config, data, tmp_path / "a", Recorder(), base_models_dir=base_models_dir)

    with pytest.raises(TrainingStopped):
        train(
            config,
            data,
            tmp_path / "b",
            Recorder(stop_after_checkpoint=stop_at),
            base_models_dir=base_models_dir,
        )
    assert ck.latest_checkpoint(tmp_path / "b" / "checkpoints").name == f"step-{stop_at}"
    rec = Recorder()
    resumed = train(config, data, tmp_path / "b", rec, base_models_dir=base_models_dir)

    assert any(f"Resumed from checkpoint at step {stop_at}" in e["message"] for e in rec.events)
    # The step counter continued: the first logged step after resuming is past the checkpoint.
    assert min(e["step"] for e in rec.metrics_events()) > stop_at
    assert resumed.steps == straight.steps == 18
    assert resumed.trained_tokens == straight.trained_tokens
    assert resumed.metrics["valid_loss"] == pytest.approx(straight.metrics["valid_loss"], abs=1e-5)
    assert [h["step"] for h in resumed.history] == [h["step"] for h in straight.history]
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_checkpoint_contents_load_with_weights_only(tmp_path: Path, base_models_dir: Path) -> None:
    import torch

    rec = Recorder()
    train(
        TrainConfig(base_model=TINY, **CONFIG),
        single_label_data(48, 16),
        tmp_path,
        rec,
        base_models_dir=base_models_dir,
    )
    assert [step for step, _, _ in rec.checkpoints] == [4, 6, 8, 12, 16, 18]
    root = tmp_path / "checkpoints"
    # Last two plus the best survive.
    kept = [step for step, _ in ck.list_checkpoints(root)]
    state = torch.load(root / "step-18" / ck.STATE_FILE, weights_only=True)
    assert set(kept) == {16, 18} | {state["best_step"]}
    assert not [p for p in root.iterdir() if p.name.startswith(".")]

    path = root / "step-16"
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "optimizer.pt",
        "scheduler.pt",
        ck.STATE_FILE,
        "metrics.json",
    ):
        assert (path / name).is_file(), name
    loaded = ck.load_checkpoint(path)  # weights_only=True inside
    state = loaded["state"]
    assert state["step"] == 16 and state["epoch"] == 2 and state["batch_in_epoch"] == 4
    assert state["config"]["batch_size"] == 8 and state["hyperparameters"]["total_steps"] == 18
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert loaded["optimizer"]["state"], "AdamW moments are saved"
    assert loaded["scheduler"]["last_epoch"] == 16
    # Each file also loads on its own under weights_only (no pickled objects inside).
    for name in ("optimizer.pt", "scheduler.pt", ck.STATE_FILE):
        torch.load(path / name, weights_only=True)
    assert len(rec.checkpoints[0][2]) > 0, "checkpoint callback gets the latest metrics"


def test_weights_only_refuses_a_pickled_object(tmp_path: Path) -> None:
    import torch

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("unpickled!",))

    path = tmp_path / "state.pt"
    path.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_interrupted_write_leaves_the_previous_checkpoint_latest(
    tmp_path: Path, base_models_dir: Path
) -> None:
    config = TrainConfig(base_model=TINY, **{**CONFIG, "n_epochs": 1})
    train(config, single_label_data(48, 16), tmp_path, Recorder(), base_models_dir=base_models_dir)
    root = tmp_path / "checkpoints"
    # What a SIGKILL during a write leaves behind: a temp dir, or a step dir missing its state.
    (root / ".tmp-step-99-1234").mkdir()
    (root / ".tmp-step-99-1234" / "model.safetensors").write_bytes(b"half")
    (root / "step-50").mkdir()
    assert ck.latest_checkpoint(root).name == "step-6"
    ck.remove_partial(root)
    assert not (root / ".tmp-step-99-1234").exists()


def test_resume_refuses_changed_settings(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data(48, 16)
    with pytest.raises(TrainingStopped):
        train(
            TrainConfig(base_model=TINY, **CONFIG),
            data,
            tmp_path,
            Recorder(stop_after_checkpoint=4),
            base_models_dir=base_models_dir,
        )
    changed = TrainConfig(base_model=TINY, **{**CONFIG, "learning_rate": 1e-3})
    with pytest.raises(AiaasError, match="different settings \\(learning_rate\\)") as info:
        train(changed, data, tmp_path, Recorder(), base_models_dir=base_models_dir)
    assert info.value.code == "conflict"
    with pytest.raises(AiaasError, match="different data"):
        train(
            TrainConfig(base_model=TINY, **CONFIG),
            single_label_data(48, 16, seed=1),
            tmp_path,
            Recorder(),
            base_models_dir=base_models_dir,
        )
