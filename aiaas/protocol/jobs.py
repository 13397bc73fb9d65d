"""Fine-tuning jobs, events and checkpoints on the wire (OpenAI shapes plus our extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from aiaas.protocol.common import StrictModel
from aiaas.protocol.integrations import integration_public
from aiaas.protocol.tasks import DEFAULT_TASK, Task

Auto = Literal["auto"]
TERMINAL = ("succeeded", "failed", "cancelled")

# The bounds of what a request may set, defined once: checked here on the wire, and again by
# the training engine (aiaas.training.config.TrainConfig), which reads them from here.
N_EPOCHS_BOUNDS = (1, 50)
BATCH_SIZE_BOUNDS = (1, 512)
LEARNING_RATE_MULTIPLIER_BOUNDS = (0.0, 100.0)  # the low bound excluded
LAYERWISE_LR_DECAY_BOUNDS = (0.0, 1.0)  # the low bound excluded; 1 is no decay
REINIT_LAYERS_BOUNDS = (0, 48)
FREEZE_LAYERS_BOUNDS = (0, 48)  # the model's own layer count is checked when it is loaded


def _layer_count(name: str, v: Any, bounds: tuple[int, int]) -> Any:
    """A count of encoder layers within `bounds`, or "auto" (bools refused: true is not 1 layer)."""
    low, high = bounds
    if v != "auto" and not (isinstance(v, int) and not isinstance(v, bool) and low <= v <= high):
        raise ValueError(f"{name} must be between {low} and {high} or 'auto'")
    return v


class Hyperparameters(StrictModel):
    """What a job request may set; "auto" leaves the choice to the engine (with its reasons)."""

    n_epochs: int | Auto = Field(default="auto")
    batch_size: int | Auto = Field(default="auto")
    learning_rate_multiplier: float | Auto = Field(default="auto")
    # Our extensions (transformers only; aiaas.training.recipe): the small-data recipe of issue #17 item 4.
    layerwise_lr_decay: float | Auto = Field(default="auto")
    reinit_layers: int | Auto = Field(default="auto")
    reinit_pooler: bool | Auto = Field(default="auto")
    # Lower encoder layers frozen, their output computed once and cached (aiaas.training.frozen_prefix):
    # "auto" freezes half of a BERT-shaped encoder's layers (MiniLM-L6: 3 of 6, 1.8x the samples/s of
    # training every layer for ~0.5 pt of accuracy); 0 trains every layer.
    freeze_layers: int | Auto = Field(default="auto")

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, v: int | str) -> int | str:
        low, high = N_EPOCHS_BOUNDS
        if isinstance(v, int) and not low <= v <= high:
            raise ValueError(f"n_epochs must be between {low} and {high} or 'auto'")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        low, high = BATCH_SIZE_BOUNDS
        if isinstance(v, int) and not low <= v <= high:
            raise ValueError(f"batch_size must be between {low} and {high} or 'auto'")
        return v

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _lr(cls, v: float | str) -> float | str:
        low, high = LEARNING_RATE_MULTIPLIER_BOUNDS
        if isinstance(v, float | int) and not low < v <= high:
            raise ValueError(f"learning_rate_multiplier must be > {low:g} and <= {high:g} or 'auto'")
        return v

    # "before": a value of the wrong type answers with this message and the field's own name (a union's
    # type errors would name its branches: "reinit_pooler.bool").
    @field_validator("layerwise_lr_decay", mode="before")
    @classmethod
    def _llrd(cls, v: Any) -> Any:
        low, high = LAYERWISE_LR_DECAY_BOUNDS
        number = isinstance(v, float | int) and not isinstance(v, bool)
        if v != "auto" and not (number and low < v <= high):
            raise ValueError(f"layerwise_lr_decay must be > {low:g} and <= {high:g} or 'auto'")
        return v

    @field_validator("reinit_layers", mode="before")
    @classmethod
    def _reinit(cls, v: Any) -> Any:
        return _layer_count("reinit_layers", v, REINIT_LAYERS_BOUNDS)

    @field_validator("freeze_layers", mode="before")
    @classmethod
    def _freeze(cls, v: Any) -> Any:
        return _layer_count("freeze_layers", v, FREEZE_LAYERS_BOUNDS)

    @field_validator("reinit_pooler", mode="before")
    @classmethod
    def _reinit_pooler(cls, v: Any) -> Any:
        if v != "auto" and not isinstance(v, bool):
            raise ValueError("reinit_pooler must be true, false or 'auto'")
        return v


class Preprocessing(StrictModel):
    """The cleaning steps of the pipeline; each can be switched off. `lowercase: null` follows the base model."""

    drop_missing: bool = True
    lowercase: bool | None = None
    strip: bool = True
    replace_newlines: bool = True
    dedupe: bool = True
    normalize_labels: bool = True


class SupervisedMethod(StrictModel):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)


class Method(StrictModel):
    type: Literal["supervised"] = "supervised"
    supervised: SupervisedMethod | None = None


class JobCreate(StrictModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model": "minilm-l6", "training_file": "file-abc123", "suffix": "support", "hyperparameters": {"n_epochs": 3}}]})

    # A transformer base model ("minilm-l6"), or a model family: "tfidf-linear", "auto" or
    # "auto:<base model>" (auto trains tfidf-linear and that transformer, and keeps the better).
    model: str = Field(min_length=1, max_length=300)
    training_file: str = Field(min_length=1, max_length=64)
    validation_file: str | None = Field(default=None, max_length=64)
    suffix: str | None = Field(default=None, max_length=40, pattern=r"^[A-Za-z0-9_\-]*$")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    integrations: list[Any] | None = None
    # Our extensions.
    task: Task = DEFAULT_TASK
    text_column: str = Field(default="text", min_length=1, max_length=200)
    label_column: str = Field(default="label", min_length=1, max_length=200)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    validation_fraction: float | None = Field(default=None, gt=0, lt=0.5)
    pii_policy: Literal["allow", "redact", "reject"] = "allow"
    # The registered model the job adds a version to (issue 14); default: derived from `suffix`, else
    # the base model. Checked against the naming rules by the service (code invalid_name).
    registered_model: str | None = Field(default=None, min_length=1, max_length=64)
    # model "auto" only: seconds both candidates may take together (default 900).
    time_budget_s: float | None = Field(default=None, gt=0, le=86_400)

    def resolved_hyperparameters(self) -> Hyperparameters:
        if self.method is not None and self.method.supervised is not None:
            return self.method.supervised.hyperparameters
        return self.hyperparameters or Hyperparameters()


def job_public(row: Any) -> dict[str, Any]:
    opts = row.options or {}
    return {
        "id": row.id,
        "object": "fine_tuning.job",
        "created_at": row.created_at,
        "error": row.error,
        "fine_tuned_model": row.fine_tuned_model,
        "finished_at": row.finished_at,
        "hyperparameters": row.hyperparameters,
        "model": row.model,
        "organization_id": row.org_id,
        "result_files": row.result_files or [],
        "seed": row.seed,
        "status": row.status,
        "trained_tokens": row.trained_tokens,
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "estimated_finish": row.estimated_finish,
        "integrations": [integration_public(i) for i in opts.get("integrations") or []],
        "metadata": row.job_metadata,
        "user_provided_suffix": row.suffix,
        "method": {"type": "supervised", "supervised": {"hyperparameters": row.hyperparameters}},
        # Our extensions.
        "task": opts.get("task"),
        "text_column": opts.get("text_column"),
        "label_column": opts.get("label_column"),
        "preprocessing": opts.get("preprocessing"),
        # The family the job asked for ("auto" stays "auto"; hyperparameters.family says what it kept).
        "family": opts.get("family", "transformer"),
        "time_budget_s": opts.get("time_budget_s"),
        "registered_model": opts.get("registered_model"),
        "data_report": row.data_report,
        "metrics": row.metrics,
    }


def event_public(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.event",
        "created_at": row.created_at,
        "level": row.level,
        "message": row.message,
        "type": row.type,
        "data": row.data,
    }


def checkpoint_public(row: Any, fine_tuned_model: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": row.created_at,
        "fine_tuned_model_checkpoint": f"{fine_tuned_model or row.job_id}:ckpt-step-{row.step}",
        "fine_tuning_job_id": row.job_id,
        "metrics": {"step": row.step, **(row.metrics or {})},
        "step_number": row.step,
        # Our extension (issue 14): its weights were kept, so POST /v1/registered_models/{name}/versions
        # with {"checkpoint": id} can make it a model version.
        "registrable": getattr(row, "artifact_uri", None) is not None,
    }
