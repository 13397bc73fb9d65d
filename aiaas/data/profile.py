"""Traffic statistics that can be taken on every request: histograms over fixed bins, Unicode
script buckets, and the population stability index (PSI) that compares two histograms.

Pure functions over plain lists and numpy arrays (no I/O), shared by the data report (the
reference, written at training time) and the monitoring service (live traffic), so both bin alike.
"""

from __future__ import annotations

import itertools
import math
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence

import numpy as np

# Characters per text: bin i holds lengths in [EDGES[i], EDGES[i+1]).
LENGTH_EDGES = (0, 16, 32, 64, 128, 256, 512, 1024)
LENGTH_BINS = tuple(f"{a}-{b - 1}" for a, b in itertools.pairwise(LENGTH_EDGES)) + (
    f"{LENGTH_EDGES[-1]}+",)
# Top score (the winning class's probability): ten bins of width 0.1, the last closed.
SCORE_BINS = tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))

# Unicode script buckets by code point range (start, end inclusive, bucket). Ranges not listed
# count as "Other"; a text without any letter counts as "None".
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0x0041, 0x005A, "Latin"), (0x0061, 0x007A, "Latin"), (0x00C0, 0x024F, "Latin"),
    (0x0370, 0x03FF, "Greek"), (0x0400, 0x052F, "Cyrillic"), (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x0900, 0x097F, "Devanagari"),
    (0x0E00, 0x0E7F, "Thai"), (0x1100, 0x11FF, "Hangul"), (0x1E00, 0x1EFF, "Latin"),
    (0x3040, 0x30FF, "Kana"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"),
    (0xAC00, 0xD7AF, "Hangul"), (0xF900, 0xFAFF, "Han"), (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"), (0x20000, 0x2FA1F, "Han"),
)
SCRIPTS = ("Latin", "Han", "Cyrillic", "Arabic", "Greek", "Hebrew", "Devanagari", "Thai", "Hangul", "Kana",
           "Other", "None")
_SCRIPT_INDEX = {name: i for i, name in enumerate(SCRIPTS)}
_STARTS = [r[0] for r in _RANGES]
SCRIPT_SCAN_CHARS = 64  # a text's script is decided by its first characters; longer texts cost no more

# Smoothing. The live side gets PSI_PRIOR_COUNTS counts spread as the reference is (a prior that the
# traffic looks like training), so a small window's empty bins do not read as a shift: with a plain 1e-4
# floor, 30 in-distribution texts scored 0.8 on lengths; with half a count per bin, 0.43 on the 12 script
# buckets. The reference side (thousands of rows) only gets a floor, so a bin training never saw still
# counts fully when traffic fills it.
PSI_PRIOR_COUNTS = 10.0
PSI_FLOOR = 1e-4


def length_histogram(texts: Iterable[str]) -> list[int]:
    counts = [0] * len(LENGTH_BINS)
    for t in texts:
        counts[bisect_right(LENGTH_EDGES, len(t)) - 1] += 1
    return counts


def _bucket_of(c: str) -> int:
    if not c.isalpha():
        return -1
    o = ord(c)
    i = bisect_right(_STARTS, o) - 1
    return _SCRIPT_INDEX[_RANGES[i][2]] if i >= 0 and o <= _RANGES[i][1] else _SCRIPT_INDEX["Other"]


_CHAR_BUCKETS: dict[str, int] = {}  # character -> bucket (-1: not a letter), filled as characters are seen
_CHAR_BUCKETS_MAX = 1 << 16
_ASCII_LETTER = re.compile(r"[A-Za-z]")


def script_of(text: str) -> int:
    """Index in SCRIPTS of the script most of the text's first letters are written in."""
    head = text[:SCRIPT_SCAN_CHARS]
    if head.isascii():  # the common case, in C: Latin if it has a letter at all
        return _SCRIPT_INDEX["Latin"] if _ASCII_LETTER.search(head) else _SCRIPT_INDEX["None"]
    votes = [0] * len(SCRIPTS)
    buckets = _CHAR_BUCKETS
    for c in head:
        b = buckets.get(c)
        if b is None:
            b = _bucket_of(c)
            if len(buckets) < _CHAR_BUCKETS_MAX:
                buckets[c] = b
        if b >= 0:
            votes[b] += 1
    best = max(range(len(SCRIPTS)), key=votes.__getitem__)
    return best if votes[best] else _SCRIPT_INDEX["None"]


def script_histogram(texts: Iterable[str]) -> list[int]:
    counts = [0] * len(SCRIPTS)
    for t in texts:
        counts[script_of(t)] += 1
    return counts


def score_histogram(top_scores: np.ndarray) -> list[int]:
    """Counts of top scores (in [0, 1]) over SCORE_BINS."""
    idx = np.clip((np.asarray(top_scores, dtype=np.float64) * 10).astype(np.int64), 0, 9)
    return np.bincount(idx, minlength=10).tolist()


def text_profile(texts: Sequence[str]) -> dict[str, dict[str, int]]:
    """What the data report stores about texts for monitoring to compare traffic with."""
    return {"length_histogram": dict(zip(LENGTH_BINS, length_histogram(texts), strict=True)),
            "scripts": {k: v for k, v in zip(SCRIPTS, script_histogram(texts), strict=True) if v}}


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of `actual` against `expected` (both counts over the same bins):
    sum((a - e) * ln(a / e)) over bin shares. Under 0.1 is usually read as stable, over 0.2 as shifted."""
    e_total, a_total = float(sum(expected)), float(sum(actual))
    if e_total <= 0 or a_total <= 0:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe = max(e / e_total, PSI_FLOOR)
        pa = (a + PSI_PRIOR_COUNTS * pe) / (a_total + PSI_PRIOR_COUNTS)
        total += (pa - pe) * math.log(pa / pe)
    return total


def histogram_from_percentiles(stats: dict[str, float], edges: Sequence[int] = LENGTH_EDGES) -> list[float] | None:
    """An approximate length histogram from the data report's percentiles (min/p50/p90/p99/max),
    for models trained before the report stored a histogram: the CDF is taken as linear between them."""
    try:
        points = [(float(stats["min"]), 0.0), (float(stats["p50"]), 0.5), (float(stats["p90"]), 0.9),
                  (float(stats["p99"]), 0.99), (float(stats["max"]) + 1, 1.0)]
        count = float(stats["count"])
    except (KeyError, TypeError, ValueError):
        return None

    def cdf(x: float) -> float:
        if x <= points[0][0]:
            return 0.0
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if x < x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 > x0 else y1
        return 1.0

    bounds = [*edges, math.inf]
    return [count * (cdf(b) - cdf(a)) for a, b in itertools.pairwise(bounds)]
