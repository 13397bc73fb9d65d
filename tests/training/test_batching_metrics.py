"""Length-grouped batches, dynamic padding, and the metric helpers."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.training import batching, metrics


def test_epoch_batches_cover_each_example_once_and_replay_exactly() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    batches = batching.epoch_batches(lengths, 16, seed=42, epoch=3)
    assert len(batches) == int(np.ceil(1000 / 16))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    again = batching.epoch_batches(lengths, 16, seed=42, epoch=3)
    assert all((a == b).all() for a, b in zip(batches, again, strict=True))
    other = batching.epoch_batches(lengths, 16, seed=42, epoch=4)
    assert any((a != b).any() if len(a) == len(b) else True for a, b in zip(batches, other, strict=True))


def test_length_grouping_cuts_padding() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 120, size=2000)
    grouped = batching.epoch_batches(lengths, 32, seed=0, epoch=0)
    shuffled = np.array_split(rng.permutation(2000), len(grouped))

    def padded_tokens(batches: list[np.ndarray]) -> int:
        return sum(len(b) * lengths[b].max() for b in batches)

    real = int(lengths.sum())
    assert padded_tokens(grouped) < 1.1 * real < 1.5 * real < padded_tokens(shuffled)
    # Batch order is shuffled too, not longest-first.
    maxima = [lengths[b].max() for b in grouped]
    assert maxima != sorted(maxima, reverse=True)


def test_collate_pads_to_the_longest_row() -> None:
    ids, mask, real = batching.collate([[1, 2, 3], [4], [5, 6]], np.array([0, 1]), pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert real == 4


def test_single_label_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    y = np.array([0, 1, 1, 1])
    m = metrics.single_label(logits, y, ["a", "b"])
    assert m["accuracy"] == 0.75
    assert m["confusion_matrix"] == [[1, 0], [1, 2]]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert m["per_label"]["b"]["recall"] == pytest.approx(2 / 3)


def test_multi_label_thresholds_are_tuned_per_label() -> None:
    # Label 0 separates at ~0.3, label 1 at ~0.8: one global 0.5 would get both wrong.
    probs = np.array([[0.35, 0.9], [0.32, 0.7], [0.1, 0.85], [0.2, 0.6]])
    y = np.array([[1, 1], [1, 0], [0, 1], [0, 0]], dtype=np.float32)
    m = metrics.multi_label(probs, y, ["x", "y"])
    assert m["micro_f1"] == 1.0 and m["accuracy"] == 1.0
    assert 0.2 < m["thresholds"]["x"] <= 0.32 and 0.7 < m["thresholds"]["y"] <= 0.85


def test_regression_metrics() -> None:
    m = metrics.regression(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / (78 / 9))  # residual SS 4; total SS around the mean 8/3


def test_selection_prefers_metric_then_lower_loss() -> None:
    task = "single_label_classification"
    assert metrics.selection_score(task, {"macro_f1": 0.9, "valid_loss": 0.5}) > metrics.selection_score(
        task, {"macro_f1": 0.8, "valid_loss": 0.1}
    )
    assert metrics.selection_score(task, {"macro_f1": 1.0, "valid_loss": 0.1}) > metrics.selection_score(
        task, {"macro_f1": 1.0, "valid_loss": 0.2}
    )
    assert metrics.selection_score("regression", {"rmse": 1.0}) > metrics.selection_score(
        "regression", {"rmse": 2.0}
    )


def test_evaluation_batches_fill_a_token_budget_and_cover_every_row_once() -> None:
    lengths = np.array([5] * 100 + [100] * 10 + [30] * 40)
    plain = batching.sequential_batches(lengths, 8)
    assert all(len(b) <= 8 for b in plain)

    budget = batching.sequential_batches(lengths, 8, max_tokens=400)
    assert sorted(np.concatenate(budget).tolist()) == list(range(len(lengths)))
    assert all(len(b) >= 8 for b in budget[:-1])  # never below the plain batch size, except the tail
    assert all(len(b) <= 8 or len(b) * lengths[b].max() <= 400 for b in budget)
    # Long rows keep the plain size; short rows come in batches as big as the budget allows.
    assert len(budget[0]) == 8 and lengths[budget[0]].max() == 100
    assert max(len(b) for b in budget) == 80  # 400 tokens / 5
    assert len(budget) < len(plain)
