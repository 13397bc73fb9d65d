"""The data report: what was read, what cleaning removed and why, and what the data looks like.

Plain JSON types only, because the report is stored with the job and the model and
shown as-is in the API and dashboard.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from aiaas.data.types import Label

# A class this many times rarer than the most common one is worth a warning.
IMBALANCE_RATIO = 10


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """min/p50/p90/p99/max by nearest rank (always an observed value), plus count and mean."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(p: float) -> float:
        return ordered[max(math.ceil(p / 100 * n), 1) - 1]

    return {
        "count": n,
        "min": ordered[0],
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": ordered[-1],
        "mean": round(sum(ordered) / n, 2),
    }


def add_token_stats(
    report: dict[str, Any], token_lengths: list[int], *, max_length: int | None = None
) -> None:
    """Record token length percentiles once a tokenizer is known (the training step calls this).

    With `max_length`, also count the rows the model will see truncated, which is the
    number that tells a user whether a longer max_length is worth its cost.
    """
    stats: dict[str, Any] = percentiles([int(n) for n in token_lengths])
    if max_length is not None:
        stats["max_length"] = int(max_length)
        stats["truncated_rows"] = sum(1 for n in token_lengths if n > max_length)
    report["token_length"] = stats


def label_counts(labels: Sequence[Label]) -> dict[str, int]:
    """Rows per class, most common first (a multi-label row counts once for each of its labels)."""
    counter: Counter[str] = Counter()
    for label in labels:
        if isinstance(label, list):
            counter.update(label)
        else:
            counter[str(label)] += 1
    return {name: count for name, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))}


def label_warnings(counts: dict[str, int]) -> list[str]:
    """Hints about labels that are legal but probably not what the user meant."""
    warnings: list[str] = []
    by_folded: dict[str, list[str]] = {}
    for name in counts:
        by_folded.setdefault(name.casefold(), []).append(name)
    for variants in by_folded.values():
        if len(variants) > 1:
            shown = ", ".join(repr(v) for v in sorted(variants))
            warnings.append(f"labels {shown} differ only in letter case and are treated as different classes")
    if len(counts) >= 2:
        most, least = max(counts.values()), min(counts.values())
        if most >= IMBALANCE_RATIO * least:
            rare = [name for name, count in counts.items() if count == least]
            warnings.append(
                f"classes are imbalanced: the most common has {most} rows, the rarest "
                f"({', '.join(map(repr, rare[:3]))}) only {least}; consider adding examples"
            )
    return warnings
