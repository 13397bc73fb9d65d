"""The tfidf-linear search: the strength grid goes past its edge until the metric turns, NB-weighted
features (NBSVM) and word vs character n-grams are candidates chosen on validation, and the chosen
head is calibrated; every choice exports to ONNX and serves the training labels."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aiaas.registry.export import export_classical_model
from aiaas.serving.runtime import load_predictor
from aiaas.training import TrainConfig, classical, classical_train, nbsvm
from aiaas.training.classical_train import _extend, _Grid, train_classical
from tests.training.conftest import Example, PreparedData, Recorder, multi_label_data, single_label_data
from tests.training.test_classical import chinese_data

SINGLE = "single_label_classification"


def needle_data(n_train: int = 60, n_val: int = 400, seed: int = 1) -> PreparedData:
    """30 random noise words per text and, in 90% of texts, one of 8 words of the text's class:
    few examples per discriminative word, so scaling features by their log-count ratio helps."""
    noise = [f"w{i}" for i in range(300)]

    def make(n: int, rng: random.Random) -> list[Example]:
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            words = rng.sample(noise, 30)
            if rng.random() < 0.9:
                words.append(f"{'pos' if label else 'neg'}{rng.randrange(8)}")
            rng.shuffle(words)
            out.append(Example(" ".join(words), ["neg", "pos"][label]))
        return out

    return PreparedData(SINGLE, make(n_train, random.Random(seed)), make(n_val, random.Random(seed + 1)),
                        ["neg", "pos"])  # fmt: skip


def _features(data: PreparedData):
    tok = classical.build_tokenizer([ex.text for ex in data.train])
    feat, x_train = classical.NgramFeaturizer.fit(
        classical.encode(tok, [ex.text for ex in data.train]), tok.get_vocab_size(with_added_tokens=True)
    )
    x_val = feat.transform(classical.encode(tok, [ex.text for ex in data.validation]))
    y = [np.array([data.labels.index(ex.label) for ex in split]) for split in (data.train, data.validation)]
    return x_train, y[0], x_val, y[1]


def _export_and_serve(result, data: PreparedData, out: Path) -> None:
    """The model directory exports, and the runtime serves what training computed, same labels."""
    texts = [ex.text for ex in data.validation]
    export_classical_model(result.model_dir, out, validation_texts=texts)
    predictor = load_predictor(out)
    reference = classical.ClassicalModel.load(result.model_dir).predict(texts)
    np.testing.assert_allclose(predictor.predict(texts), reference, atol=1e-5, rtol=1e-5)
    assert predictor.labels == data.labels


# -- the grid past its edge -----------------------------------------------------------------
def test_extend_goes_past_the_edge_only_while_the_edge_wins() -> None:
    grid = _Grid.for_task(SINGLE, validated=True)
    assert grid.values == (1.0, 4.0, 16.0)
    assert _extend(grid, {1.0: (0.7, 0), 4.0: (0.8, 0), 16.0: (0.9, 0)}) == [64.0]
    assert _extend(grid, {1.0: (0.9, 0), 4.0: (0.8, 0), 16.0: (0.7, 0)}) == [0.25]
    assert _extend(grid, {1.0: (0.7, 0), 4.0: (0.9, 0), 16.0: (0.8, 0)}) == []  # turned
    # A flat metric is not a best at the edge (the loss tie-breaker would otherwise run C to the limit).
    assert _extend(grid, {1.0: (0.9, -0.3), 4.0: (0.9, -0.2), 16.0: (0.9, -0.1)}) == []
    assert _extend(grid, {256.0: (0.8, 0), 1024.0: (0.9, 0)}) == []  # the limit
    regression = _Grid.for_task("regression", validated=True)
    assert _extend(regression, {0.3: (-1.0, 0), 1.0: (-2.0, 0), 3.0: (-3.0, 0)}) == [pytest.approx(0.1)]


def test_search_follows_the_metric_past_the_edge_until_it_turns(tmp_path: Path, monkeypatch) -> None:
    """A selection metric that peaks at C = 256 (past the grid's 16): the search reaches it, sees it
    turn at 1024, and keeps 256."""
    real_fit, real_score = classical_train.fit_head, classical_train.score
    seen: list[float] = []

    def fit_head(*args, **kwargs):
        seen.append(args[4])
        return real_fit(*args, **kwargs)

    def score(task, logits, y, labels):
        out = real_score(task, logits, y, labels)
        out["macro_f1"] = 1.0 - abs(np.log(seen[-1] / 256.0)) / 10
        return out

    monkeypatch.setattr(classical_train, "fit_head", fit_head)
    monkeypatch.setattr(classical_train, "score", score)
    monkeypatch.setattr(classical_train, "WEIGHTINGS", ("tfidf",))
    data = single_label_data()
    result = train_classical(
        TrainConfig(task=SINGLE, base_model=classical.FAMILY), data, tmp_path, Recorder()
    )
    first = seen[: seen.index(1024.0) + 1]
    assert first == [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]
    assert result.hyperparameters["C"] == 256.0


# -- NB-weighted features -------------------------------------------------------------------
def test_nb_features_differ_from_tfidf_and_help_on_rare_class_words() -> None:
    x_train, y_train, x_val, y_val = _features(needle_data())
    r = nbsvm.log_count_ratio(x_train, y_train == 1)
    assert r.shape == (x_train.shape[1],) and np.ptp(r) > 1.0  # not a constant rescaling
    plain, nb = [], []
    for c in classical.C_GRID:
        head = classical.fit_head(SINGLE, x_train, y_train, 2, c, balanced=False, seed=0)
        nb_head = nbsvm.fit_nb_head(SINGLE, x_train, y_train, 2, c, balanced=False, seed=0)
        assert not np.allclose(head.weights, nb_head.weights)
        plain.append(float((head.logits(x_val).argmax(1) == y_val).mean()))
        nb.append(float((nb_head.logits(x_val).argmax(1) == y_val).mean()))
    assert max(nb) >= max(plain) + 0.03, (plain, nb)


def test_nb_weighting_is_chosen_on_validation_and_served(tmp_path: Path) -> None:
    data = needle_data()
    rec = Recorder()
    result = train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY), data, tmp_path / "t", rec)
    assert result.hyperparameters["weighting"] == "nb"
    best_plain = max(e["macro_f1"] for e in rec.metrics_events() if e["weighting"] == "tfidf")
    assert result.metrics["macro_f1"] > best_plain
    _export_and_serve(result, data, tmp_path / "onnx")


@pytest.mark.parametrize("weighting", ["nb", "tfidf"])
def test_multi_label_nb_and_single_blocks_export_and_serve(tmp_path: Path, monkeypatch, weighting) -> None:
    monkeypatch.setattr(classical_train, "WEIGHTINGS", (weighting,))
    data = multi_label_data()
    result = train_classical(TrainConfig(task=data.task, base_model=classical.FAMILY), data, tmp_path / "t",
                             Recorder())  # fmt: skip
    assert result.hyperparameters["weighting"] == weighting
    meta = json.loads((result.model_dir / "aiaas.json").read_text())
    assert set(meta["thresholds"]) == set(data.labels)  # still one per label after calibration
    _export_and_serve(result, data, tmp_path / "onnx")


# -- word vs character n-grams --------------------------------------------------------------
def test_unspaced_chinese_chooses_character_ngrams_and_serves_them_alone(tmp_path: Path) -> None:
    """Without spaces every text is one 'word': the word block cannot generalise, characters can."""
    data = chinese_data()
    for ex in data.train + data.validation:
        ex.text = ex.text.replace("，", "")
    rec = Recorder()
    result = train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY), data, tmp_path / "t", rec)
    words_alone = max(e["macro_f1"] for e in rec.metrics_events() if e["features"] == "word")
    assert (
        result.hyperparameters["ngram_blocks"] != "word" and "char" in result.hyperparameters["ngram_blocks"]
    )
    assert result.metrics["macro_f1"] >= 0.95 > words_alone
    model = classical.ClassicalModel.load(result.model_dir)
    assert [b.name for b in model.featurizer.blocks] == result.hyperparameters["ngram_blocks"].split("+")
    _export_and_serve(result, data, tmp_path / "onnx")


def test_search_stops_trying_candidates_past_its_time_budget(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(classical_train, "SEARCH_BUDGET_S", 0.0)
    rec = Recorder()
    result = train_classical(
        TrainConfig(task=SINGLE, base_model=classical.FAMILY), single_label_data(), tmp_path, rec
    )
    evals = rec.metrics_events()
    assert {(e["features"], e["weighting"]) for e in evals} == {("char+word", "tfidf")}  # the first in full
    assert len(evals) >= len(classical.C_GRID) and result.hyperparameters["weighting"] == "tfidf"
    assert any(e["level"] == "warning" and "not tried" in e["message"] for e in rec.events)


def test_search_budget_is_judged_before_every_fit_not_only_between_candidates(tmp_path: Path, monkeypatch) -> None:
    """Each fit costs 10 s of a fake clock: after the first candidate (always in full), no fit may start
    that would end past the budget, even in the middle of a candidate's strength grid."""
    now = [0.0]
    monkeypatch.setattr(classical_train, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    real_fit_one = classical_train._fit_one
    ends: list[float] = []

    def fit_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        choice, record = real_fit_one(*args, **kwargs)
        now[0] += 10.0
        record["fit_seconds"] = 10.0
        ends.append(now[0])
        return choice, record

    monkeypatch.setattr(classical_train, "_fit_one", fit_one)
    first_only = Recorder()
    monkeypatch.setattr(classical_train, "SEARCH_BUDGET_S", 0.0)
    train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY), single_label_data(), tmp_path / "a",
                    first_only)
    first_fits = len(first_only.metrics_events())
    budget = 10.0 * first_fits + 25.0  # room for two more fits of 10 s, not three
    monkeypatch.setattr(classical_train, "SEARCH_BUDGET_S", budget)
    now[0], ends[:] = 0.0, []
    rec = Recorder()
    train_classical(TrainConfig(task=SINGLE, base_model=classical.FAMILY), single_label_data(), tmp_path / "b", rec)
    evals = rec.metrics_events()
    assert len(evals) == first_fits + 2, [(e["features"], e["weighting"]) for e in evals]
    assert max(ends) <= budget
    stop = [e["message"] for e in rec.events if e["level"] == "warning" and "not tried" in e["message"]]
    assert stop and "(part of its grid)" in stop[0], rec.events
