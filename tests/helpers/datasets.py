"""Small labelled datasets written by the tests (no downloads)."""

from __future__ import annotations

import csv
import io
import random

POSITIVE = ["great service thank you", "the product is excellent", "works well and fast", "very happy with it",
            "excellent support team", "great value thank you"]
NEGATIVE = ["terrible experience never again", "the app crashes on login", "my card was charged twice",
            "login fails with an error", "where is my package it is late", "refund my money now"]


def toy_rows(n_per_class: int = 20, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n_per_class):
        rows.append((f"{rng.choice(POSITIVE)} {i}", "positive"))
        rows.append((f"{rng.choice(NEGATIVE)} {i}", "negative"))
    rng.shuffle(rows)
    return rows


def toy_csv(n_per_class: int = 20, seed: int = 0, *, header: tuple[str, str] = ("text", "label")) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(toy_rows(n_per_class, seed))
    return buf.getvalue().encode()
