"""The engine on a CUDA GPU: autocast precision, nothing frozen, fused AdamW, a CPU-loadable model.

Skipped where torch sees no GPU (CI here); run on a GPU host with
`python -m pytest tests/training/test_cuda.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiaas.training import TrainConfig, train
from tests.training.conftest import TINY, Recorder, single_label_data

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to torch")


@pytest.mark.parametrize("precision", ["auto", "fp32"])
def test_trains_on_the_gpu_and_learns(tmp_path: Path, base_models_dir: Path, precision: str) -> None:
    config = TrainConfig(
        base_model=TINY, n_epochs=12, learning_rate=3e-3, early_stopping_patience=None, precision=precision
    )
    result = train(config, single_label_data(), tmp_path, Recorder(), base_models_dir=base_models_dir)

    hp = result.hyperparameters
    assert hp["device"] == "cuda"
    expected = "bf16" if precision == "auto" and torch.cuda.is_bf16_supported() else "fp32"
    assert hp["precision"] == expected
    assert hp["freeze_embeddings"] is False and "cuda" in hp["reasons"]["freeze_embeddings"]
    assert hp["fused_optimizer"] is True
    assert result.metrics["accuracy"] >= 0.9
    assert np.isfinite(result.history[-1]["valid_loss"])

    # The saved model is plain fp32 weights that a CPU-only host can load.
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir))
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
