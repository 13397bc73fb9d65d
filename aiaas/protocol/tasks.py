"""The tasks a model can be trained for: the one definition every package uses.

The names are transformers' `problem_type` values, so a trained model's config.json and
our wire, data, training, export and serving code all say the same thing.
"""

from __future__ import annotations

from typing import Literal, get_args

Task = Literal["single_label_classification", "multi_label_classification", "regression"]
TASKS: tuple[Task, ...] = get_args(Task)
SINGLE_LABEL, MULTI_LABEL, REGRESSION = TASKS
DEFAULT_TASK: Task = SINGLE_LABEL
# What an exported artifact of a headless encoder (no head, /v1/embeddings only) says it does.
EMBEDDING = "embedding"
ARTIFACT_TASKS: tuple[str, ...] = (*TASKS, EMBEDDING)
