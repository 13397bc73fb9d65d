"""One multi-label rule for every route: probability >= threshold; the card's thresholds, else the
artifact's, else 0.5 (as training scores them, training/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.core.errors import InvalidRequest
from aiaas.serving.interface import MULTI_LABEL, REGRESSION, SINGLE_LABEL, ModelInfo
from aiaas.services.inference import shaping

LABELS = ("billing", "bug", "praise")


def multi(thresholds=None) -> ModelInfo:
    return ModelInfo(task=MULTI_LABEL, labels=LABELS, thresholds=thresholds)


def native_sets(info, rows, card=None) -> list[list[str]]:
    return [r["labels"] for r in shaping.classification_results(info, rows, top_k=None, thresholds=card)]


def oip_sets(info, rows, card=None) -> list[list[str]]:
    label = shaping.output_tensors(MULTI_LABEL, info, rows, card)[0]
    return [s.decode().split("|") if s else [] for s in label.data]


@pytest.mark.parametrize("sets", [native_sets, oip_sets])
def test_a_score_equal_to_its_threshold_is_chosen(sets):
    rows = np.array([[0.5, 0.49999, 0.9]], dtype=np.float32)
    assert sets(multi(), rows) == [["billing", "praise"]]


@pytest.mark.parametrize("sets", [native_sets, oip_sets])
def test_card_thresholds_win_over_the_artifacts(sets):
    rows = np.array([[0.3, 0.3, 0.3], [0.7, 0.7, 0.7]], dtype=np.float32)
    artifact = multi(thresholds=(0.8, 0.8, 0.8))
    assert sets(artifact, rows) == [[], []]
    assert sets(artifact, rows, card=(0.3, 0.9, 0.6)) == [["billing"], ["billing", "praise"]]


def test_both_routes_choose_the_same_labels_on_random_scores():
    rng = np.random.default_rng(0)
    rows = rng.random((200, 3)).astype(np.float32)
    rows[::7] = 0.25  # exact ties with a threshold below
    for info, card in ((multi(), None), (multi((0.25, 0.5, 0.75)), None), (multi(), (0.25, 0.6, 0.1))):
        assert native_sets(info, rows, card) == oip_sets(info, rows, card)


def test_a_threshold_list_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
        native_sets(multi(), np.zeros((1, 3), dtype=np.float32), card=(0.5, 0.5))


def test_single_label_and_regression_shapes():
    info = ModelInfo(task=SINGLE_LABEL, labels=("neg", "pos"))
    out = shaping.classification_results(info, np.array([[0.2, 0.8]], dtype=np.float32), top_k=1)
    assert out[0]["label"] == "pos" and [s["label"] for s in out[0]["scores"]] == ["pos"]
    reg = ModelInfo(task=REGRESSION)
    assert shaping.classification_results(reg, np.array([[2.5]], dtype=np.float32), top_k=None) == [{"value": 2.5}]
    tensors = shaping.output_tensors(REGRESSION, reg, np.array([[2.5]], dtype=np.float32))
    assert [t.name for t in tensors] == ["value"]


def test_trim_embeddings():
    vectors = np.ones((2, 4), dtype=np.float32) / 2
    assert np.allclose(np.linalg.norm(shaping.trim_embeddings(vectors, 2), axis=1), 1)
    assert shaping.trim_embeddings(vectors, None) is vectors
    with pytest.raises(InvalidRequest):
        shaping.trim_embeddings(vectors, 5)
