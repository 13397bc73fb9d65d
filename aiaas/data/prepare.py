"""prepare_dataset: from uploaded files to cleaned, validated, split examples plus a data report.

The order matters and is fixed: read -> check columns -> clean (text, labels,
missing, duplicates, conflicts) -> check there is enough to learn from -> split
(or clean the given validation file the same way) -> report. Every refusal is an
InvalidFile/InvalidRequest that names the field and, for row problems, the line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.data.cleaning import Cleaned
from aiaas.data.limits import ReadLimits
from aiaas.data.profile import text_profile
from aiaas.data.prepare_read import Columns, FileRead, read_cleaned
from aiaas.data.report import label_counts, label_warnings, percentiles
from aiaas.data.split import auto_fraction, multilabel_split, random_split, stratified_split
from aiaas.data.types import TASKS, CleaningConfig, Example, PreparedData, Task
from aiaas.protocol.tasks import DEFAULT_TASK

logger = logging.getLogger(__name__)

MAX_NAMES_LISTED = 10


def prepare_dataset(
    train_path: Path,
    *,
    train_filename: str,
    validation_path: Path | None = None,
    validation_filename: str | None = None,
    text_column: str = "text",
    label_column: str = "label",
    task: Task = DEFAULT_TASK,
    cleaning: CleaningConfig | dict[str, Any] | None = None,
    seed: int = 42,
    validation_fraction: float | None = None,
    min_rows: int = 8,
    min_rows_per_class: int = 2,
    limits: ReadLimits | None = None,
) -> PreparedData:
    """Read, clean, check and split a training file (and an optional validation file).

    `validation_fraction=None` picks a share by size (20% under 1k rows, 15% under 10k,
    else 10%, at most 10k rows). It is ignored when a validation file is given.
    `cleaning` may also be the stored dict form (checked by CleaningConfig.from_dict).
    `limits` bound what the files may decode to (the process settings' when None).
    """
    _check_arguments(task, text_column, label_column, validation_fraction, min_rows, min_rows_per_class)
    if not isinstance(cleaning, CleaningConfig):
        cleaning = CleaningConfig.from_dict(cleaning)
    config = cleaning.resolved(lowercase=False)
    classification = task != "regression"
    read = _Reading(Columns(text_column, label_column, task, config), limits)

    # Training rows: read, cleaned, and refused at once if a model cannot learn from them.
    train_table, train = read(train_path, train_filename, "training_file")
    _check_training(train, task, min_rows, min_rows_per_class)

    # Validation rows: the given file, cleaned the same way, or a seeded split of the training rows.
    validation_report: dict[str, Any] | None = None
    fraction: float | None = None
    if validation_path is not None:
        validation_table, held_out = read(validation_path, validation_filename, "validation_file")
        train_examples, validation_examples = _hold_out_file(train, held_out, config.dedupe, classification)
        validation_report = _validation_file_report(validation_table, held_out)
    else:
        fraction = validation_fraction if validation_fraction is not None else auto_fraction(len(train))
        train_examples, validation_examples = _hold_out_split(train, task, fraction, seed)

    report = _report(
        train_table, train, train_examples, validation_examples, task=task, text_column=text_column,
        label_column=label_column, fraction=fraction, seed=seed, validation_report=validation_report,
    )
    logger.info("prepared %s data: %d rows read, %d train, %d validation",
                task, train.rows_read, len(train_examples), len(validation_examples))
    return PreparedData(task=task, train=train_examples, validation=validation_examples,
                        labels=report["labels"], report=report, cleaning=config.to_dict())


@dataclass(frozen=True)
class _Reading:
    """How both files are read and cleaned: the same columns, task and cleaning for each.

    Each record is cleaned as it is read and only the rows kept are held (prepare_read.py), so
    a file of many duplicate rows costs the memory of its distinct rows, not of the file."""

    columns: Columns
    limits: ReadLimits | None

    def __call__(self, path: Path, filename: str | None, param: str) -> tuple[FileRead, Cleaned]:
        return read_cleaned(path, filename, param, self.columns, self.limits)


def _examples(cleaned: Cleaned, rows: Iterable[int] | None = None) -> list[Example]:
    """`cleaned` as examples: all its rows, or those at `rows`."""
    if rows is None:
        return [Example(t, lab) for t, lab in zip(cleaned.texts, cleaned.labels, strict=True)]
    return [Example(cleaned.texts[i], cleaned.labels[i]) for i in rows]


def _hold_out_file(
    train: Cleaned, held_out: Cleaned, dedupe: bool, classification: bool
) -> tuple[list[Example], list[Example]]:
    """(train, validation) examples when a validation file is given; refuses an unusable one."""
    if dedupe:
        _drop_texts_seen_in_training(held_out, set(train.texts))
    _check_validation_file(held_out, train, classification)
    return _examples(train), _examples(held_out)


def _hold_out_split(
    train: Cleaned, task: Task, fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, validation) examples split from the training rows; refuses too few to hold any out."""
    train_idx, validation_idx = _split(train, task, fraction, seed)
    if not validation_idx:
        raise InvalidFile(
            f"training_file has too few rows to hold any out for validation ({len(train)} usable rows); "
            "add rows, or upload a validation_file.",
            param="training_file",
        )
    return _examples(train, train_idx), _examples(train, validation_idx)


def _validation_file_report(table: FileRead, held_out: Cleaned) -> dict[str, Any]:
    return {
        "format": table.format,
        "encoding": table.encoding,
        "columns": table.columns,
        "rows_read": held_out.rows_read,
        "rows_dropped": held_out.dropped,
        "duplicates_removed": held_out.dropped["duplicate"],
        "conflicts": held_out.conflicts,
    }


def _report(
    train_table: FileRead,
    train: Cleaned,
    train_examples: list[Example],
    validation_examples: list[Example],
    *,
    task: Task,
    text_column: str,
    label_column: str,
    fraction: float | None,
    seed: int,
    validation_report: dict[str, Any] | None,
) -> dict[str, Any]:
    """The data report stored with the job: what was read, dropped, kept and split, and the labels."""
    classification = task != "regression"
    train_counts = label_counts([e.label for e in train_examples]) if classification else {}
    both = train_examples + validation_examples
    report: dict[str, Any] = {
        "task": task,
        "format": train_table.format,
        "encoding": train_table.encoding,
        "columns": train_table.columns,
        "text_column": text_column,
        "label_column": label_column,
        "rows_read": train.rows_read,
        "rows_dropped": train.dropped,
        "duplicates_removed": train.dropped["duplicate"],
        "conflicts": train.conflicts,
        "rows_kept": len(train),
        "n_train": len(train_examples),
        "n_validation": len(validation_examples),
        "validation_source": "file" if validation_report else "split",
        "validation_fraction": fraction,
        "seed": seed,
        "labels": sorted(train_counts),
        "label_counts": {
            "train": train_counts,
            "validation": label_counts([e.label for e in validation_examples]) if classification else {},
        },
        "text_length_chars": percentiles([len(e.text) for e in both]),
        # Length and script histograms in the bins live-traffic monitoring uses (data/profile.py).
        "text_profile": text_profile([e.text for e in both]),
        "warnings": _warnings(train, train_counts),
    }
    if not classification:
        report["label_stats"] = {
            # Regression: every label is a float here, but Example.label is typed as any task's label.
            "train": percentiles([float(e.label) for e in train_examples]),  # type: ignore[arg-type]
            "validation": percentiles([float(e.label) for e in validation_examples]),  # type: ignore[arg-type]
        }
    if validation_report is not None:
        report["validation_file"] = validation_report
    return report


def _check_arguments(
    task: str, text_column: str, label_column: str, fraction: float | None, min_rows: int, min_per_class: int
) -> None:
    if task not in TASKS:
        raise InvalidRequest(f"task must be one of {', '.join(TASKS)}, not {task!r}.", param="task")
    if text_column == label_column:
        raise InvalidRequest(
            f"text_column and label_column are both {text_column!r}; they must name different columns.",
            param="label_column",
        )
    if fraction is not None and not 0 < fraction < 1:
        raise InvalidRequest(
            f"validation_fraction must be between 0 and 1 (for example 0.2), not {fraction!r}.",
            param="validation_fraction",
        )
    if min_rows < 2:
        raise InvalidRequest(f"min_rows must be at least 2, not {min_rows}.", param="min_rows")
    if min_per_class < 1:
        raise InvalidRequest(
            f"min_rows_per_class must be at least 1, not {min_per_class}.", param="min_rows_per_class"
        )


def _dropped_summary(cleaned: Cleaned) -> str:
    parts = [f"{count} {reason.replace('_', ' ')}" for reason, count in cleaned.dropped.items() if count]
    return f"{cleaned.rows_read} read" + (f"; dropped: {', '.join(parts)}" if parts else "")


def _names(counts: dict[str, int]) -> str:
    shown = [f"{name!r} ({count})" for name, count in list(counts.items())[:MAX_NAMES_LISTED]]
    if len(counts) > MAX_NAMES_LISTED:
        shown.append(f"... ({len(counts)} in all)")
    return ", ".join(shown)


def _check_training(train: Cleaned, task: Task, min_rows: int, min_per_class: int) -> None:
    """Refuse data a model cannot learn from, saying what to add or fix."""
    if len(train) < min_rows:
        raise InvalidFile(
            f"training_file has {len(train)} usable rows after cleaning ({_dropped_summary(train)}); "
            f"at least {min_rows} are needed. Add more labelled rows.",
            param="training_file",
        )
    if task == "regression":
        return
    counts = label_counts(train.labels)
    if len(counts) < 2:
        only = f" (every row is {next(iter(counts))!r})" if counts else ""
        raise InvalidFile(
            f"training_file has a single label{only}; classification needs at least 2 distinct labels. "
            "Check label_column, or add rows for other labels.",
            param="training_file",
        )
    rare = {name: count for name, count in counts.items() if count < min_per_class}
    if rare:
        rare = dict(sorted(rare.items(), key=lambda kv: (kv[1], kv[0])))
        message = (
            f"training_file has labels with fewer than {min_per_class} rows: {_names(rare)}. "
            "Add examples for them, or remove those rows."
        )
        if len(counts) > len(train) / 2:
            message += " Most labels occur only once: does label_column point at the text?"
        raise InvalidFile(message, param="training_file")


def _drop_texts_seen_in_training(held_out: Cleaned, train_texts: set[str]) -> None:
    """A validation row that is also a training row would only flatter the metrics."""
    keep = [i for i, text in enumerate(held_out.texts) if text not in train_texts]
    held_out.dropped["in_training_file"] = len(held_out) - len(keep)
    held_out.texts = [held_out.texts[i] for i in keep]
    held_out.labels = [held_out.labels[i] for i in keep]
    held_out.positions = [held_out.positions[i] for i in keep]


def _check_validation_file(held_out: Cleaned, train: Cleaned, classification: bool) -> None:
    if not len(held_out):
        raise InvalidFile(
            f"validation_file has no usable rows after cleaning ({_dropped_summary(held_out)}).",
            param="validation_file",
        )
    if not classification:
        return
    unseen = sorted(set(label_counts(held_out.labels)) - set(label_counts(train.labels)))
    if unseen:
        shown = ", ".join(repr(n) for n in unseen[:MAX_NAMES_LISTED])
        if len(unseen) > MAX_NAMES_LISTED:
            shown += f", ... ({len(unseen)} in all)"
        raise InvalidFile(
            f"validation_file has labels that never occur in training_file: {shown}. The model can only "
            "predict labels it was trained on; add training rows for them or remove those rows.",
            param="validation_file",
        )


def _split(train: Cleaned, task: Task, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if task == "regression":
        return random_split(len(train), fraction, seed)
    if task == "multi_label_classification":
        # Cleaned.labels holds lists of names for multi-label tasks, names otherwise; typed as either.
        return multilabel_split(train.labels, fraction, seed)  # type: ignore[arg-type]
    return stratified_split(train.labels, fraction, seed)  # type: ignore[arg-type]


def _warnings(train: Cleaned, counts: dict[str, int]) -> list[str]:
    warnings = label_warnings(counts)
    dropped = sum(train.dropped.values())
    if train.rows_read and dropped / train.rows_read > 0.2:
        warnings.append(
            f"cleaning dropped {dropped} of {train.rows_read} rows ({dropped / train.rows_read:.0%}); "
            "see rows_dropped"
        )
    return warnings
