"""Creating fine-tuning jobs: check what the request names before anything is queued."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy.orm import Session

from aiaas.core.clock import now
from aiaas.core.errors import InvalidRequest
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings
from aiaas.protocol.jobs import JobCreate
from aiaas.services import catalog
from aiaas.services import files as file_service
from aiaas.services.integrations import check_integrations
from aiaas.store import files as file_store
from aiaas.store import jobs as job_store
from aiaas.store import versions
from aiaas.store.models import FineTuningJob


def create_job(session: Session, settings: Settings, *, org_id: str, body: JobCreate) -> FineTuningJob:
    train_file = file_store.get_file(session, org_id, body.training_file, param="training_file")
    file_service.require_processed(train_file, param="training_file")
    if train_file.purpose != "fine-tune":
        raise InvalidRequest(f"File {train_file.id} has purpose '{train_file.purpose}', not 'fine-tune'.",
                             param="training_file")
    if body.validation_file:
        validation = file_store.get_file(session, org_id, body.validation_file, param="validation_file")
        file_service.require_processed(validation, param="validation_file")
        if body.validation_fraction is not None:
            raise InvalidRequest("Give either validation_file or validation_fraction, not both.",
                                 param="validation_fraction")
    chosen = catalog.resolve_job_model(body.model, settings.base_models_dir)
    _check_family_options(body, chosen.family)
    columns = (train_file.summary or {}).get("columns") or []
    for field, col in (("text_column", body.text_column), ("label_column", body.label_column)):
        if columns and col not in columns:
            listed = ", ".join(f"'{c}'" for c in columns[:50])
            raise InvalidRequest(
                f"training_file has no column '{col}'; its columns are: {listed}. Set {field} to one of them.",
                param=field,
            )
    integrations = check_integrations(body.integrations, settings)
    hp = body.resolved_hyperparameters()
    job = FineTuningJob(
        id=new_id("ftjob"),
        org_id=org_id,
        model=chosen.name,
        training_file=train_file.id,
        validation_file=body.validation_file,
        status="validating_files",
        hyperparameters=hp.model_dump(),
        options={
            "task": body.task,
            "text_column": body.text_column,
            "label_column": body.label_column,
            "preprocessing": body.preprocessing.model_dump(),
            "validation_fraction": body.validation_fraction,
            "pii_policy": body.pii_policy,
            "family": chosen.family,
            "base_model": chosen.base.id if chosen.base is not None else None,
            "time_budget_s": body.time_budget_s,
            "integrations": integrations,
            "registered_model": _registered_model(body, chosen),
        },
        suffix=body.suffix or None,
        seed=body.seed if body.seed is not None else secrets.randbelow(2**31),
        job_metadata=body.metadata,
        created_at=now(),
        result_files=[],
    )
    session.add(job)
    session.flush()
    job_store.add_event(session, job, "info", f"Created fine-tuning job: {job.id}")
    return job


def _registered_model(body: JobCreate, chosen: Any) -> str:
    """The registered model the job's model becomes a version of: as named (it must follow the naming
    rules: code invalid_name), else derived from the suffix, else from the base model or family."""
    if body.registered_model is not None:
        return versions.check_name(body.registered_model, param="registered_model")
    return versions.name_from(body.suffix, chosen.base.id if chosen.base is not None else chosen.family)


def _check_family_options(body: JobCreate, family: str) -> None:
    """Refuse settings the chosen family would silently ignore."""
    from aiaas.training import classical, families

    if body.time_budget_s is not None and family != families.AUTO:
        raise InvalidRequest(
            f"time_budget_s only applies to model 'auto' (or 'auto:<base model>'), not to {family} "
            f"model '{body.model}'; remove it.",
            param="time_budget_s",
        )
    if family == classical.FAMILY:
        hp = body.resolved_hyperparameters()
        prefix = "hyperparameters" if body.hyperparameters is not None else \
            "method.supervised.hyperparameters"
        for name, value in hp.model_dump().items():
            if value != "auto":
                raise InvalidRequest(
                    f"{name} does not apply to {family}: it trains in one pass and picks its "
                    "regularisation on the validation set. Leave it 'auto', or name a transformer base "
                    "model (or 'auto') to set it.",
                    param=f"{prefix}.{name}",
                )
