"""Frozen, cached lower layers (TrainConfig.freeze_layers; aiaas.training.frozen_prefix)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import InvalidRequest
from aiaas.training import TrainConfig, TrainingStopped, frozen_prefix, train
from aiaas.training import checkpoints as ck
from tests.training.conftest import TINY, Recorder, single_label_data

FAST = {"learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32", "batch_size": 8}


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def _tiny_model(base_models_dir: Path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = base_models_dir / TINY
    model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=2)
    return model, AutoTokenizer.from_pretrained(str(path))


def test_frozen_layers_keep_the_base_weights_and_the_rest_trains(
    tmp_path: Path, base_models_dir: Path
) -> None:
    import torch

    rec = Recorder()
    config = TrainConfig(base_model=TINY, n_epochs=2, freeze_layers=1, **FAST)
    result = train(config, single_label_data(32, 16), tmp_path, rec, base_models_dir=base_models_dir)

    assert result.hyperparameters["freeze_layers"] == 1
    assert result.hyperparameters["reasons"]["freeze_layers"] == "requested"
    assert any(e["data"] and e["data"].get("cached") is True for e in rec.events)
    before, after = _weights(base_models_dir / TINY), _weights(result.model_dir)
    frozen = [n for n in after if ".embeddings." in n or ".encoder.layer.0." in n]
    trained = [n for n in after if ".encoder.layer.1." in n]
    assert frozen and trained
    for name in frozen:
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0, msg=name)
    assert any(not torch.equal(after[n], before[n]) for n in trained)


def test_steps_run_only_the_upper_layers(tmp_path: Path, base_models_dir: Path, monkeypatch) -> None:
    """Layer 0 runs once per cache batch, not once per step and evaluation batch."""
    calls = {"lower": 0, "upper": 0}
    real_setup = frozen_prefix.setup

    def counting_setup(model, *args, **kwargs):
        layers = frozen_prefix.encoder_parts(model)[1]
        layers[0].register_forward_hook(lambda *_: calls.__setitem__("lower", calls["lower"] + 1))
        layers[1].register_forward_hook(lambda *_: calls.__setitem__("upper", calls["upper"] + 1))
        prefix = real_setup(model, *args, **kwargs)
        calls["after_cache"] = calls["lower"]
        return prefix

    monkeypatch.setattr(frozen_prefix, "setup", counting_setup)
    config = TrainConfig(base_model=TINY, n_epochs=3, freeze_layers=1, **FAST)
    result = train(config, single_label_data(32, 16), tmp_path, Recorder(), base_models_dir=base_models_dir)

    assert result.steps == 12
    assert calls["lower"] == calls["after_cache"] <= 4  # 48 short texts: a batch or two per split
    assert calls["upper"] >= result.steps + 3  # every step, and each epoch's evaluation


def test_cached_path_gives_the_full_models_logits(base_models_dir: Path) -> None:
    import torch

    from aiaas.training import batching

    model, tok = _tiny_model(base_models_dir)
    model.eval()
    texts = [ex.text for ex in single_label_data(20, 0).train]
    encoded = batching.Encoded(batching.tokenize(tok, texts, 128), np.zeros(len(texts), dtype=np.int64))
    prefix = frozen_prefix.FrozenPrefix(model, 1)
    prefix.build("train", encoded, tok.pad_token_id, "cpu", "fp32", lambda: None)
    index = np.arange(len(texts))
    ids, mask, _ = batching.collate(encoded.input_ids, index, tok.pad_token_id)
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        cached = prefix.logits("train", index, "cpu")
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-4)
    # The model is whole again after the call: its own forward still runs every layer.
    assert len(model.base_model.encoder.layer) == 2
    assert not isinstance(model.base_model.embeddings, type(prefix.pass_through))


@pytest.mark.parametrize("stop_at", [8, 12])  # mid-epoch, and exactly at an epoch end
def test_resume_with_frozen_layers_matches_an_uninterrupted_run(
    tmp_path: Path, base_models_dir: Path, stop_at: int
) -> None:
    import torch

    data = single_label_data(48, 16)
    config = TrainConfig(base_model=TINY, n_epochs=3, checkpoint_every_steps=4, freeze_layers=1, **FAST)
    straight = train(config, data, tmp_path / "a", Recorder(), base_models_dir=base_models_dir)
    with pytest.raises(TrainingStopped):
        stopping = Recorder(stop_after_checkpoint=stop_at)
        train(config, data, tmp_path / "b", stopping, base_models_dir=base_models_dir)
    assert ck.latest_checkpoint(tmp_path / "b" / "checkpoints").name == f"step-{stop_at}"
    rec = Recorder()
    resumed = train(config, data, tmp_path / "b", rec, base_models_dir=base_models_dir)

    assert any(f"Resumed from checkpoint at step {stop_at}" in e["message"] for e in rec.events)
    assert resumed.steps == straight.steps == 18
    assert resumed.trained_tokens == straight.trained_tokens
    assert resumed.metrics["valid_loss"] == pytest.approx(straight.metrics["valid_loss"], abs=1e-5)
    a, b = _weights(straight.model_dir), _weights(resumed.model_dir)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_resume_refuses_another_freeze_layers(tmp_path: Path, base_models_dir: Path) -> None:
    from aiaas.core.errors import Conflict

    data = single_label_data(48, 16)
    config = TrainConfig(base_model=TINY, n_epochs=3, checkpoint_every_steps=4, freeze_layers=1, **FAST)
    with pytest.raises(TrainingStopped):
        train(config, data, tmp_path, Recorder(stop_after_checkpoint=4), base_models_dir=base_models_dir)
    other = TrainConfig(base_model=TINY, n_epochs=3, checkpoint_every_steps=4, freeze_layers=0, **FAST)
    with pytest.raises(Conflict, match="freeze_layers"):
        train(other, data, tmp_path, Recorder(), base_models_dir=base_models_dir)


def test_the_final_model_is_a_whole_hf_model_that_predicts_as_evaluated(
    tmp_path: Path, base_models_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = single_label_data(40, 24)
    config = TrainConfig(base_model=TINY, n_epochs=3, freeze_layers=1, **FAST)
    result = train(config, data, tmp_path, Recorder(), base_models_dir=base_models_dir)

    assert _weights(result.model_dir).keys() == _weights(base_models_dir / TINY).keys() | {
        "classifier.weight",
        "classifier.bias",
    }
    model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(result.model_dir))
    batch = tok([ex.text for ex in data.validation], padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(**batch).logits.argmax(-1).numpy()
    labels = [model.config.id2label[int(i)] for i in pred]
    accuracy = np.mean([p == ex.label for p, ex in zip(labels, data.validation, strict=True)])
    # The evaluation ran on cached states; the saved model, run whole, agrees with it.
    assert accuracy == pytest.approx(result.metrics["accuracy"])


def test_above_the_memory_cap_layers_are_frozen_without_the_cache(
    tmp_path: Path, base_models_dir: Path, monkeypatch
) -> None:
    import torch

    monkeypatch.setattr(frozen_prefix, "CACHE_LIMIT_BYTES", 1024)
    rec = Recorder()
    config = TrainConfig(base_model=TINY, n_epochs=2, freeze_layers=1, **FAST)
    result = train(config, single_label_data(32, 16), tmp_path, rec, base_models_dir=base_models_dir)

    warning = [e for e in rec.events if e["level"] == "warning" and "not cached" in e["message"]]
    assert warning and warning[0]["data"]["cached"] is False
    before, after = _weights(base_models_dir / TINY), _weights(result.model_dir)
    for name in (n for n in after if ".encoder.layer.0." in n or ".embeddings." in n):
        torch.testing.assert_close(after[name], before[name], atol=0, rtol=0, msg=name)
    assert np.isfinite(result.metrics["valid_loss"])


@pytest.mark.parametrize("value", [-1, 49, True, "3", 2.0])
def test_config_refuses_a_bad_freeze_layers(value) -> None:
    with pytest.raises(InvalidRequest) as err:
        TrainConfig(base_model=TINY, freeze_layers=value)
    assert err.value.code == "invalid_request" and err.value.param == "freeze_layers"
    assert "freeze_layers must be 'auto' or an integer from 0 to 48" in str(err.value)


def test_more_frozen_layers_than_the_model_has_is_refused(tmp_path: Path, base_models_dir: Path) -> None:
    data = single_label_data(16, 8)
    with pytest.raises(InvalidRequest, match="has 2 encoder layers") as err:
        train(TrainConfig(base_model=TINY, freeze_layers=3, **FAST), data, tmp_path, Recorder(),
              base_models_dir=base_models_dir)  # fmt: skip
    assert err.value.param == "freeze_layers"
    with pytest.raises(InvalidRequest, match="reinit_layers=1") as err:
        train(TrainConfig(base_model=TINY, freeze_layers=2, reinit_layers=1, **FAST), data, tmp_path / "b",
              Recorder(), base_models_dir=base_models_dir)  # fmt: skip
    assert err.value.param == "freeze_layers"


def test_auto_freezes_half_of_a_measured_depth_and_nothing_elsewhere(base_models_dir: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    auto = TrainConfig(base_model=TINY)

    def bert(layers: int):
        cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                         intermediate_size=32)  # fmt: skip
        return BertForSequenceClassification(cfg)

    k, why = frozen_prefix.resolve(auto, bert(6), reinit_layers=0)
    assert k == 3 and why.startswith("auto")
    assert frozen_prefix.resolve(auto, bert(6), reinit_layers=4)[0] == 2
    k, why = frozen_prefix.resolve(auto, bert(2), reinit_layers=0)
    assert k == 0 and "not measured" in why

    class Other(torch.nn.Module):  # no BERT-shaped encoder
        config = None

    k, why = frozen_prefix.resolve(auto, Other(), reinit_layers=0)
    assert k == 0 and "Other" in why
    with pytest.raises(InvalidRequest, match="BERT-shaped"):
        frozen_prefix.resolve(TrainConfig(base_model=TINY, freeze_layers=1), Other(), reinit_layers=0)


def test_regression_with_frozen_layers_predicts_in_user_units(tmp_path: Path, base_models_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests.training.conftest import regression_data

    data = regression_data()
    config = TrainConfig(base_model=TINY, task="regression", n_epochs=8, freeze_layers=1, **FAST)
    result = train(config, data, tmp_path, Recorder(), base_models_dir=base_models_dir)

    targets = np.array([ex.label for ex in data.validation])
    model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir)).eval()
    tok = AutoTokenizer.from_pretrained(str(result.model_dir))
    batch = tok([ex.text for ex in data.validation], padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(**batch).logits[:, 0].numpy()
    # The cached evaluation's rmse is the saved (whole, scale-folded) model's.
    assert np.sqrt(((pred - targets) ** 2).mean()) == pytest.approx(result.metrics["rmse"], rel=1e-3)
