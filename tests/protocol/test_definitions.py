"""One definition each: the hyperparameter bounds and the task names, shared by every package."""

from __future__ import annotations

from typing import get_args

import pytest
from pydantic import ValidationError

from aiaas.core.errors import InvalidRequest
from aiaas.protocol import jobs, tasks
from aiaas.training.config import TrainConfig

BOUNDS = {
    "n_epochs": jobs.N_EPOCHS_BOUNDS,
    "batch_size": jobs.BATCH_SIZE_BOUNDS,
    "learning_rate_multiplier": jobs.LEARNING_RATE_MULTIPLIER_BOUNDS,
    "layerwise_lr_decay": jobs.LAYERWISE_LR_DECAY_BOUNDS,
    "reinit_layers": jobs.REINIT_LAYERS_BOUNDS,
    "freeze_layers": jobs.FREEZE_LAYERS_BOUNDS,
}
LOW_EXCLUDED = ("learning_rate_multiplier", "layerwise_lr_decay")


def _wire_ok(name: str, value: object) -> bool:
    try:
        jobs.Hyperparameters.model_validate({name: value})
    except ValidationError:
        return False
    return True


def _engine_ok(name: str, value: object) -> bool:
    try:
        TrainConfig(base_model="x", **{name: value})
    except InvalidRequest as exc:
        assert exc.param == name
        return False
    return True


@pytest.mark.parametrize("name", sorted(BOUNDS))
def test_wire_and_engine_accept_and_refuse_the_same_hyperparameters(name: str) -> None:
    low, high = BOUNDS[name]
    step = 1 if isinstance(low, int) else 1e-6
    low_inside = low + step if name in LOW_EXCLUDED else low
    cases = {low_inside: True, high: True, low_inside - step: False, high + step: False, "auto": True}
    for value, ok in cases.items():
        assert _wire_ok(name, value) is ok, (name, value)
        assert _engine_ok(name, value) is ok, (name, value)


def test_the_wire_message_names_the_bounds() -> None:
    with pytest.raises(ValidationError, match="n_epochs must be between 1 and 50 or 'auto'"):
        jobs.Hyperparameters(n_epochs=51)
    with pytest.raises(ValidationError, match="learning_rate_multiplier must be > 0 and <= 100 or 'auto'"):
        jobs.Hyperparameters(learning_rate_multiplier=0)
    with pytest.raises(ValidationError, match="layerwise_lr_decay must be > 0 and <= 1 or 'auto'"):
        jobs.Hyperparameters(layerwise_lr_decay=1.2)
    with pytest.raises(ValidationError, match="reinit_layers must be between 0 and 48 or 'auto'"):
        jobs.Hyperparameters(reinit_layers=-1)
    with pytest.raises(ValidationError, match="freeze_layers must be between 0 and 48 or 'auto'"):
        jobs.Hyperparameters.model_validate({"freeze_layers": True})
    with pytest.raises(ValidationError, match="reinit_pooler must be true, false or 'auto'"):
        jobs.Hyperparameters.model_validate({"reinit_pooler": "sometimes"})


def test_every_package_uses_the_one_task_list() -> None:
    from aiaas.data import types as data_types
    from aiaas.registry.export import pipeline
    from aiaas.serving import interface, runtime
    from aiaas.training import config

    assert tasks.TASKS == get_args(tasks.Task) == get_args(jobs.JobCreate.model_fields["task"].annotation)
    assert data_types.TASKS is tasks.TASKS and data_types.Task is tasks.Task
    assert config.TASKS is tasks.TASKS and pipeline.CLASSIFIER_TASKS is tasks.TASKS
    assert runtime.TASKS is interface.TASKS is tasks.ARTIFACT_TASKS == (*tasks.TASKS, "embedding")
    assert (interface.SINGLE_LABEL, interface.MULTI_LABEL, interface.REGRESSION) == tasks.TASKS
    default = jobs.JobCreate.model_fields["task"].default
    assert default == tasks.DEFAULT_TASK == TrainConfig(base_model="x").task
