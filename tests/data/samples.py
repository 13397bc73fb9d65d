"""Small data builders shared by the data tests."""

from __future__ import annotations


def labelled_csv(rows_per_label: dict[str, int], *, header: str = "text,label") -> str:
    """A CSV with distinct texts: `n` rows for each label."""
    lines = [header]
    for label, n in rows_per_label.items():
        lines.extend(f"message {i} about {label},{label}" for i in range(n))
    return "\n".join(lines) + "\n"
