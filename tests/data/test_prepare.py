"""prepare_dataset end to end: column mapping, checks, validation files, the report, the demo data."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.data import add_token_stats, demo_dataset_path, prepare_dataset, read_table
from tests.data.samples import labelled_csv


def _error(exc_type, path, **kwargs):
    with pytest.raises(exc_type) as info:
        prepare_dataset(path, train_filename=path.name, **kwargs)
    return info.value


# --- columns and arguments ---------------------------------------------------------------------


def test_missing_label_column_lists_the_columns(write):
    path = write("t.csv", "sentence,sentiment\ngood,pos\n")
    err = _error(InvalidFile, path, text_column="sentence")
    assert err.message == (
        "training_file has no column 'label'; its columns are: 'sentence', 'sentiment'. "
        "Set label_column to one of them."
    )
    assert err.param == "label_column"


def test_missing_text_column_suggests_a_close_name(write):
    err = _error(InvalidFile, write("t.csv", "Text,label\nhi,a\n"))
    assert err.param == "text_column"
    assert "has no column 'text'" in err.message and "(probably 'Text')" in err.message


def test_column_mapping(write):
    path = write("t.csv", labelled_csv({"pos": 5, "neg": 5}, header="sentence,sentiment"))
    prepared = prepare_dataset(path, train_filename="t.csv", text_column="sentence", label_column="sentiment")
    assert prepared.labels == ["neg", "pos"]
    assert prepared.report["columns"] == ["sentence", "sentiment"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"task": "ranking"}, "task"),
        ({"text_column": "label"}, "label_column"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"validation_fraction": 0}, "validation_fraction"),
        ({"min_rows": 1}, "min_rows"),
        ({"min_rows_per_class": 0}, "min_rows_per_class"),
    ],
)
def test_bad_arguments(write, kwargs, param):
    assert _error(InvalidRequest, write("t.csv", labelled_csv({"a": 5, "b": 5})), **kwargs).param == param


# --- is there enough to learn from? ------------------------------------------------------------


def test_too_few_rows_after_cleaning_says_what_was_dropped(write):
    path = write("t.csv", labelled_csv({"a": 3, "b": 3}) + "dup,a\ndup,a\nnolabel,\n")
    err = _error(InvalidFile, path)
    assert err.param == "training_file"
    assert err.message == (
        "training_file has 7 usable rows after cleaning (9 read; dropped: 1 missing label, 1 duplicate); "
        "at least 8 are needed. Add more labelled rows."
    )


def test_single_class(write):
    err = _error(InvalidFile, write("t.csv", labelled_csv({"only": 10})))
    assert "a single label (every row is 'only')" in err.message


def test_rare_classes_are_named_with_counts(write):
    err = _error(
        InvalidFile,
        write("t.csv", labelled_csv({"a": 10, "b": 10, "rare": 1, "rarer": 2})),
        min_rows_per_class=3,
    )
    assert "fewer than 3 rows: 'rare' (1), 'rarer' (2)." in err.message


def test_label_column_pointing_at_text_is_hinted(write):
    content = "text,label\n" + "".join(f"row {i},unique label {i}\n" for i in range(20))
    assert "does label_column point at the text?" in _error(InvalidFile, write("t.csv", content)).message


# --- validation file ---------------------------------------------------------------------------


def test_validation_file_is_cleaned_and_used(write):
    train = write("train.csv", labelled_csv({"a": 6, "b": 6}))
    held_out = write(
        "val.jsonl",
        "\n".join(
            [
                '{"text": "  fresh   A ", "label": "a"}',
                '{"text": "fresh b", "label": " b"}',
                '{"text": "fresh b", "label": "b"}',
                '{"text": "message 0 about a", "label": "a"}',
                '{"text": "no label"}',
            ]
        ),
    )
    prepared = prepare_dataset(
        train, train_filename="train.csv", validation_path=held_out, validation_filename="val.jsonl"
    )
    assert len(prepared.train) == 12
    assert [(e.text, e.label) for e in prepared.validation] == [("fresh A", "a"), ("fresh b", "b")]
    report = prepared.report
    assert report["validation_source"] == "file"
    assert report["validation_fraction"] is None
    assert report["validation_file"]["format"] == "jsonl"
    assert report["validation_file"]["rows_read"] == 5
    assert report["validation_file"]["rows_dropped"] == {
        "missing_text": 0,
        "missing_label": 1,
        "duplicate": 1,
        "conflicting_label": 0,
        "in_training_file": 1,
    }


def test_validation_labels_unseen_in_training(write):
    train = write("train.csv", labelled_csv({"a": 6, "b": 6}))
    held_out = write("val.csv", "text,label\nx,a\ny,zebra\nz,yak\n")
    with pytest.raises(InvalidFile) as info:
        prepare_dataset(
            train, train_filename="train.csv", validation_path=held_out, validation_filename="val.csv"
        )
    assert info.value.param == "validation_file"
    assert "never occur in training_file: 'yak', 'zebra'" in info.value.message


def test_validation_file_errors_use_its_param(write):
    train = write("train.csv", labelled_csv({"a": 6, "b": 6}))
    held_out = write("val.csv", "text,label\nx,a\ny,b,c\n")
    with pytest.raises(InvalidFile) as info:
        prepare_dataset(
            train, train_filename="train.csv", validation_path=held_out, validation_filename="val.csv"
        )
    assert info.value.param == "validation_file"
    assert info.value.message.startswith("line 3: expected 2 fields, found 3")


# --- split and report --------------------------------------------------------------------------


def test_report_counts_and_split(write):
    content = labelled_csv({"a": 40, "b": 20, "c": 3}) + "dup,a\ndup,a\n,a\nno label,\nx,a\nx,b\n"
    path = write("t.csv", content)
    prepared = prepare_dataset(path, train_filename="t.csv", seed=7)
    report = prepared.report
    json.dumps(report)  # stored as JSON: must serialise as-is
    assert report["rows_read"] == 69
    assert report["rows_dropped"] == {
        "missing_text": 1,
        "missing_label": 1,
        "duplicate": 1,
        "conflicting_label": 2,
    }
    assert report["duplicates_removed"] == 1
    assert report["rows_kept"] == 64 == report["n_train"] + report["n_validation"]
    assert report["n_validation"] == len(prepared.validation) == 13
    assert report["label_counts"]["train"] == {"a": 33, "b": 16, "c": 2}
    assert report["label_counts"]["validation"] == {"a": 8, "b": 4, "c": 1}
    assert prepared.labels == ["a", "b", "c"]
    lengths = report["text_length_chars"]
    assert lengths["max"] == max(len(e.text) for e in prepared.train + prepared.validation)
    assert lengths["min"] <= lengths["p50"] <= lengths["p90"] <= lengths["p99"] <= lengths["max"]
    assert report["format"] == "csv" and report["encoding"] == "utf-8"
    assert report["conflicts"] == [{"lines": [69, 70], "labels": ["a", "b"]}]


def test_same_seed_same_split_and_different_seed_differs(write):
    path = write("t.csv", labelled_csv({"a": 30, "b": 30}))
    first = prepare_dataset(path, train_filename="t.csv", seed=1)
    again = prepare_dataset(path, train_filename="t.csv", seed=1)
    other = prepare_dataset(path, train_filename="t.csv", seed=2)
    assert first.validation == again.validation and first.train == again.train
    assert first.validation != other.validation


def test_explicit_validation_fraction(write):
    prepared = prepare_dataset(
        write("t.csv", labelled_csv({"a": 50, "b": 50})), train_filename="t.csv", validation_fraction=0.5
    )
    assert prepared.report["n_validation"] == 50
    assert prepared.report["validation_fraction"] == 0.5


def test_gbk_file_prepares_with_chinese_columns(write):
    content = "文本,标签\n" + "".join(f"第{i}个退款问题,退款\n第{i}个物流问题,物流\n" for i in range(6))
    prepared = prepare_dataset(
        write("zh.csv", content, encoding="gbk"),
        train_filename="zh.csv",
        text_column="文本",
        label_column="标签",
    )
    assert prepared.labels == ["物流", "退款"]
    assert prepared.report["encoding"] == "gb18030"


def test_imbalance_and_case_warnings(write):
    path = write("t.csv", labelled_csv({"Billing": 40, "billing": 2, "refund": 30}))
    warnings = prepare_dataset(path, train_filename="t.csv").report["warnings"]
    assert any("differ only in letter case" in w for w in warnings)
    assert any("imbalanced" in w for w in warnings)


def test_add_token_stats():
    report: dict = {}
    add_token_stats(report, [5, 7, 9, 600, 12], max_length=512)
    assert report["token_length"] == {
        "count": 5,
        "min": 5,
        "p50": 9,
        "p90": 600,
        "p99": 600,
        "max": 600,
        "mean": 126.6,
        "max_length": 512,
        "truncated_rows": 1,
    }
    add_token_stats(report, [])
    assert report["token_length"] == {"count": 0}


# --- the demo dataset --------------------------------------------------------------------------


def test_demo_dataset_is_noisy_but_learnable():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    path = demo_dataset_path()
    assert path.is_file() and read_table(path).shape[1] == 2
    prepared = prepare_dataset(path, train_filename=path.name, validation_fraction=0.3, seed=3)
    report = prepared.report
    assert 380 <= report["rows_read"] <= 420
    assert prepared.labels == [
        "account_access",
        "billing",
        "cancel_subscription",
        "refund",
        "shipping",
        "technical_issue",
    ]
    assert report["rows_dropped"]["missing_label"] >= 2
    assert report["rows_dropped"]["duplicate"] >= 3
    assert report["rows_dropped"]["conflicting_label"] >= 2
    assert len({e.text for e in prepared.train + prepared.validation}) == report["rows_kept"]

    # A bag-of-words baseline already beats the majority class by far; a fine-tuned MiniLM does better.
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vectorizer.fit_transform([e.text for e in prepared.train])
    model = LogisticRegression(max_iter=1000).fit(x_train, [e.label for e in prepared.train])
    predicted = model.predict(vectorizer.transform([e.text for e in prepared.validation]))
    truth = [e.label for e in prepared.validation]
    accuracy = sum(p == t for p, t in zip(predicted, truth, strict=True)) / len(truth)
    majority = Counter(truth).most_common(1)[0][1] / len(truth)
    assert accuracy > majority + 0.5


# --- performance -------------------------------------------------------------------------------


@pytest.mark.slow
def test_100k_rows_prepare(write):
    # How long it takes is the benches' business (bench/upload.py's prepare phase, bench/curves.py's phases):
    # a wall-clock bound here failed on busy shared cores with nothing wrong.
    rng = random.Random(0)
    words = [
        "order",
        "refund",
        "late",
        "card",
        "login",
        "error",
        "please",
        "help",
        "today",
        "account",
        "charged",
        "twice",
        "package",
        "password",
        "app",
        "crash",
        "cancel",
        "plan",
        "thanks",
        "why",
    ]
    labels = [f"intent_{i}" for i in range(8)]
    lines = ["text,label"]
    for i in range(100_000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(5, 15)))
        lines.append(f'"{text}, case {i}",{labels[i % 8]}')
    path = write("big.csv", "\n".join(lines) + "\n")
    prepared = prepare_dataset(path, train_filename="big.csv")
    assert prepared.report["rows_kept"] == 100_000
    assert prepared.report["n_validation"] == 10_000
