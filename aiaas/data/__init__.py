"""Data for fine-tuning: read uploads (CSV/JSONL/Parquet), clean, validate, split, report.

Everything here is synchronous and CPU-bound; callers run it off the event loop.
"""

from __future__ import annotations

from pathlib import Path

from aiaas.data.cleaning import clean_text
from aiaas.data.prepare import prepare_dataset
from aiaas.data.readers import inspect_upload, read_table
from aiaas.data.report import add_token_stats
from aiaas.data.types import TASKS, CleaningConfig, Example, FileSummary, PreparedData, Task

_DEMO_DIR = Path(__file__).resolve().parent / "demo"


def demo_dataset_path() -> Path:
    """The bundled demo dataset: customer-support messages labelled with six intents."""
    return _DEMO_DIR / "support_intents.csv"


__all__ = [
    "TASKS",
    "CleaningConfig",
    "Example",
    "FileSummary",
    "PreparedData",
    "Task",
    "add_token_stats",
    "clean_text",
    "demo_dataset_path",
    "inspect_upload",
    "prepare_dataset",
    "read_table",
]
