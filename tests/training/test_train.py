"""train() end to end on the tiny BERT: learning, tasks, final model, cancel, precision."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import AiaasError
from aiaas.training import TrainConfig, TrainingStopped, train
from aiaas.training.runtime import cpu_supports_bf16
from tests.training.conftest import (
    TINY,
    Recorder,
    multi_label_data,
    regression_data,
    single_label_data,
)

FAST = {"learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32"}


def test_single_label_learns_a_separable_set(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data()
    rec = Recorder()
    result = train(
        TrainConfig(base_model=TINY, n_epochs=12, **FAST),
        data,
        tmp_path,
        rec,
        base_models_dir=base_models_dir,
    )

    majority = max(sum(ex.label == lab for ex in data.validation) for lab in data.labels) / len(
        data.validation
    )
    assert result.metrics["accuracy"] > majority
    assert result.metrics["accuracy"] >= 0.9
    assert result.steps == 12 * 4  # 64 examples, batch 16
    assert result.epochs_completed == pytest.approx(12.0)
    assert np.array(result.metrics["confusion_matrix"]).sum() == len(data.validation)

    # trained_tokens counts real tokens of every example in every epoch, never padding.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_models_dir / TINY))
    per_epoch = sum(len(ids) for ids in tok([ex.text for ex in data.train])["input_ids"])
    assert result.trained_tokens == 12 * per_epoch

    # Metrics events: train steps carry step/loss/epoch/lr; evals add accuracy and macro_f1.
    events = rec.metrics_events()
    assert all({"step", "loss", "epoch", "learning_rate"} <= set(e) for e in events)
    evals = [e for e in events if "accuracy" in e]
    assert len(evals) == 12 and all("macro_f1" in e for e in evals)
    hp_events = [e for e in rec.events if e["data"] and "hyperparameters" in e["data"]]
    assert hp_events and hp_events[0]["data"]["hyperparameters"]["learning_rate"] == 3e-3

    # The final model: an HF directory plus aiaas.json, loadable as a classifier.
    model_dir = result.model_dir
    assert model_dir == tmp_path / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "aiaas.json"):
        assert (model_dir / name).is_file(), name
    meta = json.loads((model_dir / "aiaas.json").read_text())
    assert meta["task"] == "single_label_classification"
    assert meta["labels"] == ["bug", "refund"]
    assert meta["do_lower_case"] is True and meta["max_length"] == 128
    assert meta["metrics"]["accuracy"] == result.metrics["accuracy"]
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "bug", "1": "refund"}
    assert config["problem_type"] == "single_label_classification"
    assert not list(model_dir.glob("*.bin"))


def test_multi_label_tunes_thresholds(tmp_path: Path, base_models_dir: Path) -> None:
    data = multi_label_data()
    # The tiny BERT's word embeddings are random, so freezing them (what "auto" does on CPU for a matrix
    # this large a share of the model) leaves it too little to learn with: at batch 16, frozen, 3 of 10
    # seeds stuck near micro-F1 0.8, and CI's CPU hit that with the default seed. Trained embeddings at
    # batch 8 learned the set on every seed tried, including the stuck ones (2, 13).
    config = TrainConfig(
        base_model=TINY,
        task="multi_label_classification",
        n_epochs=20,
        batch_size=8,
        freeze_embeddings=False,
        # One thread: the sums' order, and so the run, does not depend on the cores the process is given. The
        # full suite on an AVX2 machine once gave micro-F1 0.78 where alone (2 threads) it gives 1.0; on one
        # thread seeds 0-3, 13 and 42 all reach 1.0 there.
        num_threads=1,
        **FAST,
    )
    result = train(config, data, tmp_path, Recorder(), base_models_dir=base_models_dir)

    assert result.metrics["micro_f1"] >= 0.9
    assert set(result.metrics["thresholds"]) == {"bug", "praise", "refund"}
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert meta["thresholds"] == result.metrics["thresholds"]
    assert all(0.0 < t < 1.0 for t in meta["thresholds"].values())
    assert (
        json.loads((result.model_dir / "config.json").read_text())["problem_type"]
        == "multi_label_classification"
    )


def test_regression_predicts_in_user_units(tmp_path: Path, base_models_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = regression_data()
    config = TrainConfig(base_model=TINY, task="regression", n_epochs=12, **FAST)
    result = train(config, data, tmp_path, Recorder(), base_models_dir=base_models_dir)

    targets = np.array([ex.label for ex in data.validation])
    assert result.metrics["rmse"] < targets.std() / 2
    assert result.metrics["r2"] > 0.7
    # The exported head already undoes the target standardization.
    model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(result.model_dir))
    batch = tok([ex.text for ex in data.validation], padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(**batch).logits[:, 0].numpy()
    assert np.sqrt(((pred - targets) ** 2).mean()) == pytest.approx(result.metrics["rmse"], rel=0.05, abs=0.5)
    assert json.loads((result.model_dir / "aiaas.json").read_text())["regression"]["folded_into_head"] is True


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_paths_run(tmp_path: Path, base_models_dir: Path, precision: str) -> None:
    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no amx_bf16/avx512_bf16: bf16 would be emulated")
    config = TrainConfig(base_model=TINY, n_epochs=2, learning_rate=3e-3, precision=precision)
    result = train(config, single_label_data(32, 16), tmp_path, Recorder(), base_models_dir=base_models_dir)
    assert result.hyperparameters["precision"] == precision
    assert result.steps == 4
    assert np.isfinite(result.history[-1]["valid_loss"])


def test_bf16_learns_as_well_as_fp32(tmp_path: Path, base_models_dir: Path) -> None:
    """bf16 autocast keeps quality: same data, seed and settings, accuracy within 0.1 of fp32's."""
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no amx_bf16/avx512_bf16: bf16 would be emulated")
    data = single_label_data()
    scores = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(
            base_model=TINY, n_epochs=12, learning_rate=3e-3, early_stopping_patience=None, precision=precision
        )
        result = train(config, data, tmp_path / precision, Recorder(), base_models_dir=base_models_dir)
        assert result.hyperparameters["precision"] == precision
        scores[precision] = result.metrics["accuracy"]
    assert scores["bf16"] >= 0.9
    assert abs(scores["bf16"] - scores["fp32"]) <= 0.1


