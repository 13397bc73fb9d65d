"""tfidf-linear's cost in rows: the candidates are compared on a bounded sample of the training rows,
the choice is fitted again on all of them (its strength searched again there until the metric turns),
and the fits run on one BLAS/OpenMP thread unless the config asks for more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aiaas.training import TrainConfig, classical, classical_train
from aiaas.training.classical_train import search_sample, train_classical
from tests.training.conftest import Recorder, single_label_data
from tests.training.test_classical_search import _export_and_serve

SINGLE = "single_label_classification"


def test_no_sample_up_to_the_limit_then_a_seeded_stratified_one(monkeypatch) -> None:
    monkeypatch.setattr(classical_train, "SEARCH_SAMPLE_ROWS", 100)
    assert search_sample(SINGLE, np.zeros(100, dtype=np.int64), seed=0) is None
    # 900 rows of class 0, 95 of class 1, 5 of class 2.
    y = np.array([0] * 900 + [1] * 95 + [2] * 5)
    sample = search_sample(SINGLE, y, seed=3)
    assert sample is not None and len(set(sample.tolist())) == len(sample)
    counts = np.bincount(y[sample], minlength=3)
    assert counts[0] == 90 and counts[1] == classical_train.MIN_SAMPLE_PER_CLASS and counts[2] == 5
    assert np.array_equal(sample, search_sample(SINGLE, y, seed=3))
    assert not np.array_equal(sample, search_sample(SINGLE, y, seed=4))
    regression = search_sample("regression", np.linspace(0, 1, 1000), seed=0)
    assert regression is not None and len(regression) == 100


def test_candidates_compared_on_the_sample_and_the_choice_refit_on_all_rows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(classical_train, "SEARCH_SAMPLE_ROWS", 30)
    data = single_label_data(n_train=120, n_val=40)
    rec = Recorder()
    result = train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY), data, tmp_path / "t", rec)
    evals = rec.metrics_events()
    search = [e for e in evals if not e.get("refit")]
    refit = [e for e in evals if e.get("refit")]
    sample_rows = result.hyperparameters["search_rows"]
    assert 30 <= sample_rows < 120 and {e["train_rows"] for e in search} == {sample_rows}
    assert len({(e["features"], e["weighting"]) for e in search}) > 1  # every candidate, on the sample
    assert refit and {e["train_rows"] for e in refit} == {120}
    assert {(e["features"], e["weighting"]) for e in refit} == {
        (result.hyperparameters["ngram_blocks"], result.hyperparameters["weighting"])}
    assert result.hyperparameters["C"] in {e["C"] for e in refit}
    assert len(result.history) == len(evals) == result.steps
    _export_and_serve(result, data, tmp_path / "onnx")


def test_the_refit_follows_the_metric_past_the_edge_on_all_rows(tmp_path: Path, monkeypatch) -> None:
    """A metric that peaks at C = 16 on the sample and at C = 256 on all rows: the refit starts next to
    the sample's 16 (4, 16, 64), goes on while the edge wins, sees it turn at 1024 and keeps 256."""
    monkeypatch.setattr(classical_train, "SEARCH_SAMPLE_ROWS", 30)
    monkeypatch.setattr(classical_train, "WEIGHTINGS", ("tfidf",))
    real_fit, real_score = classical_train.fit_head, classical_train.score
    seen: list[tuple[float, int]] = []

    def fit_head(*args, **kwargs):
        seen.append((args[4], args[1].shape[0]))
        return real_fit(*args, **kwargs)

    def score(task, logits, y, labels):
        out = real_score(task, logits, y, labels)
        strength, rows = seen[-1]
        out["macro_f1"] = 1.0 - abs(np.log(strength / (256.0 if rows == 120 else 16.0))) / 10
        return out

    monkeypatch.setattr(classical_train, "fit_head", fit_head)
    monkeypatch.setattr(classical_train, "score", score)
    rec = Recorder()
    result = train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY),
                             single_label_data(n_train=120, n_val=40), tmp_path, rec)  # fmt: skip
    assert [c for c, rows in seen if rows == 120] == [4.0, 16.0, 64.0, 256.0, 1024.0]
    assert result.hyperparameters["C"] == 256.0


@pytest.mark.parametrize(("asked", "expected"), [(None, 1), (2, 2)])
def test_fits_run_on_the_threads_asked_one_by_default(tmp_path: Path, monkeypatch, asked, expected) -> None:
    from threadpoolctl import threadpool_info

    real_fit = classical_train.fit_head
    pools: list[set[int]] = []

    def fit_head(*args, **kwargs):
        pools.append({pool["num_threads"] for pool in threadpool_info()})
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(classical_train, "fit_head", fit_head)
    result = train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY, num_threads=asked),
                             single_label_data(), tmp_path, Recorder())  # fmt: skip
    assert pools and all(p == {expected} for p in pools), pools
    assert result.hyperparameters["num_threads"] == expected
