"""tfidf-linear's training texts are encoded once (the job's token statistics and the featurisation
share one pass), its truncated_rows is counted before the truncation, and the memory-saving forms of
the weighting, the column selection and the NB ratios compute what the plain formulas compute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from aiaas.data.types import Example, PreparedData
from aiaas.jobs.token_stats import token_stats
from aiaas.training import TrainConfig, classical, classical_train, nbsvm
from tests.training.conftest import Recorder, single_label_data

LONG = "refund please " * 200  # 2,600 characters: more than MAX_CHARS ids


def _texts() -> list[str]:
    return ["refund", "", "the app crashes", LONG, "x" * (classical.MAX_CHARS + 3), "a b"]


def test_encode_training_counts_before_truncating_and_truncates_like_the_tokenizer() -> None:
    texts = _texts()
    encoded = classical.encode_training(texts)
    reference = classical.encode(classical.build_tokenizer(texts), texts)  # the tokenizer's own truncation
    assert encoded.ids == reference
    assert max(len(ids) for ids in encoded.ids) == classical.MAX_CHARS
    assert sum(n > classical.MAX_CHARS for n in encoded.lengths) == 2
    assert encoded.lengths[0] == len(reference[0])  # short texts: the length is the ids'
    # The tokenizer handed on truncates as the runtime does.
    assert classical.encode(encoded.tokenizer, texts) == reference


def test_encode_in_chunks_gives_the_ids_of_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"text number {i}" for i in range(25)]
    tokenizer = classical.build_tokenizer(texts)
    whole = classical.encode(tokenizer, texts)
    monkeypatch.setattr(classical, "ENCODE_CHUNK", 4)
    assert classical.encode(tokenizer, texts) == whole


def _prepared(texts: list[str]) -> PreparedData:
    labels = ["a", "b"]
    train = [Example(t, labels[i % 2]) for i, t in enumerate(texts)]
    return PreparedData("single_label_classification", train, [], labels, report={}, cleaning={})


def test_runner_token_stats_count_truncated_rows_and_keep_the_encoding() -> None:
    data = _prepared(_texts())
    token_stats(data, None)
    stats = data.report["token_length"]
    assert stats["truncated_rows"] == 2 and stats["max_length"] == classical.MAX_CHARS
    assert stats["max"] > classical.MAX_CHARS  # lengths before truncation
    encoded = data.encodings[classical.FAMILY]
    assert encoded.matches([e.text for e in data.train])


def _weights(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / classical.MODEL_FILE) as npz:
        return {k: npz[k] for k in npz.files}


def test_training_featurises_the_prepared_encoding_without_encoding_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = single_label_data()
    config = TrainConfig(base_model=classical.FAMILY, task=source.task)
    fresh = classical_train.train_classical(config, source, tmp_path / "fresh", Recorder())

    data = PreparedData(source.task, list(source.train), list(source.validation), source.labels, {}, {})
    token_stats(data, None)

    def encode_again(texts: object) -> None:
        raise AssertionError("training encoded the texts again")

    monkeypatch.setattr(classical_train, "encode_training", encode_again)
    reused = classical_train.train_classical(config, data, tmp_path / "reused", Recorder())
    a, b = _weights(fresh.model_dir), _weights(reused.model_dir)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])

    # An encoding of other texts (e.g. rows changed after the data step) is not used.
    data.train[0] = Example(data.train[0].text + " changed", data.train[0].label)
    with pytest.raises(AssertionError, match="encoded the texts again"):
        classical_train.train_classical(config, data, tmp_path / "changed", Recorder())


def test_weighting_is_sublinear_tf_times_idf_normalised_per_block() -> None:
    texts = ["refund refund please", "the app crashes", "refund the app", "please please help", "a"]
    encoded = classical.encode_training(texts)
    featurizer, x = classical.NgramFeaturizer.fit(encoded.ids, encoded.tokenizer.get_vocab_size())
    docs = classical._as_strings(encoded.ids, featurizer._table)
    counts = [v.transform(docs) for v in featurizer._vectorizers]
    expected = []
    for block, c in zip(featurizer.blocks, counts, strict=True):
        dense = c.toarray().astype(np.float64)
        w = np.where(dense > 0, 1.0 + np.log(np.where(dense > 0, dense, 1.0)), 0.0) * block.idf
        expected.append(w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12))
    np.testing.assert_allclose(x.toarray(), np.hstack(expected), rtol=1e-5, atol=1e-6)
    again = featurizer.transform(encoded.ids).toarray()
    np.testing.assert_allclose(again, np.hstack(expected), rtol=1e-5, atol=1e-6)


def test_selecting_every_column_does_not_copy_the_matrix() -> None:
    x = sp.random(20, 7, density=0.3, format="csr", dtype=np.float32, random_state=0)
    assert classical.select_columns(x, np.arange(7)) is x
    part = classical.select_columns(x, np.array([1, 3]))
    np.testing.assert_array_equal(part.toarray(), x.toarray()[:, [1, 3]])


def test_nb_ratio_and_head_match_the_row_sum_formulas() -> None:
    rng = np.random.default_rng(0)
    x = sp.random(60, 15, density=0.4, format="csr", dtype=np.float32, random_state=1)
    positive = rng.random(60) < 0.4
    p = 1.0 + np.asarray(x[positive].sum(axis=0)).ravel()
    q = 1.0 + np.asarray(x[~positive].sum(axis=0)).ravel()
    reference = np.log(p / p.sum()) - np.log(q / q.sum())
    r = nbsvm.log_count_ratio(x, positive)
    np.testing.assert_allclose(r, reference, rtol=1e-5, atol=1e-6)

    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=4.0, max_iter=2000, random_state=0)
    model.fit(x @ sp.diags(r), positive.astype(np.int64))
    weights, bias = nbsvm._binary(x, positive, 4.0, None, 0)
    np.testing.assert_allclose(weights, model.coef_[0] * r, rtol=1e-4, atol=1e-5)
    assert bias == pytest.approx(float(model.intercept_[0]), rel=1e-4, abs=1e-5)


def _rows(n: int) -> tuple[list[Example], list[Example]]:
    words = {"a": ["refund", "money", "charge"], "b": ["crash", "bug", "screen"]}
    rows = [Example(f"{words[y][i % 3]} item {i % 50}", y) for i, y in enumerate("ab" * (n // 2))]
    return rows[: int(n * 0.9)], rows[int(n * 0.9) :]


def test_cost_curve_bench_times_the_tfidf_phases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiaas.jobs import runner
    from bench import curves_training

    wrapped = [(runner, "token_stats"), (classical.ClassicalModel, "save")]
    wrapped += [(classical_train, name) for name in ("_featurize", "_search", "_refit", "_calibrate")]
    for owner, name in wrapped:
        monkeypatch.setattr(owner, name, getattr(owner, name))  # put back after the test
    table: dict[str, dict[str, float]] = {}
    curves_training._wrap_tfidf_phases(table)

    data = PreparedData("single_label_classification", *_rows(2600), ["a", "b"], {}, {})  # > 2,000: a refit
    runner.token_stats(data, None)
    config = TrainConfig(base_model=classical.FAMILY, task=data.task)
    classical_train.train_classical(config, data, tmp_path, Recorder())
    assert set(table) == {"token_stats", "featurize", "search", "refit", "calibrate", "save"}
    assert all(row["cpu_s"] >= 0 and row["wall_s"] > 0 for row in table.values())
