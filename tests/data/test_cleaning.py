"""Cleaning steps (each toggled), label parsing per task, missing rows, duplicates and conflicts."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.data import CleaningConfig, clean_text, prepare_dataset

FILLER = "".join(f"filler {i} for a,a\nfiller {i} for b,b\n" for i in range(4))


def _prepare(path, **kwargs):
    kwargs.setdefault("validation_fraction", 0.3)
    return prepare_dataset(path, train_filename=path.name, **kwargs)


def _all(prepared):
    return {e.text: e.label for e in prepared.train + prepared.validation}


# --- CleaningConfig ----------------------------------------------------------------------------


def test_config_round_trip_and_defaults():
    config = CleaningConfig(lowercase=True, dedupe=False)
    assert CleaningConfig.from_dict(config.to_dict()) == config
    assert CleaningConfig.from_dict(None) == CleaningConfig()
    assert CleaningConfig.from_dict({}).to_dict() == {
        "drop_missing": True,
        "lowercase": None,
        "strip": True,
        "replace_newlines": True,
        "dedupe": True,
        "normalize_labels": True,
    }


def test_config_unknown_key_is_named():
    with pytest.raises(InvalidRequest) as info:
        CleaningConfig.from_dict({"dedupe": True, "remove_emoji": True})
    assert info.value.param == "cleaning.remove_emoji"
    assert "'remove_emoji'" in info.value.message and "dedupe" in info.value.message


@pytest.mark.parametrize(("key", "value"), [("strip", "yes"), ("dedupe", None), ("lowercase", 1)])
def test_config_wrong_type_is_named(key, value):
    with pytest.raises(InvalidRequest) as info:
        CleaningConfig.from_dict({key: value})
    assert info.value.param == f"cleaning.{key}"


def test_applied_config_is_recorded_with_lowercase_resolved(write):
    path = write("t.csv", "text,label\n" + FILLER)
    prepared = _prepare(path)
    assert prepared.cleaning["lowercase"] is False
    assert CleaningConfig.from_dict(prepared.cleaning).lowercase is False
    assert _prepare(path, cleaning={"lowercase": True}).cleaning["lowercase"] is True
    with pytest.raises(InvalidRequest):
        _prepare(path, cleaning={"lower": True})


# --- text steps --------------------------------------------------------------------------------


def test_clean_text_steps():
    messy = "  Hello\r\n\tWORLD   again\n"
    assert clean_text(messy, CleaningConfig()) == "Hello WORLD again"
    assert clean_text(messy, {"lowercase": True}) == "hello world again"
    assert clean_text(messy, CleaningConfig(replace_newlines=False)) == "Hello\r\n\tWORLD   again"
    assert clean_text(messy, CleaningConfig(strip=False)) == " Hello WORLD again "
    assert clean_text(messy, CleaningConfig(strip=False, replace_newlines=False)) == messy


def test_text_steps_toggled_in_prepare(write):
    path = write("t.csv", 'text,label\n"  Two\nLines  ",a\n' + FILLER)
    assert "Two Lines" in _all(_prepare(path))
    assert "two lines" in _all(_prepare(path, cleaning=CleaningConfig(lowercase=True)))
    assert "Two\nLines" in _all(_prepare(path, cleaning=CleaningConfig(replace_newlines=False)))
    assert " Two Lines " in _all(_prepare(path, cleaning=CleaningConfig(strip=False)))


# --- missing values ----------------------------------------------------------------------------


def test_missing_rows_are_dropped_and_counted(write):
    path = write("t.csv", "text,label\n,a\n   ,b\nno label,\nblank label,  \n" + FILLER)
    report = _prepare(path).report
    assert report["rows_read"] == 12
    assert report["rows_dropped"]["missing_text"] == 2
    assert report["rows_dropped"]["missing_label"] == 2
    assert report["rows_kept"] == 8


def test_missing_label_is_an_error_when_not_dropping(write):
    path = write("t.csv", "text,label\n" + FILLER + "no label here,\nalso none,\n")
    with pytest.raises(InvalidFile) as info:
        _prepare(path, cleaning=CleaningConfig(drop_missing=False))
    assert info.value.param == "training_file"
    assert info.value.message.startswith("line 10: label is empty")
    assert "1 more row(s) have problems: line 11" in info.value.message


def test_missing_text_is_an_error_when_not_dropping(write):
    path = write("t.csv", 'text,label\n"multi\nline",a\n' + FILLER + '"  ",b\n')
    with pytest.raises(InvalidFile) as info:
        _prepare(path, cleaning=CleaningConfig(drop_missing=False))
    assert info.value.message.startswith("line 12: text is empty")


# --- duplicates and conflicts ------------------------------------------------------------------


def test_duplicates_after_cleaning_and_conflicts(write):
    rows = "text,label\nSame  text,a\nsame text,a\nSame text,a\nTorn,a\ntorn,b\nTorn,b\n"
    path = write("t.csv", rows + FILLER)
    report = _prepare(path).report
    # Without lowercasing, "same text" is distinct; "Torn" has labels a and b.
    assert report["rows_dropped"]["duplicate"] == 1
    assert report["rows_dropped"]["conflicting_label"] == 2
    assert report["conflicts"] == [{"lines": [5, 7], "labels": ["a", "b"]}]
    assert report["duplicates_removed"] == 1

    lowered = _prepare(path, cleaning=CleaningConfig(lowercase=True)).report
    # "same text" x3 -> 2 duplicates; "torn"/b twice -> 1 more; then torn/a vs torn/b conflict.
    assert lowered["rows_dropped"]["duplicate"] == 3
    assert lowered["rows_dropped"]["conflicting_label"] == 2
    assert "torn" not in _all(_prepare(path, cleaning=CleaningConfig(lowercase=True)))


def test_dedupe_off_keeps_everything(write):
    path = write("t.csv", "text,label\nx,a\nx,a\nx,b\n" + FILLER)
    prepared = _prepare(path, cleaning=CleaningConfig(dedupe=False))
    assert prepared.report["rows_kept"] == 11
    assert prepared.report["rows_dropped"]["duplicate"] == 0


# --- single-label normalisation ----------------------------------------------------------------


def test_numeric_labels_are_one_class_in_any_spelling(write):
    lines = [
        {"text": "int one", "label": 1},
        {"text": "float one", "label": 1.0},
        {"text": "str one", "label": " 1 "},
        {"text": "str one point zero", "label": "1.0"},
        {"text": "leading zeros stay", "label": "007"},
        {"text": "leading zeros again", "label": "007"},
        {"text": "bool", "label": True},
        {"text": "bool again", "label": True},
    ]
    path = write("t.jsonl", "\n".join(json.dumps(x) for x in lines))
    prepared = _prepare(path, validation_fraction=0.4)
    assert prepared.labels == ["007", "1", "true"]
    assert (
        prepared.report["label_counts"]["train"]["1"] + prepared.report["label_counts"]["validation"]["1"]
        == 4
    )


def test_normalize_labels_off_keeps_raw_spelling(write):
    path = write("t.csv", "text,label\n" + FILLER + "x1,a \nx2,a \n")
    assert _prepare(path).labels == ["a", "b"]
    assert _prepare(path, cleaning=CleaningConfig(normalize_labels=False)).labels == ["a", "a ", "b"]


def test_list_label_in_single_label_task(write):
    path = write("t.jsonl", '{"text": "a", "label": "x"}\n{"text": "b", "label": ["x", "y"]}\n')
    with pytest.raises(InvalidFile) as info:
        _prepare(path)
    assert info.value.message.startswith("line 2: label is a list")
    assert "multi_label_classification" in info.value.message


# --- multi-label -------------------------------------------------------------------------------


def test_multi_label_cell_formats(write):
    content = (
        "text,label\n"
        "pipe,billing|refund\n"
        'comma,"billing, refund"\n'
        "semicolon,billing;refund\n"
        '"json","[""refund"", ""billing""]"\n'
        "single,shipping\n"
        "dup parts,shipping|shipping\n"
        "nothing, | \n"
        "more,refund|shipping\n"
        "again,billing|shipping\n"
    )
    prepared = _prepare(write("t.csv", content), task="multi_label_classification", validation_fraction=0.3)
    labels = _all(prepared)
    for text in ("pipe", "comma", "semicolon", "json"):
        assert labels[text] == ["billing", "refund"]
    assert labels["dup parts"] == ["shipping"]
    assert "nothing" not in labels
    assert prepared.report["rows_dropped"]["missing_label"] == 1
    assert prepared.labels == ["billing", "refund", "shipping"]
    assert (
        prepared.report["label_counts"]["train"]["billing"]
        + prepared.report["label_counts"]["validation"]["billing"]
        == 5
    )


def test_multi_label_lists_from_jsonl_and_parquet(write, tmp_path):
    rows = [{"text": f"t{i}", "label": ["a", "b"] if i % 2 else ["c", 1]} for i in range(10)]
    jsonl = write("t.jsonl", "\n".join(json.dumps(r) for r in rows))
    parquet = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"text": [r["text"] for r in rows], "label": [[str(x) for x in r["label"]] for r in rows]}),
        parquet,
    )
    for path in (jsonl, parquet):
        prepared = _prepare(path, task="multi_label_classification")
        assert prepared.labels == ["1", "a", "b", "c"]
        assert _all(prepared)["t0"] == ["1", "c"]


def test_multi_label_bad_json_list(write):
    path = write("t.csv", 'text,label\nok,a|b\nbroken,"[""a"", "\n')
    with pytest.raises(InvalidFile) as info:
        _prepare(path, task="multi_label_classification")
    assert info.value.message.startswith(
        "line 3: label '[\"a\", ' starts with '[' but is not a valid JSON list"
    )


def test_multi_label_needs_two_labels(write):
    path = write("t.csv", "text,label\n" + "".join(f"t{i},same\n" for i in range(10)))
    with pytest.raises(InvalidFile) as info:
        _prepare(path, task="multi_label_classification")
    assert "at least 2 distinct labels" in info.value.message


# --- regression --------------------------------------------------------------------------------


def test_regression_labels_are_floats(write):
    content = "text,label\n" + "".join(f"t{i},{v}\n" for i, v in enumerate(["1", " 2.5 ", "-3", "4e1", ".5"]))
    content += "t5,\nt6,6\nt7,7\nt8,8\n"
    prepared = _prepare(write("t.csv", content), task="regression")
    labels = _all(prepared)
    assert labels["t1"] == 2.5 and labels["t3"] == 40.0 and labels["t4"] == 0.5
    assert all(isinstance(v, float) for v in labels.values())
    assert prepared.labels == []
    assert prepared.report["rows_dropped"]["missing_label"] == 1
    assert prepared.report["label_stats"]["train"]["count"] == prepared.report["n_train"]


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("abc", "line 5: label 'abc' is not a number; regression needs a number in every row"),
        ('"1,5"', "write decimals with a dot"),
        ("inf", "line 5: label 'inf' is not a number"),
        ("1e999", "line 5: label '1e999' is not a finite number"),
    ],
)
def test_regression_non_numeric_label_names_the_line(write, cell, expected):
    path = write(
        "t.csv",
        'text,label\na,1\n"multi\nline",2\nc,' + cell + "\n" + "".join(f"x{i},{i}\n" for i in range(8)),
    )
    with pytest.raises(InvalidFile) as info:
        _prepare(path, task="regression")
    assert expected in info.value.message
    assert info.value.message.startswith("line 5:")


def test_many_bad_rows_are_counted_and_the_first_few_located(write):
    content = "text,label\n" + "".join(f"t{i},{'x' if i % 2 else i}\n" for i in range(40))
    with pytest.raises(InvalidFile) as info:
        _prepare(write("t.csv", content), task="regression")
    assert info.value.message.startswith("line 3: label 'x' is not a number")
    assert (
        "(19 more row(s) have problems: line 5, line 7, line 9, line 11, line 13, ...)" in info.value.message
    )
