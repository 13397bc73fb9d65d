"""The accuracy guard's decision, with numbers."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.serving.agreement import guard_decision


def _probs(winners: list[int], n_classes: int = 3) -> np.ndarray:
    out = np.full((len(winners), n_classes), 0.1)
    out[np.arange(len(winners)), winners] = 0.8
    return out


def test_single_label_needs_99_percent_argmax_agreement():
    ref = _probs([0, 1, 2] * 100 + [0])  # 301 texts
    flipped = [0, 1, 2] * 100 + [0]
    for i in range(3):  # 3 of 301 flipped: 99.0% agree -> accepted
        flipped[i] = (flipped[i] + 1) % 3
    ok = guard_decision(task="single_label_classification", reference=ref, candidate=_probs(flipped))
    assert ok.accepted and ok.agreement == pytest.approx(298 / 301, abs=1e-6)
    flipped[3] = (flipped[3] + 1) % 3  # a 4th flip: 98.7% -> rejected
    bad = guard_decision(task="single_label_classification", reference=ref, candidate=_probs(flipped))
    assert not bad.accepted and "98.67%" in bad.reason


def test_accuracy_drop_over_half_a_point_rejects_even_with_high_agreement():
    truth = [0] * 1000
    ref = _probs([0] * 1000)
    cand_winners = [0] * 1000
    for i in range(6):  # 99.4% agreement, but every flip was a correct answer: -0.6 pt
        cand_winners[i] = 1
    decision = guard_decision(
        task="single_label_classification", reference=ref, candidate=_probs(cand_winners), labels=truth
    )
    assert decision.agreement == pytest.approx(0.994)
    assert not decision.accepted and "loses 0.60 accuracy points" in decision.reason
    assert decision.accuracy_reference == 100.0 and decision.accuracy_candidate == 99.4
    # The same flips on texts fp32 got wrong cost nothing: accepted.
    truth_wrong = [1] * 6 + [0] * 994
    ok = guard_decision(
        task="single_label_classification", reference=ref, candidate=_probs(cand_winners), labels=truth_wrong
    )
    assert ok.accepted and ok.accuracy_candidate > ok.accuracy_reference


def test_labels_may_be_names_or_indices():
    ref = _probs([0, 1, 2])
    by_name = guard_decision(
        task="single_label_classification",
        reference=ref,
        candidate=ref,
        labels=["a", "b", "c"],
        label_names=["a", "b", "c"],
    )
    by_index = guard_decision(
        task="single_label_classification", reference=ref, candidate=ref, labels=[0, 1, 2]
    )
    assert by_name.accuracy_reference == by_index.accuracy_reference == 100.0
    with pytest.raises(ValueError, match="unknown label"):
        guard_decision(
            task="single_label_classification",
            reference=ref,
            candidate=ref,
            labels=["a", "b", "zzz"],
            label_names=["a", "b", "c"],
        )


def test_multi_label_compares_label_sets_after_thresholds():
    ref = np.array([[0.9, 0.45, 0.2], [0.1, 0.55, 0.7]])
    cand = np.array([[0.88, 0.47, 0.1], [0.2, 0.52, 0.71]])
    # With the default 0.5, sets agree; a per-label threshold of 0.46 splits text 0.
    assert guard_decision(task="multi_label_classification", reference=ref, candidate=cand).accepted
    split = guard_decision(
        task="multi_label_classification", reference=ref, candidate=cand, thresholds=[0.5, 0.46, 0.5]
    )
    assert not split.accepted and split.agreement == 0.5
    hot = guard_decision(
        task="multi_label_classification",
        reference=ref,
        candidate=cand,
        labels=[[1, 0, 0], ["b", "c"]],
        label_names=["a", "b", "c"],
    )
    assert hot.accuracy_reference == 100.0


def test_regression_and_embeddings():
    ref = np.linspace(0, 10, 100).reshape(-1, 1)
    close = guard_decision(task="regression", reference=ref, candidate=ref + 0.05, labels=ref.ravel())
    assert close.accepted and close.accuracy_reference == 100.0
    far = guard_decision(task="regression", reference=ref, candidate=ref + 0.5)
    assert not far.accepted

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(50, 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    noisy = emb + rng.normal(scale=0.01, size=emb.shape)
    assert guard_decision(task="embedding", reference=emb, candidate=noisy).accepted
    wrecked = emb + rng.normal(scale=0.3, size=emb.shape)
    assert not guard_decision(task="embedding", reference=emb, candidate=wrecked).accepted


def test_degenerate_inputs():
    empty = np.zeros((0, 2))
    assert not guard_decision(task="single_label_classification", reference=empty, candidate=empty).accepted
    with pytest.raises(ValueError, match="shape"):
        guard_decision(
            task="single_label_classification", reference=np.zeros((2, 2)), candidate=np.zeros((2, 3))
        )
    with pytest.raises(ValueError, match="unknown task"):
        guard_decision(task="ranking", reference=np.zeros((1, 1)), candidate=np.zeros((1, 1)))
