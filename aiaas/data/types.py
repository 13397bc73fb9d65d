"""The data package's value types: what callers pass in and what they get back.

Kept apart from the parsing and cleaning code so that other packages (training,
registry, api) can import these small types without pulling in pandas or pyarrow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from aiaas.core.errors import InvalidRequest
from aiaas.protocol.tasks import TASKS, Task  # noqa: F401 - TASKS re-exported; defined once, in protocol

Format = Literal["csv", "jsonl", "parquet"]

# A label after cleaning: a class name, a sorted list of class names, or a number.
Label = str | list[str] | float


@dataclass
class CleaningConfig:
    """Which cleaning steps run. Recorded with the model so serving can repeat the text steps.

    `lowercase=None` means "let the caller decide from the base model's casing"; the data
    package itself treats it as False, and records the value it actually applied.
    """

    drop_missing: bool = True
    lowercase: bool | None = None
    strip: bool = True
    replace_newlines: bool = True
    dedupe: bool = True
    normalize_labels: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CleaningConfig:
        """Build from user JSON, naming the first unknown or mistyped key so it can be fixed."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise InvalidRequest(
                f'cleaning must be an object such as {{"dedupe": true}}, not {type(d).__name__}.',
                param="cleaning",
            )
        known = [f.name for f in fields(cls)]
        for key, value in d.items():
            if key not in known:
                raise InvalidRequest(
                    f"Unknown cleaning option {key!r}; the options are: {', '.join(known)}.",
                    param=f"cleaning.{key}",
                )
            nullable = key == "lowercase"
            if not isinstance(value, bool) and not (nullable and value is None):
                allowed = "true, false or null" if nullable else "true or false"
                raise InvalidRequest(
                    f"cleaning.{key} must be {allowed}, not {value!r}.", param=f"cleaning.{key}"
                )
        return cls(**d)

    def resolved(self, *, lowercase: bool = False) -> CleaningConfig:
        """A copy with `lowercase` decided (None becomes the given default)."""
        values = self.to_dict()
        if values["lowercase"] is None:
            values["lowercase"] = lowercase
        return CleaningConfig(**values)


@dataclass(slots=True)
class Example:
    """One cleaned training example (slots: a large training set holds millions)."""

    text: str
    label: Label


@dataclass
class PreparedData:
    """Everything a training job needs from the data step, plus the report shown to the user."""

    task: Task
    train: list[Example]
    validation: list[Example]
    labels: list[str]
    report: dict[str, Any]
    cleaning: dict[str, Any]
    # What the job's data step already computed from these rows for a model family, by family (e.g.
    # tfidf-linear's character ids, made for the token statistics), so training does not redo it.
    encodings: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileSummary:
    """What an upload holds, found by parsing it once when it arrives."""

    format: Format
    encoding: str | None
    rows: int
    columns: list[str]
