"""The cleaning pipeline: text normalisation, label parsing per task, missing rows, duplicates.

Each step is switched by CleaningConfig and counted, so the data report can say
exactly what happened to the user's rows. Rows are handled column-wise in plain
Python lists: 100k rows clean in well under a second.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiaas.core.errors import InvalidFile
from aiaas.data.table import Table
from aiaas.data.types import CleaningConfig, Label, Task

# Every pattern here sees tenant text, so each runs in time linear in its input: possessive
# quantifiers never give back what they took (tests/hostile/test_regex_linear.py checks each).
_WHITESPACE = re.compile(r"\s++")
# Labels like "1", "-2" or "3.50" are numbers written as text; "007" is a name and stays as it is.
_NUMBER_NAME = re.compile(r"[+-]?+(?:0|[1-9]\d*+)(?:\.\d++)?+")
# `\d+\.?\d*` as it was written split a run of digits between its two halves every possible way
# before failing on a letter at the end: quadratic (7.4 s for 20k digits, holding the GIL).
_REGRESSION_NUMBER = re.compile(r"[+-]?+(?:\d++(?:\.\d*+)?+|\.\d++)(?:[eE][+-]?+\d++)?+")
_DECIMAL_COMMA = re.compile(r"(?<![\d+-])[+-]?+\d++,\d++")  # starts only where a number can
# Longer than this is not a number, whatever its characters (nor is it sent to a parser).
MAX_NUMBER_CHARS = 64
_MULTI_SEPARATORS = ("|", ";", ",")
MAX_CONFLICT_EXAMPLES = 5
MAX_ERRORS_LISTED = 5


class _CellError(ValueError):
    """A cell that cannot be used (wrong type, not a number); the message says why, not where."""


@dataclass
class Cleaned:
    """Rows that survived cleaning, with where they came from and what was dropped and why."""

    texts: list[str]
    labels: list[Label]
    positions: list[int]
    unit: str
    rows_read: int
    dropped: dict[str, int]
    conflicts: list[dict[str, Any]] = field(default_factory=list)

    def where(self, i: int) -> str:
        return f"{self.unit} {self.positions[i]}"

    def __len__(self) -> int:
        return len(self.texts)


def text_cleaner(config: CleaningConfig) -> Callable[[str], str]:
    """Compose the enabled text steps into one function (serving must apply the same one)."""
    collapse, strip, lower = config.replace_newlines, config.strip, bool(config.lowercase)

    def clean(text: str) -> str:
        if collapse:
            text = _WHITESPACE.sub(" ", text)
        if strip:
            text = text.strip()
        if lower:
            text = text.lower()
        return text

    return clean


def clean_text(text: str, cleaning: CleaningConfig | dict[str, Any]) -> str:
    """Apply the recorded text steps to one input, as done to the training data."""
    config = cleaning if isinstance(cleaning, CleaningConfig) else CleaningConfig.from_dict(cleaning)
    return text_cleaner(config)(text)


def label_key(label: Label) -> str | tuple[str, ...] | float:
    """A hashable form of a label, for duplicate and conflict detection."""
    return tuple(label) if isinstance(label, list) else label


def clean_table(
    table: Table, *, text_column: str, label_column: str, task: Task, config: CleaningConfig, param: str
) -> Cleaned:
    """Clean the text and parse the label of every row; drop or refuse incomplete rows; dedupe."""
    rows = RowCleaner(task, config, table.unit)
    for position, raw_text, raw_label in zip(
        table.positions, table.data[text_column], table.data[label_column], strict=True
    ):
        rows.add(position, raw_text, raw_label)
    return rows.result(table.rows, param)


_UNSEEN = object()
_DROP_HINT = "; fill it in, or set cleaning.drop_missing to true to drop such rows"


class RowCleaner:
    """Cleans rows one at a time as they are read, keeping only the rows that survive.

    An exact duplicate of a row already kept (same cleaned text, same label) is counted and
    forgotten at once, so a file of many repeated rows costs the memory of its distinct rows.
    A text labelled two ways teaches the model nothing but noise, and keeping either label
    would be a guess, so `result()` drops every row of such a text.
    """

    def __init__(self, task: Task, config: CleaningConfig, unit: str) -> None:
        self.clean = text_cleaner(config)
        self.parse_label = _label_parser(task, config.normalize_labels)
        self.config = config
        self.unit = unit
        self.dropped = {"missing_text": 0, "missing_label": 0, "duplicate": 0, "conflicting_label": 0}
        self.errors = _Errors()
        self.texts: list[str] = []
        self.labels: list[Label] = []
        self.positions: list[int] = []
        self.first_label: dict[str, Any] = {}  # text -> the key of the first label it was kept with
        self.other_labels: set[tuple[str, Any]] = set()  # (text, key) kept for a text's other labels
        self.names: dict[str, str] = {}  # one object per label name, however many rows carry it

    def add(self, position: int, raw_text: Any, raw_label: Any) -> None:
        """Clean one row; keep it, count it as dropped, or note its problem (see result())."""
        try:
            text = _text_value(raw_text)
        except _CellError as exc:
            self.errors.add(f"{self.unit} {position}: {exc}")
            return
        text = self.clean(text) if text is not None else ""
        if not text:
            self._missing("missing_text", position, "text")
            return
        try:
            label = self.parse_label(raw_label)
        except _CellError as exc:
            self.errors.add(f"{self.unit} {position}: {exc}")
            return
        if label is None:
            self._missing("missing_label", position, "label")
            return
        if self.config.dedupe and self._seen(text, label_key(label)):
            self.dropped["duplicate"] += 1
            return
        if isinstance(label, str):
            label = self.names.setdefault(label, label)
        self.texts.append(text)
        self.labels.append(label)
        self.positions.append(position)

    def _missing(self, reason: str, position: int, what: str) -> None:
        if self.config.drop_missing:
            self.dropped[reason] += 1
        else:
            self.errors.add(f"{self.unit} {position}: {what} is empty{_DROP_HINT}")

    def _seen(self, text: str, key: Any) -> bool:
        """True for a (text, label) already kept; otherwise remembers it."""
        first = self.first_label.get(text, _UNSEEN)
        if first is _UNSEEN:
            self.first_label[text] = key
            return False
        if first == key or (text, key) in self.other_labels:
            return True
        self.other_labels.add((text, key))
        return False

    def result(self, rows_read: int, param: str) -> Cleaned:
        """The kept rows; refuses the file (InvalidFile, `param`) if any row had a problem."""
        if self.errors.count:
            raise InvalidFile(self.errors.summary(), param=param)
        cleaned = Cleaned(self.texts, self.labels, self.positions, self.unit, rows_read, self.dropped)
        conflicted = {text for text, _ in self.other_labels}
        self.first_label, self.other_labels = {}, set()
        if conflicted:
            _drop_conflicts(cleaned, conflicted)
        return cleaned


class _Errors:
    """Row problems: all are counted, the first few kept, so one re-upload can fix them all."""

    def __init__(self) -> None:
        self.count = 0
        self.kept: list[str] = []

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.kept) <= MAX_ERRORS_LISTED:
            self.kept.append(message)

    def summary(self) -> str:
        """The first problem in full, then where the next few are."""
        message = self.kept[0]
        if self.count > 1:
            more = [m.split(":", 1)[0] for m in self.kept[1:]]
            extra = "" if self.count - 1 <= len(more) else ", ..."
            message += f" ({self.count - 1} more row(s) have problems: {', '.join(more)}{extra})"
        return message


def _drop_conflicts(cleaned: Cleaned, conflicted: set[str]) -> None:
    """Drop every row of a text kept with two or more labels; keep a few as examples for the report."""
    keep: list[int] = []
    examples: dict[str, dict[str, Any]] = {}
    for i, text in enumerate(cleaned.texts):
        if text not in conflicted:
            keep.append(i)
            continue
        cleaned.dropped["conflicting_label"] += 1
        if text in examples or len(examples) < MAX_CONFLICT_EXAMPLES:
            example = examples.setdefault(text, {cleaned.unit + "s": [], "labels": []})
            example[cleaned.unit + "s"].append(cleaned.positions[i])
            example["labels"].append(cleaned.labels[i])
    cleaned.conflicts = list(examples.values())
    cleaned.texts = [cleaned.texts[i] for i in keep]
    cleaned.labels = [cleaned.labels[i] for i in keep]
    cleaned.positions = [cleaned.positions[i] for i in keep]


# --- cell values -------------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _text_value(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    raise _CellError(f"text must be a string, found {type(value).__name__} {_short(value)}")


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _label_parser(task: Task, normalize: bool) -> Callable[[Any], Label | None]:
    if task == "regression":
        return _regression_label
    if task == "multi_label_classification":
        return lambda value: _multi_label(value, normalize)
    return lambda value: _single_label(value, normalize)


def _number_name(value: int | float) -> str:
    """1, 1.0 and "1" all name the class "1"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _label_name(value: Any, normalize: bool) -> str | None:
    """One class name from a cell or list item; None when it is missing or blank."""
    if _is_missing(value):
        return None
    if isinstance(value, bool):
        name = "true" if value else "false"
    elif isinstance(value, (int, float)):
        name = _number_name(value) if normalize else str(value)
    elif isinstance(value, str):
        name = value
        if normalize:
            name = name.strip()
            if len(name) <= 30 and _NUMBER_NAME.fullmatch(name):  # longer "numbers" stay text, as written
                name = _number_name(float(name)) if "." in name else str(int(name))
    else:
        raise _CellError(f"label must be a single value, found {type(value).__name__} {_short(value)}")
    return name if name.strip() else None


