"""TrainConfig checks and the "auto" hyperparameter choices."""

from __future__ import annotations

import pytest

from aiaas.core.errors import AiaasError
from aiaas.training import TrainConfig
from aiaas.training.hyperparams import resolve

MINILM_PARAMS = 22_700_000
BERT_BASE_PARAMS = 109_000_000


def test_round_trip_and_defaults() -> None:
    config = TrainConfig(base_model="minilm-l6", n_epochs=4, learning_rate_multiplier=2.0)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["batch_size"] == "auto" and config.early_stopping_patience == 2


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("n_epochs", 0, "n_epochs must be 'auto' or an integer from 1 to 50"),
        ("n_epochs", "many", "n_epochs must be 'auto'"),
        ("batch_size", True, "batch_size must be"),
        ("learning_rate", -1.0, "learning_rate must be 'auto' or a number > 0"),
        ("task", "translation", "task must be one of"),
        ("precision", "fp16", "precision must be one of auto, bf16, fp32"),
        ("max_length", 4, "max_length must be an integer from 8"),
        ("warmup_ratio", 0.9, "warmup_ratio must be a number"),
        ("early_stopping_patience", 0, "early_stopping_patience must be"),
        ("checkpoint_every_steps", 0, "checkpoint_every_steps must be"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(field: str, value: object, words: str) -> None:
    with pytest.raises(AiaasError, match=words) as info:
        TrainConfig(base_model="minilm-l6", **{field: value})
    assert info.value.code == "invalid_request" and info.value.param == field


def test_unknown_option_and_conflicting_learning_rates() -> None:
    with pytest.raises(AiaasError, match="Unknown training option\\(s\\): epochs"):
        TrainConfig.from_dict({"base_model": "x", "epochs": 3})
    with pytest.raises(AiaasError, match="either learning_rate or learning_rate_multiplier"):
        TrainConfig(base_model="x", learning_rate=1e-4, learning_rate_multiplier=2.0)


def test_auto_on_small_data_and_a_small_model() -> None:
    hp = resolve(TrainConfig(base_model="m"), n_train=200, num_parameters=MINILM_PARAMS, hidden_size=384)
    assert hp.batch_size == 16
    assert hp.steps_per_epoch == 13
    assert hp.n_epochs == 12 and hp.total_steps == 156  # at least ~150 optimizer steps
    assert hp.learning_rate == 2e-4  # 5e-5 was measured to learn nothing in this regime
    assert hp.warmup_steps == 16
    assert hp.checkpoint_every_steps == 16
    assert all(hp.reasons[k].startswith("auto") for k in ("batch_size", "n_epochs", "learning_rate"))


def test_auto_on_tiny_and_large_data() -> None:
    tiny = resolve(TrainConfig(base_model="m"), n_train=20, num_parameters=MINILM_PARAMS, hidden_size=384)
    assert tiny.n_epochs == 20  # capped
    large = resolve(
        TrainConfig(base_model="m"), n_train=50_000, num_parameters=MINILM_PARAMS, hidden_size=384
    )
    assert large.batch_size == 32 and large.n_epochs == 3  # floor; already thousands of steps
    assert large.learning_rate == 1e-4
    assert large.total_steps == 3 * 1563


def test_auto_learning_rate_falls_with_model_size_and_multiplier_scales_it() -> None:
    base = resolve(TrainConfig(base_model="m"), n_train=500, num_parameters=BERT_BASE_PARAMS, hidden_size=768)
    big = resolve(TrainConfig(base_model="m"), n_train=500, num_parameters=335_000_000, hidden_size=1024)
    assert base.learning_rate == 5e-5 and big.learning_rate == 2e-5
    unknown = resolve(TrainConfig(base_model="m"), n_train=500, num_parameters=None, hidden_size=768)
    assert unknown.learning_rate == 5e-5
    scaled = resolve(
        TrainConfig(base_model="m", learning_rate_multiplier=0.5),
        n_train=500,
        num_parameters=MINILM_PARAMS,
        hidden_size=384,
    )
    assert scaled.learning_rate == pytest.approx(1e-4) and "multiplier" in scaled.reasons["learning_rate"]


def test_explicit_values_win() -> None:
    config = TrainConfig(
        base_model="m", n_epochs=2, batch_size=8, learning_rate=1e-3, checkpoint_every_steps=5
    )
    hp = resolve(config, n_train=100, num_parameters=MINILM_PARAMS, hidden_size=384)
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate, hp.checkpoint_every_steps) == (2, 8, 1e-3, 5)
    assert hp.reasons["n_epochs"] == "requested"
