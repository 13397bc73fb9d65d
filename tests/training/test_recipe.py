"""The small-data recipe options (aiaas.training.recipe): layer-wise learning rates, re-initialising the
top of the encoder, and early stopping's restore of the best epoch's weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from aiaas.core.errors import AiaasError
from aiaas.training import TrainConfig, components, train
from aiaas.training.checkpoints import checkpoint_dir
from aiaas.training.hyperparams import resolve
from tests.training.conftest import TINY, Recorder, single_label_data

LR = 1e-3


def _model_and_optimizer(base_models_dir: Path, **options: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    config = TrainConfig(base_model=TINY, n_epochs=2, learning_rate=LR, **options)
    base = components.resolve(TINY, base_models_dir)
    hp = resolve(config, n_train=64, num_parameters=base.num_parameters, hidden_size=base.hidden_size)
    hparams: dict[str, Any] = {}
    model, opt, sched = components.model_and_optimizer(config, base, ["bug", "refund"], hp, "cpu", hparams)
    return model, opt, sched, hparams


def _lr_of(model: Any, optimizer: Any) -> dict[str, float]:
    """Each trainable parameter's learning rate, by name."""
    lr_by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {n: lr_by_id[id(p)] for n, p in model.named_parameters() if p.requires_grad}


def test_default_is_one_learning_rate_and_the_old_groups(base_models_dir: Path) -> None:
    model, opt, _, hparams = _model_and_optimizer(base_models_dir)
    assert set(_lr_of(model, opt).values()) == {LR}
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]  # decay, then no decay
    assert "reinitialised" not in hparams


def test_layerwise_decay_gives_lower_layers_lower_learning_rates(base_models_dir: Path) -> None:
    model, opt, sched, _ = _model_and_optimizer(base_models_dir, layerwise_lr_decay=0.5)
    lr = _lr_of(model, opt)  # the tiny BERT has 2 layers
    for name in ("classifier.weight", "bert.pooler.dense.weight", "bert.encoder.layer.1.output.dense.bias"):
        assert lr[name] == pytest.approx(LR)
    assert lr["bert.encoder.layer.0.attention.self.query.weight"] == pytest.approx(LR * 0.5)
    assert lr["bert.embeddings.position_embeddings.weight"] == pytest.approx(LR * 0.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR)  # the top first: the loop logs group 0
    # The schedule scales every group alike: the ratios hold through warm-up and decay.
    for _ in range(3):
        opt.step()
        sched.step()
        lr = _lr_of(model, opt)
        top = lr["classifier.weight"]
        assert top > 0
        assert lr["bert.encoder.layer.0.output.dense.weight"] == pytest.approx(top * 0.5)
        assert lr["bert.embeddings.LayerNorm.bias"] == pytest.approx(top * 0.25)


def _changed(model: Any, reference: Any) -> set[str]:
    ref = reference.state_dict()
    return {k for k, v in model.state_dict().items() if not torch.equal(v, ref[k])}


def test_reinit_changes_the_pooler_and_the_top_layers_only(base_models_dir: Path) -> None:
    plain, _, _, _ = _model_and_optimizer(base_models_dir)  # same seed: the same new head
    pooled, _, _, hparams = _model_and_optimizer(base_models_dir, reinit_pooler=True)
    assert hparams["reinitialised"] == ["bert.pooler"]
    assert _changed(pooled, plain) == {"bert.pooler.dense.weight"}  # its bias was 0 and stays 0

    top, _, _, hparams = _model_and_optimizer(base_models_dir, reinit_layers=1)
    assert hparams["reinitialised"] == ["bert.encoder.layer.1"]
    changed = _changed(top, plain)
    assert changed and all(k.startswith("bert.encoder.layer.1.") for k in changed)
    assert "bert.encoder.layer.1.intermediate.dense.weight" in changed
    std = top.bert.encoder.layer[1].intermediate.dense.weight.std().item()
    assert std == pytest.approx(top.config.initializer_range, rel=0.2)


