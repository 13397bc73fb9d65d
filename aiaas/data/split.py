"""Deterministic train/validation splits: stratified for classification, shuffled for regression.

Written here rather than taken from scikit-learn because the guarantees we need
are different: every class keeps at least one row in train, and every class with
two or more rows gets at least one row in validation, so per-class validation
metrics exist for every class the model learns. The same rows and seed always give
the same split. Functions return sorted row indices (train, validation).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence


def auto_fraction(n_rows: int, *, max_validation_rows: int = 10_000) -> float:
    """A validation share that suits the data size: more held out when data is scarce."""
    fraction = 0.2 if n_rows < 1_000 else 0.15 if n_rows < 10_000 else 0.1
    return min(fraction, max_validation_rows / n_rows) if n_rows else fraction


def _target(n: int, fraction: float) -> int:
    """Validation size: at least one row and at least one row left for training."""
    return min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0


def random_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A plain shuffled split (regression: no classes to balance)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = _target(n, fraction)
    return sorted(order[k:]), sorted(order[:k])


def stratified_split(keys: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out about `fraction` of every class.

    Class quotas are apportioned by largest remainder so the total matches
    round(n * fraction), then clamped to the per-class guarantees above.
    """
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    n = len(keys)
    total = _target(n, fraction)
    names = sorted(groups)
    quotas = {name: len(groups[name]) * total / n for name in names} if n else {}
    taken = {name: math.floor(q) for name, q in quotas.items()}
    remainder = total - sum(taken.values())
    for name in sorted(names, key=lambda c: (-(quotas[c] - taken[c]), c))[:remainder]:
        taken[name] += 1
    rng = random.Random(seed)
    train: list[int] = []
    validation: list[int] = []
    for name in names:
        members = list(groups[name])
        rng.shuffle(members)
        size = len(members)
        k = min(max(taken[name], 1), size - 1) if size >= 2 else 0
        validation.extend(members[:k])
        train.extend(members[k:])
    return sorted(train), sorted(validation)


def multilabel_split(
    labels: Sequence[Sequence[str]], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Stratify on each row's rarest label, then move rows so every label keeps the guarantees.

    The rarest label is the one whose split matters most; frequent labels even out by
    themselves. The repair pass covers what stratifying on one label per row cannot.
    """
    frequency = Counter(name for row in labels for name in row)
    keys = [min(row, key=lambda name: (frequency[name], name)) for row in labels]
    train, validation = stratified_split(keys, fraction, seed)
    in_train = Counter(name for i in train for name in labels[i])
    in_validation = Counter(name for i in validation for name in labels[i])
    train_set, validation_set = set(train), set(validation)
    rows_with: dict[str, list[int]] = {}
    for i, row in enumerate(labels):
        for name in row:
            rows_with.setdefault(name, []).append(i)

    def move(i: int, source: set[int], target: set[int], out: Counter[str], into: Counter[str]) -> None:
        source.discard(i)
        target.add(i)
        for name in labels[i]:
            out[name] -= 1
            into[name] += 1

    for name in sorted(frequency):
        if in_train[name] == 0:
            i = next(j for j in rows_with[name] if j in validation_set)
            move(i, validation_set, train_set, in_validation, in_train)
    for name in sorted(frequency):
        if frequency[name] < 2 or in_validation[name] > 0:
            continue
        # Move a training row carrying `name` whose other labels all stay present in train.
        candidate = next(
            (
                j
                for j in rows_with[name]
                if j in train_set and all(in_train[other] >= 2 for other in labels[j])
            ),
            None,
        )
        if candidate is not None and len(train_set) > 1:
            move(candidate, train_set, validation_set, in_train, in_validation)
    return sorted(train_set), sorted(validation_set)