def _single_label(value: Any, normalize: bool) -> str | None:
    if isinstance(value, (list, tuple)):
        raise _CellError(
            f"label is a list {_short(value)}; for several labels per row set task to "
            "multi_label_classification"
        )
    return _label_name(value, normalize)


def _multi_label(value: Any, normalize: bool) -> list[str] | None:
    """Several labels: a JSON/Arrow list, a JSON list in text, or text split on '|', ';' or ','."""
    if _is_missing(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except (json.JSONDecodeError, RecursionError, ValueError):  # ValueError: a huge integer
                raise _CellError(
                    f"label {_short(value)} starts with '[' but is not a valid JSON list of names"
                ) from None
            if not isinstance(value, list):
                raise _CellError(f"label {_short(text)} is not a JSON list")
        else:
            separator = next((s for s in _MULTI_SEPARATORS if s in text), None)
            value = text.split(separator) if separator else [text]
    if not isinstance(value, (list, tuple)):
        value = [value]
    names = {name for item in value if (name := _label_name(item, normalize)) is not None}
    return sorted(names) or None


def _regression_label(value: Any) -> float | None:
    if _is_missing(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _CellError(f"label {_short(value)} is not a number; regression needs a number in every row")
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if len(text) > MAX_NUMBER_CHARS or not _REGRESSION_NUMBER.fullmatch(text):
            hint = "; write decimals with a dot (1.5)" if _DECIMAL_COMMA.fullmatch(text) else ""
            raise _CellError(
                f"label {_short(value)} is not a number; regression needs a number in every row{hint}"
            )
        number = float(text)
    else:
        number = float(value)
    if not math.isfinite(number):
        raise _CellError(f"label {_short(value)} is not a finite number")
    return number