def test_auto_precision_follows_the_cpu(tmp_path: Path, base_models_dir: Path) -> None:
    config = TrainConfig(base_model=TINY, n_epochs=1)
    result = train(config, single_label_data(16, 8), tmp_path, Recorder(), base_models_dir=base_models_dir)
    assert result.hyperparameters["precision"] == ("bf16" if cpu_supports_bf16() else "fp32")
    assert result.hyperparameters["reasons"]["precision"].startswith("auto")


def test_should_stop_cancels_promptly_and_writes_no_model(tmp_path: Path, base_models_dir: Path) -> None:
    rec = Recorder(stop_after_calls=12)
    config = TrainConfig(base_model=TINY, n_epochs=50, **FAST)
    started = time.perf_counter()
    with pytest.raises(TrainingStopped):
        train(config, single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    assert time.perf_counter() - started < 30
    assert not (tmp_path / "model").exists()
    steps = [e["step"] for e in rec.metrics_events()]
    assert steps and max(steps) <= 12  # 200 steps were planned


def test_early_stopping_restores_the_best_epoch(tmp_path: Path, base_models_dir: Path) -> None:
    # A learning rate this high makes validation worse after the first epochs.
    config = TrainConfig(
        base_model=TINY, n_epochs=20, learning_rate=0.05, early_stopping_patience=2, precision="fp32"
    )
    rec = Recorder()
    result = train(config, single_label_data(), tmp_path, rec, base_models_dir=base_models_dir)
    evals = [e for e in result.history if e["split"] == "validation"]
    assert result.steps < 20 * 4, "should have stopped early"
    assert any("Early stopping" in e["message"] for e in rec.events)
    best_step = (
        result.metrics and json.loads((result.model_dir / "aiaas.json").read_text())["metrics"]["best_step"]
    )
    best = next(e for e in evals if e["step"] == best_step)
    assert result.metrics["macro_f1"] == best["macro_f1"]
    assert (tmp_path / "checkpoints" / f"step-{best_step}").is_dir(), "the best checkpoint is kept"


def test_mismatched_task_and_unknown_label_are_refused(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data(8, 4)
    with pytest.raises(AiaasError, match="prepared for single_label_classification"):
        train(
            TrainConfig(base_model=TINY, task="regression"),
            data,
            tmp_path,
            Recorder(),
            base_models_dir=base_models_dir,
        )
    data.train[3].label = "nonsense"
    with pytest.raises(AiaasError, match="train example 4 has label 'nonsense'"):
        train(TrainConfig(base_model=TINY), data, tmp_path, Recorder(), base_models_dir=base_models_dir)


def test_without_validation_it_trains_and_says_so(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data(32, 0)
    rec = Recorder()
    result = train(
        TrainConfig(base_model=TINY, n_epochs=2), data, tmp_path, rec, base_models_dir=base_models_dir
    )
    assert result.steps == 4 and "train_loss" in result.metrics
    assert any(e["level"] == "warning" and "No validation" in e["message"] for e in rec.events)
    assert (result.model_dir / "aiaas.json").is_file()


def test_class_weights_on_imbalanced_data(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data(48, 16)
    data.train = [ex for ex in data.train if ex.label == "bug"] + [
        ex for ex in data.train if ex.label == "refund"
    ][:4]
    config = TrainConfig(base_model=TINY, n_epochs=2, class_weights=True, learning_rate=3e-3)
    result = train(config, data, tmp_path, Recorder(), base_models_dir=base_models_dir)
    assert result.hyperparameters["class_weights"] is True
    assert np.isfinite(result.metrics["valid_loss"])


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model_dir / "model.safetensors"))


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_embeddings_keeps_the_word_matrix_and_trains_the_rest(
    tmp_path: Path, base_models_dir: Path, freeze: bool
) -> None:
    config = TrainConfig(base_model=TINY, n_epochs=2, freeze_embeddings=freeze, **FAST)
    result = train(config, single_label_data(), tmp_path, Recorder(), base_models_dir=base_models_dir)

    before, after = _weights(base_models_dir / TINY), _weights(result.model_dir)
    key = "bert.embeddings.word_embeddings.weight"
    assert np.array_equal(before[key], after[key]) is freeze
    layer = "bert.encoder.layer.0.attention.self.query.weight"
    assert not np.array_equal(before[layer], after[layer])
    assert result.hyperparameters["freeze_embeddings"] is freeze
    assert result.hyperparameters["reasons"]["freeze_embeddings"] == "requested"
    assert isinstance(result.hyperparameters["fused_optimizer"], bool)


def test_auto_freeze_follows_the_embedding_share_and_the_device() -> None:
    import torch

    from aiaas.training import components

    def model(vocab: int) -> torch.nn.Module:
        m = torch.nn.Module()
        m.emb = torch.nn.Embedding(vocab, 8)
        m.body = torch.nn.Linear(8, 100)  # 900 parameters
        m.get_input_embeddings = lambda: m.emb
        return m

    auto = TrainConfig(base_model=TINY)
    big, small = model(300), model(50)  # 2400 of 3300 parameters; 400 of 1300
    assert components.freeze_embeddings(auto, big, "cpu")[0] is True
    assert big.emb.weight.requires_grad is False
    assert components.freeze_embeddings(auto, small, "cpu")[0] is False
    assert small.emb.weight.requires_grad is True
    frozen, why = components.freeze_embeddings(auto, model(300), "cuda")
    assert frozen is False and "cuda" in why
    with pytest.raises(AiaasError):
        TrainConfig(base_model=TINY, freeze_embeddings="yes")  # type: ignore[arg-type]


def test_fused_adamw_is_used_where_torch_has_it() -> None:
    import torch

    from aiaas.training import components

    m = torch.nn.Linear(4, 2)
    opt, fused = components.optimizer(m, TrainConfig(base_model=TINY), 1e-3, "cpu")
    assert fused is True  # torch 2.13 has a fused CPU AdamW for fp32
    assert opt.defaults["fused"] is True
    plain, fused = components.optimizer(m, TrainConfig(base_model=TINY), 1e-3, "cpu", fused=False)
    assert fused is False and not plain.defaults["fused"]


def test_auto_checkpoint_cadence_is_throttled_in_time(
    tmp_path: Path, base_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiaas.training import loop

    data = single_label_data()  # 64 examples, batch 16: 4 steps per epoch
    config = TrainConfig(base_model=TINY, n_epochs=3, **FAST)
    quick = Recorder()
    train(config, data, tmp_path / "a", quick, base_models_dir=base_models_dir)
    # A run shorter than PERIODIC_MIN_SECONDS saves at epoch ends only.
    assert [step for step, _, _ in quick.checkpoints] == [4, 8, 12]

    monkeypatch.setattr(loop, "PERIODIC_MIN_SECONDS", 0.0)
    every = Recorder()
    train(config, data, tmp_path / "b", every, base_models_dir=base_models_dir)
    steps = [step for step, _, _ in every.checkpoints]
    assert set(steps) > {4, 8, 12} and all(1 <= s <= 12 for s in steps)