def test_reinit_more_layers_than_the_model_has_is_refused(base_models_dir: Path) -> None:
    with pytest.raises(AiaasError, match="reinit_layers is 3 but the base model has 2 layers") as info:
        _model_and_optimizer(base_models_dir, reinit_layers=3)
    assert info.value.param == "reinit_layers"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("layerwise_lr_decay", 0.0, "layerwise_lr_decay must be a number > 0.0 and <= 1.0"),
        ("layerwise_lr_decay", 1.5, "layerwise_lr_decay must be"),
        ("layerwise_lr_decay", "fast", "layerwise_lr_decay must be"),
        ("reinit_layers", -1, "reinit_layers must be 'auto' or an integer from 0 to 48"),
        ("reinit_layers", True, "reinit_layers must be"),
        ("reinit_pooler", "yes", "reinit_pooler must be true, false or 'auto'"),
    ],
)
def test_bad_recipe_values_name_the_field(field: str, value: object, words: str) -> None:
    with pytest.raises(AiaasError, match=words) as info:
        TrainConfig(base_model=TINY, **{field: value})
    assert info.value.code == "invalid_request" and info.value.param == field


def test_auto_resolves_with_reasons_and_requests_are_kept() -> None:
    hp = resolve(TrainConfig(base_model="m"), n_train=200, num_parameters=22_700_000, hidden_size=384)
    assert (hp.layerwise_lr_decay, hp.reinit_layers, hp.reinit_pooler) == (1.0, 0, False)
    assert hp.reasons["layerwise_lr_decay"].startswith("auto")
    asked = TrainConfig(base_model="m", layerwise_lr_decay=0.9, reinit_layers=2, reinit_pooler=True)
    hp = resolve(asked, n_train=200, num_parameters=22_700_000, hidden_size=384)
    assert (hp.layerwise_lr_decay, hp.reinit_layers, hp.reinit_pooler) == (0.9, 2, True)
    assert hp.reasons["reinit_layers"] == "requested"
    assert {"layerwise_lr_decay", "reinit_layers", "reinit_pooler"} <= set(asked.resume_view())


def test_a_run_with_the_recipe_trains_and_reports_it(tmp_path: Path, base_models_dir: Path) -> None:
    config = TrainConfig(
        base_model=TINY, n_epochs=10, learning_rate=3e-3, precision="fp32", early_stopping_patience=None,
        layerwise_lr_decay=0.8, reinit_pooler=True, reinit_layers=1,
    )  # fmt: skip
    result = train(config, single_label_data(), tmp_path, Recorder(), base_models_dir=base_models_dir)
    hp = result.hyperparameters
    assert hp["layerwise_lr_decay"] == 0.8 and hp["reinit_layers"] == 1 and hp["reinit_pooler"] is True
    assert hp["reinitialised"] == ["bert.encoder.layer.1", "bert.pooler"]
    assert result.metrics["accuracy"] >= 0.9  # the toy groups are separable


def test_early_stopping_stops_and_the_model_has_the_best_epochs_weights(
    tmp_path: Path, base_models_dir: Path
) -> None:
    # A learning rate this high makes validation worse after the first epochs.
    config = TrainConfig(
        base_model=TINY, n_epochs=20, learning_rate=0.05, early_stopping_patience=2, precision="fp32"
    )
    rec = Recorder()
    result = train(config, single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    best_step = json.loads((result.model_dir / "aiaas.json").read_text())["metrics"]["best_step"]
    evals = [e for e in result.history if e["split"] == "validation"]
    assert result.steps < 20 * 4 and best_step < result.steps  # stopped, and not at the last epoch
    assert [e["step"] for e in evals][-1] == best_step + 2 * 4  # patience 2, 4 steps an epoch
    final = _weights(result.model_dir)
    assert _same(final, _weights(result.model_dir, checkpoint_dir(tmp_path / "checkpoints", best_step)))
    last = checkpoint_dir(tmp_path / "checkpoints", result.steps)
    if last.is_dir():  # the last epoch's checkpoint, where kept, is not the model written
        assert not _same(final, _weights(result.model_dir, last))


def _weights(model_dir: Path, checkpoint: Path | None = None) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification

    from aiaas.training.checkpoints import load_weights

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
    if checkpoint is not None:
        load_weights(model, checkpoint)
    return dict(model.state_dict())


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
