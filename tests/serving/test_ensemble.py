"""An ensemble artifact through the serving runtime: `load_predictor` hands it to serving/ensemble.py,
and the in-process runtime (what every inference route calls) answers one request with one answer:
the weighted average of its members' served scores."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import InvalidFile
from aiaas.registry.export import export_classical_model
from aiaas.serving.ensemble import EnsemblePredictor
from aiaas.serving.interface import ModelRef
from aiaas.serving.local import LocalRuntime
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig
from aiaas.training.classical_train import train_classical
from tests.serving.artifacts import word_soup
from tests.training.conftest import Example, PreparedData, Recorder

LABELS = ["refund", "bug", "other"]  # the single_label fixture's labels, in its order
WEIGHT = 0.3


@pytest.fixture(scope="module")
def ensemble_artifact(single_label, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny-BERT member (the session's single-label artifact) and a tfidf-linear member trained here."""
    root = tmp_path_factory.mktemp("ensemble")
    rng = random.Random(0)
    words = {"refund": "refund money back", "bug": "crash error broken", "other": "hello thanks weather"}

    def make(n: int) -> list[Example]:
        return [Example(f"{words[label]} {rng.choice(['a', 'the', 'my'])}", label)
                for label in (rng.choice(LABELS) for _ in range(n))]  # fmt: skip

    data = PreparedData("single_label_classification", make(60), make(30), LABELS)
    result = train_classical(TrainConfig(task=data.task, base_model="tfidf-linear"), data, root / "t", Recorder())
    artifact = root / "artifact"
    shutil.copytree(single_label[1], artifact / "transformer")
    export_classical_model(result.model_dir, artifact / "tfidf-linear")
    meta = {"family": "ensemble", "task": data.task, "labels": LABELS, "max_length": 32, "weight": WEIGHT,
            "members": {"transformer": {"dir": "transformer", "weight": WEIGHT},
                        "tfidf-linear": {"dir": "tfidf-linear", "weight": 1 - WEIGHT}},
            "runtime": {"family": "ensemble"}}  # fmt: skip
    (artifact / "aiaas.json").write_text(json.dumps(meta))
    return artifact


def _members(artifact: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    texts = word_soup(12, seed=4) + ["refund money back", "crash error broken"]
    a = load_predictor(artifact / "transformer")
    b = load_predictor(artifact / "tfidf-linear")
    try:
        return a.predict(texts), b.predict(texts), texts
    finally:
        a.close()
        b.close()


def test_load_predictor_serves_the_weighted_average(ensemble_artifact: Path) -> None:
    a, b, texts = _members(ensemble_artifact)
    served = load_predictor(ensemble_artifact)
    try:
        assert isinstance(served, EnsemblePredictor) and served.info.family == "ensemble"
        assert served.labels == LABELS and served.model_file.startswith("transformer/")
        got = served.predict(texts)
        np.testing.assert_allclose(got, WEIGHT * a + (1 - WEIGHT) * b, atol=1e-6)
        assert not np.allclose(got, a, atol=1e-3) and not np.allclose(got, b, atol=1e-3)  # really a mix
        assert served.memory_bytes > 0 and not served.closed
    finally:
        served.close()
    assert served.closed


async def test_the_in_process_runtime_answers_one_request_with_one_answer(ensemble_artifact: Path) -> None:
    a, b, texts = _members(ensemble_artifact)
    runtime = LocalRuntime(lambda uri: load_predictor(Path(uri)), threads=2, memory_budget_bytes=1 << 30,
                           idle_unload_s=None)  # fmt: skip
    try:
        ref = ModelRef(str(ensemble_artifact))
        out = await runtime.predict(ref, texts)
        assert out.info.family == "ensemble" and out.rows.shape == (len(texts), len(LABELS))
        # Batched in length buckets (other padding than one call): float32 rounding apart, the same.
        np.testing.assert_allclose(out.rows, WEIGHT * a + (1 - WEIGHT) * b, atol=1e-4)
        assert (out.rows.argmax(1) == (WEIGHT * a + (1 - WEIGHT) * b).argmax(1)).all()
        assert out.tokens > 0  # counted by the transformer member, as usage is metered
        emb = await runtime.embed(ref, texts[:3])  # embeddings come from the transformer member
        assert emb.rows.shape[0] == 3
        np.testing.assert_allclose(np.linalg.norm(emb.rows, axis=1), 1.0, atol=1e-4)
    finally:
        await runtime.aclose()


def test_a_broken_ensemble_is_a_clear_error(ensemble_artifact: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(ensemble_artifact, bad)
    meta = json.loads((bad / "aiaas.json").read_text())
    (bad / "aiaas.json").write_text(json.dumps({**meta, "weight": 1.5}))
    with pytest.raises(InvalidFile, match="weight"):
        load_predictor(bad)
    (bad / "aiaas.json").write_text(json.dumps({**meta, "labels": ["x", "y", "z"]}))
    with pytest.raises(InvalidFile, match="other labels"):
        load_predictor(bad)
    shutil.rmtree(bad / "tfidf-linear")
    (bad / "aiaas.json").write_text(json.dumps(meta))
    with pytest.raises(InvalidFile):
        load_predictor(bad)
