"""auto measures the base tokenizer's [UNK] rate on the training texts and skips the transformer
when the base model cannot read them; events and the recorded selection say why."""

from __future__ import annotations

import json
from pathlib import Path

from aiaas.training import TrainConfig, families, readability
from tests.training.conftest import SPLIT, TINY, Recorder, single_label_data
from tests.training.test_classical import chinese_data

FAST = {"n_epochs": 2, "learning_rate": 3e-3, "early_stopping_patience": None, "precision": "fp32"}


def test_unk_rate_is_high_for_chinese_and_low_for_the_vocabularys_english(base_models_dir: Path) -> None:
    chinese = readability.unk_rate(TINY, [ex.text for ex in chinese_data().train], base_models_dir)
    english = readability.unk_rate(TINY, [ex.text for ex in single_label_data().train], base_models_dir)
    assert chinese["unk_rate"] > 0.5 and chinese["tokens"] > 0
    assert english["unk_rate"] < 0.01


def test_auto_skips_the_transformer_on_text_its_vocabulary_cannot_read(
    tmp_path: Path, base_models_dir: Path
) -> None:
    rec = Recorder()
    config = TrainConfig(base_model=TINY, **FAST)
    result = families.train_family(
        "auto", config, chinese_data(), tmp_path, rec, base_models_dir=base_models_dir, time_budget_s=600,
        kfold=SPLIT,
    )
    assert result.family == "tfidf-linear" and result.selection is not None
    transformer = result.selection["candidates"]["transformer"]
    assert transformer["status"] == "skipped" and "[UNK]" in transformer["reason"]
    assert result.selection["transformer_plan"]["readability"]["unk_rate"] > readability.UNK_SKIP
    assert not (tmp_path / "transformer").exists()  # no budget spent on it
    assert any("skipped" in e["message"] and "[UNK]" in e["message"] for e in rec.events)
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert "[UNK]" in meta["model_selection"]["candidates"]["transformer"]["reason"]


def test_auto_still_trains_the_transformer_on_text_it_reads(tmp_path: Path, base_models_dir: Path) -> None:
    config = TrainConfig(base_model=TINY, **FAST)
    result = families.train_family(
        "auto",
        config,
        single_label_data(),
        tmp_path,
        Recorder(),
        base_models_dir=base_models_dir,
        time_budget_s=600, kfold=SPLIT,
    )
    assert result.selection is not None
    assert result.selection["candidates"]["transformer"]["status"] == "trained"
    assert result.selection["transformer_plan"]["readability"]["unk_rate"] < readability.UNK_SKIP
