"""Split guarantees: stratification, per-class minimums, determinism, multi-label repair."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from aiaas.data.split import auto_fraction, multilabel_split, random_split, stratified_split


def _keys(counts: dict[str, int], seed: int = 0) -> list[str]:
    keys = [name for name, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(keys)
    return keys


def _check_partition(n: int, train: list[int], validation: list[int]) -> None:
    assert train == sorted(train) and validation == sorted(validation)
    assert not set(train) & set(validation)
    assert sorted(train + validation) == list(range(n))


def test_stratified_keeps_class_proportions():
    keys = _keys({"a": 500, "b": 300, "c": 200})
    train, validation = stratified_split(keys, 0.2, seed=1)
    _check_partition(len(keys), train, validation)
    assert len(validation) == 200
    assert Counter(keys[i] for i in validation) == {"a": 100, "b": 60, "c": 40}


def test_every_class_in_train_and_in_validation_when_it_has_two_rows():
    keys = _keys({"big": 90, "two": 2, "three": 3, "one": 1})
    train, validation = stratified_split(keys, 0.1, seed=3)
    _check_partition(len(keys), train, validation)
    in_train, in_validation = Counter(keys[i] for i in train), Counter(keys[i] for i in validation)
    assert set(in_train) == {"big", "two", "three", "one"}
    assert set(in_validation) == {"big", "two", "three"}
    assert in_train["two"] == 1 and in_validation["two"] == 1


def test_large_fraction_still_leaves_train_rows():
    keys = _keys({"a": 3, "b": 3})
    train, _ = stratified_split(keys, 0.9, seed=0)
    assert Counter(keys[i] for i in train) == {"a": 1, "b": 1}


def test_split_is_deterministic_per_seed():
    keys = _keys({"a": 50, "b": 50, "c": 7})
    assert stratified_split(keys, 0.2, seed=42) == stratified_split(list(keys), 0.2, seed=42)
    assert stratified_split(keys, 0.2, seed=42) != stratified_split(keys, 0.2, seed=43)
    assert random_split(100, 0.2, seed=5) == random_split(100, 0.2, seed=5)
    assert random_split(100, 0.2, seed=5) != random_split(100, 0.2, seed=6)


def test_random_split_sizes():
    train, validation = random_split(101, 0.15, seed=0)
    _check_partition(101, train, validation)
    assert len(validation) == 15
    assert random_split(2, 0.01, seed=0)[1] != []


def test_multilabel_guarantees_hold_for_every_label():
    rng = random.Random(7)
    names = [f"l{i}" for i in range(12)]
    rows = [sorted(set(rng.sample(names[:4], rng.randint(1, 2)))) for _ in range(200)]
    rows += [["l4", "l0"], ["l5"], ["l5", "l6"], ["l6", "l7"], ["l7"], ["l8", "l9"], ["l9"], ["l11", "l0"]]
    train, validation = multilabel_split(rows, 0.1, seed=1)
    _check_partition(len(rows), train, validation)
    totals = Counter(n for r in rows for n in r)
    in_train = Counter(n for i in train for n in rows[i])
    in_validation = Counter(n for i in validation for n in rows[i])
    assert set(in_train) == set(totals)
    for name, total in totals.items():
        if total >= 2:
            assert in_validation[name] >= 1, name
    assert multilabel_split(rows, 0.1, seed=1) == (train, validation)


def test_multilabel_never_gives_up_a_training_label_for_validation():
    # "b" has two rows, but each also carries a label seen only once: training needs both rows.
    rows = [["a"], ["a"], ["a"], ["a", "b", "x"], ["b", "y"], ["c"], ["c"], ["c"]]
    train, _ = multilabel_split(rows, 0.25, seed=0)
    in_train = Counter(n for i in train for n in rows[i])
    assert set(in_train) == {"a", "b", "c", "x", "y"}


@pytest.mark.parametrize(("n", "expected"), [(100, 0.2), (5_000, 0.15), (50_000, 0.1), (500_000, 0.02)])
def test_auto_fraction(n, expected):
    assert auto_fraction(n) == pytest.approx(expected)
