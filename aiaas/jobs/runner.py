"""Run one fine-tuning job under a lease: validate and prepare the data, train, export, register.

The job's family (transformer, tfidf-linear or auto; see aiaas.training.families) decides
what trains; export and registration are the same for all of them, and the family (for
auto: both candidates' validation scores, the choice and why) is carried into the job's
hyperparameters, the lineage and the model card.

Every state change goes through `Lease.write`, so a worker that lost its lease (killed
and replaced, paused too long) cannot touch the job any more. A job re-claimed after a
crash runs this again: data preparation is deterministic for the job's seed, and train()
resumes from the newest checkpoint in the job's work directory.

Blobs are read and written through the encrypting store (the organisation's data key,
unwrapped with the master secret), and the attempt's usage (trained tokens, CPU seconds)
is written with the job's final state, under the lease.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from aiaas import __version__
from aiaas.core.clock import now
from aiaas.core.errors import AiaasError
from aiaas.core.ids import new_id
from aiaas.core.settings import Settings, make_private_dir
from aiaas.protocol.tasks import DEFAULT_TASK
from aiaas.jobs import kept_checkpoints
from aiaas.jobs.lease import Lease
from aiaas.jobs.mlflow_tracker import card_text
from aiaas.jobs.token_stats import token_stats
from aiaas.jobs.tracking import TrackingCallbacks, flat_params, start_tracking
from aiaas.jobs.workdir import attempt_dir
from aiaas.registry import models as registry
from aiaas.services.usage import training_event
from aiaas.store import files as file_store
from aiaas.store import jobs as job_store
from aiaas.store.blobs import BlobStore
from aiaas.store.encrypted import encrypted
from aiaas.store.models import File, FineTuningJob, JobCheckpoint, Organization, UsageEvent

log = logging.getLogger(__name__)
LEVELS = {"warning": "warn", "warn": "warn", "error": "error", "info": "info", "debug": "info"}


class JobCallbacks:
    """What train() reports, written to the store under the lease."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.started = time.monotonic()
        self.first_step: int | None = None

    def event(self, level: str, message: str, *, type: str = "message", data: dict | None = None) -> None:
        def write(s: Any, job: FineTuningJob) -> None:
            job_store.add_event(s, job, LEVELS.get(level, "info"), message, type=type, data=data)
            if data and "step" in data and "total_steps" in data:
                self._estimate(job, int(data["step"]), int(data["total_steps"]))

        self.lease.write(write)

    def _estimate(self, job: FineTuningJob, step: int, total: int) -> None:
        if self.first_step is None:
            self.first_step = step
            self.started = time.monotonic()
            return
        done = step - self.first_step
        if done > 0:
            rate = (time.monotonic() - self.started) / done
            job.estimated_finish = now() + int(rate * max(0, total - step))

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        def write(s: Any, job: FineTuningJob) -> None:
            s.add(JobCheckpoint(id=new_id("ftckpt"), org_id=job.org_id, job_id=job.id, step=step,
                                metrics=_jsonable(metrics), created_at=now()))

        self.lease.write(write)

    def should_stop(self) -> bool:
        return self.lease.should_stop

    def seconds_to_save_before_stop(self) -> float | None:
        """A worker shutting down (not a cancel, not a lost lease) keeps the run's progress: the seconds it
        has left to write a checkpoint before it exits (inf without a deadline); None: stop without one."""
        lease = self.lease
        if not lease.shutdown.is_set() or lease.cancelled.is_set() or lease.lost.is_set():
            return None
        deadline = lease.shutdown_deadline
        return math.inf if deadline is None else deadline - time.monotonic()


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, int | float | str | bool) or v is None:
            out[k] = v
        elif isinstance(v, list | dict):
            out[k] = v
        else:
            out[k] = float(v) if hasattr(v, "__float__") else str(v)
    return out


class CpuMeter:
    """CPU seconds this process (all its threads) and its finished children used since start."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    def seconds(self) -> float:
        return max(0.0, self._now() - self.start)

    def usage(self, job: FineTuningJob, trained_tokens: int = 0) -> UsageEvent:
        return training_event(org_id=job.org_id, key_id=job.created_by, model=job.model,
                              trained_tokens=trained_tokens, cpu_seconds=self.seconds())


def fail(lease: Lease, error: AiaasError | Exception, *, usage: UsageEvent | None = None) -> None:
    if isinstance(error, AiaasError):
        body = {"code": error.code, "message": error.message, "param": error.param}
    else:
        body = {"code": "internal_error", "message": f"Training failed: {type(error).__name__}: {error}",
                "param": None}

    def write(s: Any, job: FineTuningJob) -> None:
        job.status = "failed"
        job.error = body
        job.finished_at = now()
        job_store.add_event(s, job, "error", body["message"])
        if usage is not None:
            s.add(usage)

    lease.write(write)


def run_job(lease: Lease, settings: Settings, blobs: BlobStore) -> str:
    """Run the job; returns its final status ('lost' when the lease was lost, 'stopped' on shutdown)."""
    status = _run(lease, settings, blobs)
    if lease.lost.is_set():
        # Whatever this attempt concluded, it was not written: another attempt owns the job. Its
        # directory is garbage; the job's other files are the live attempt's.
        if lease.attempt is not None:
            shutil.rmtree(settings.jobs_dir / lease.job_id / f"attempt-{lease.attempt}", ignore_errors=True)
            with contextlib.suppress(OSError):  # the job's directory, unless the live attempt works in it
                (settings.jobs_dir / lease.job_id).rmdir()
        return "lost"
    if status in job_store.TERMINAL:
        # Checkpoints only serve a resume; the artifact is in the blob store (encrypted). No plaintext
        # weights or exported data stay behind on the worker's disk.
        shutil.rmtree(settings.jobs_dir / lease.job_id, ignore_errors=True)
    return status


def _run(lease: Lease, settings: Settings, blobs: BlobStore) -> str:
    blobs = encrypted(blobs, lease.db, settings.master_secret())
    snapshot = lease.write(lambda s, job: _snapshot(s, job))
    if snapshot is None:
        return "lost"
    job, train_file, val_file, org = snapshot
    if lease.attempt is None:  # a lease handed over (Ray): the claim's number, read under the lease
        lease.attempt = job.attempts
    if lease.cancelled.is_set():
        return _cancelled(lease)
    meter = CpuMeter()
    try:
        tracking = _tracking(lease, job)
    except AiaasError as exc:  # the worker cannot send where the job asks: refused before any training
        fail(lease, exc, usage=meter.usage(job))
        return "failed"
    status = "failed"
    try:
        status = _train(lease, settings, blobs, job, train_file, val_file, org, meter, tracking)
        return status
    finally:
        _close_tracking(tracking, status)


def _train(lease: Lease, settings: Settings, blobs: BlobStore, job: FineTuningJob, train_file: File,
           val_file: File | None, org: Organization, meter: CpuMeter, tracking: TrackingCallbacks | None) -> str:
    from aiaas.training import TrainConfig, TrainingStopped
    from aiaas.training.auto_cv import KFold
    from aiaas.training.families import train_family

    try:
        family, base_name = _family(job)
        base, data = _prepare(lease, settings, blobs, job, train_file, val_file, family, base_name)
        hp = job.hyperparameters or {}
        lr_mult = hp.get("learning_rate_multiplier", "auto")
        config = TrainConfig(
            base_model=base_name,
            task=job.options.get("task", DEFAULT_TASK),
            n_epochs=hp.get("n_epochs", "auto"),
            batch_size=hp.get("batch_size", "auto"),
            learning_rate_multiplier=lr_mult,
            layerwise_lr_decay=hp.get("layerwise_lr_decay", "auto"),
            reinit_layers=hp.get("reinit_layers", "auto"),
            reinit_pooler=hp.get("reinit_pooler", "auto"),
            freeze_layers=hp.get("freeze_layers", "auto"),
            seed=job.seed,
            num_threads=settings.training_threads,
        )
        work_dir = attempt_dir(settings.jobs_dir, job.id, lease.attempt)
        result = train_family(family, config, data, work_dir, tracking or JobCallbacks(lease),
                              base_models_dir=settings.base_models_dir,
                              time_budget_s=(job.options or {}).get("time_budget_s"),
                              kfold=KFold(max_rows=settings.auto_kfold_max_rows, k=settings.auto_kfold_k))
    except TrainingStopped:
        if lease.cancelled.is_set():
            return _cancelled(lease, usage=meter.usage(job))
        return "lost" if lease.lost.is_set() else "stopped"
    except AiaasError as exc:
        fail(lease, exc, usage=meter.usage(job))
        return "failed"
    except Exception as exc:  # noqa: BLE001 - a job's failure must not kill the worker
        log.exception("job %s failed", job.id)
        fail(lease, exc, usage=meter.usage(job))
        return "failed"

    try:
        return _finish(lease, work_dir, blobs, job, org, train_file, val_file, base, data, result, meter, tracking)
    except Exception as exc:  # noqa: BLE001
        log.exception("job %s failed while registering its model", job.id)
        fail(lease, exc, usage=meter.usage(job))
        return "failed"


def _family(job: FineTuningJob) -> tuple[str, str]:
    """(family, transformer base model) of a job; jobs queued before families existed are transformers."""
    from aiaas.training.families import TRANSFORMER, family_for_model

    opts = job.options or {}
    family = opts.get("family")
    if family is None:
        return TRANSFORMER, job.model
    if family == TRANSFORMER:
        return family, opts.get("base_model") or job.model
    return family, opts.get("base_model") or family_for_model(job.model)[1]


def _snapshot(s: Any, job: FineTuningJob) -> tuple[FineTuningJob, File, File | None, Organization]:
    train_file = file_store.get_file(s, job.org_id, job.training_file, param="training_file")
    val_file = file_store.get_file(s, job.org_id, job.validation_file, param="validation_file") \
        if job.validation_file else None
    org = s.get(Organization, job.org_id)
    if job.started_at is None:
        job.started_at = now()
    if job.status != "running":
        job.status = "validating_files"
        job_store.add_event(s, job, "info", f"Validating training file: {train_file.id}")
    else:
        job_store.add_event(s, job, "info", "Job picked up by another worker; resuming.")
    s.flush()
    s.expunge_all()
    return job, train_file, val_file, org


def _cancelled(lease: Lease, *, usage: UsageEvent | None = None) -> str:
    def write(s: Any, job: FineTuningJob) -> None:
        job.status = "cancelled"
        job.finished_at = now()
        job_store.add_event(s, job, "info", "Job cancelled.")
        if usage is not None:
            s.add(usage)

    lease.write(write)
    return "cancelled"


def _prepare(lease: Lease, settings: Settings, blobs: BlobStore, job: FineTuningJob, train_file: File,
             val_file: File | None, family: str, base_name: str) -> tuple[Any, Any]:
    """Returns (the transformer base model, or None for tfidf-linear, prepared data)."""
    from aiaas.data import CleaningConfig, prepare_dataset
    from aiaas.data.pii import apply_pii_policy
    from aiaas.training import classical
    from aiaas.training.base_models import resolve_base_model
    from aiaas.training.families import TRANSFORMER

    base = None
    if family == TRANSFORMER:
        base = resolve_base_model(base_name, base_models_dir=settings.base_models_dir)
    elif family != classical.FAMILY:  # auto: a base model gone since the job was created only skips its half
        try:
            base = resolve_base_model(base_name, base_models_dir=settings.base_models_dir)
        except AiaasError as exc:
            log.warning("job %s: auto's transformer %s is unavailable: %s", job.id, base_name, exc.message)
    opts = job.options or {}
    pre = dict(opts.get("preprocessing") or {})
    if pre.get("lowercase") is None:
        # Follow the model's casing (auto: its transformer's, so both candidates see the same rows);
        # tfidf-linear's tokenizer lowercases.
        pre["lowercase"] = base.do_lower_case if base is not None else True
    # The uploads are decrypted into private temporary copies only while they are read.
    with contextlib.ExitStack() as stack:
        train_path = stack.enter_context(blobs.open_local(train_file.storage_uri))
        val_path = stack.enter_context(blobs.open_local(val_file.storage_uri)) if val_file else None
        data = prepare_dataset(
            train_path,
            train_filename=train_file.filename,
            validation_path=val_path,
            validation_filename=val_file.filename if val_file else None,
            text_column=opts.get("text_column", "text"),
            label_column=opts.get("label_column", "label"),
            task=opts.get("task", DEFAULT_TASK),
            cleaning=CleaningConfig.from_dict(pre),
            seed=job.seed,
            validation_fraction=opts.get("validation_fraction"),
        )
    policy = opts.get("pii_policy", "allow")
    texts, pii = apply_pii_policy([e.text for e in data.train], policy)
    vtexts, _ = apply_pii_policy([e.text for e in data.validation], policy)
    for e, t in zip(data.train, texts, strict=True):
        e.text = t
    for e, t in zip(data.validation, vtexts, strict=True):
        e.text = t
    data.report["pii"] = pii | {"policy": policy}
    token_stats(data, base.path if base is not None else None)  # tfidf-linear: its encoding kept

    def write(s: Any, j: FineTuningJob) -> None:
        j.data_report = data.report
        j.status = "running"
        n_tr, n_va = len(data.train), len(data.validation)
        job_store.add_event(s, j, "info", f"Files validated: {n_tr} training and {n_va} validation examples, "
                            f"{len(data.labels) or 'numeric'} labels.", data={"data_report": data.report})
        for warning in data.report.get("warnings", []):
            job_store.add_event(s, j, "warn", warning)

    lease.write(write)
    return base, data


def _finish(lease: Lease, work_dir: Path, blobs: BlobStore, job: FineTuningJob, org: Organization,
            train_file: File, val_file: File | None, base: Any, data: Any, result: Any,
            meter: CpuMeter, tracking: TrackingCallbacks | None = None) -> str:
    """Export, store the artifact, register the model version, write the results file.

    The artifact goes under a key of this attempt's own (`.../models/<job>/attempt-<n>/`) and becomes
    visible only through the lease-fenced transaction that registers it: a worker that lost its lease
    can upload an orphan under its own attempt's key, but never replace what another attempt published.
    """
    from aiaas.registry.card import build_card
    from aiaas.training.families import TRANSFORMER

    artifact_dir = result.model_dir
    export_report = _export(artifact_dir, work_dir / "onnx", data)
    family = getattr(result, "family", TRANSFORMER)
    selection = getattr(result, "selection", None)
    # What the model is built on: its transformer base, or the family's name for tfidf-linear.
    base_id = base.id if family == TRANSFORMER else family
    hyperparameters = {**result.hyperparameters, "family": family}
    model_id = registry.fine_tuned_model_id(base=base_id, org_name=org.name, suffix=job.suffix, job_id=job.id)
    if lease.lost.is_set():  # lost while exporting: nothing of this attempt may be published
        return "lost"
    key = f"{job.org_id}/models/{job.id}/attempt-{lease.attempt}"
    uri = blobs.put_dir(key + "/model", artifact_dir)
    if export_report is not None:
        blobs.put_dir(key + "/onnx", work_dir / "onnx")
    artifact_uri = uri.rsplit("/model", 1)[0]
    # Beside the model's key, not under it: deleting the job's model leaves its checkpoints usable.
    ckpt_key = f"{job.org_id}/models/{job.id}/checkpoints/attempt-{lease.attempt}"
    kept = kept_checkpoints.keep(blobs, ckpt_key, work_dir, artifact_dir, data.task) if family == TRANSFORMER else {}
    lineage = {
        "base_model": base_id,
        "family": family,
        "requested_model": job.model,
        "training_file": {"id": train_file.id, "sha256": train_file.sha256, "filename": train_file.filename},
        "validation_file": {"id": val_file.id, "sha256": val_file.sha256} if val_file else None,
        "cleaning": data.cleaning,
        "hyperparameters": hyperparameters,
        "seed": job.seed,
        "labels": data.labels,
        "metrics": result.metrics,
        "job_id": job.id,
        "aiaas_version": __version__,
    }
    if selection is not None:
        lineage["model_selection"] = selection  # auto: both candidates' scores, the choice and why
    card = build_card(model_id=model_id, task=data.task, labels=data.labels, lineage=lineage,
                      data_report=data.report, metrics=result.metrics, export=export_report,
                      thresholds=result.metrics.get("thresholds"))
    results_csv = _results_csv(result.history)
    usage = meter.usage(job, trained_tokens=result.trained_tokens or 0)
    if tracking is not None:  # sent and the runs ended before the job's last events
        _track_result(tracking, hyperparameters, result, card)
        _close_tracking(tracking, "succeeded")

    def write(s: Any, j: FineTuningJob) -> None:
        stored = blobs.put(f"{j.org_id}/files/results-{j.id}-attempt-{lease.attempt}.csv", io.BytesIO(results_csv))
        results_id = new_id("file")
        file_store.add_file(s, file_id=results_id, org_id=j.org_id, filename=f"{j.id}-results.csv",
                            purpose="fine-tune-results", size=stored.size, sha256=stored.sha256,
                            storage_uri=stored.uri, summary={"format": "csv", "rows": len(result.history)})
        registry.register_model(s, model_id=model_id, org_id=j.org_id, job_id=j.id, base_model=base_id,
                                task=data.task, artifact_uri=artifact_uri, lineage=lineage, card=card)
        for ckpt in s.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == j.id,
                                                          JobCheckpoint.step.in_(list(kept)))):
            ckpt.artifact_uri = kept[ckpt.step]
        j.fine_tuned_model = model_id
        j.status = "succeeded"
        j.finished_at = now()
        j.trained_tokens = result.trained_tokens
        j.metrics = _jsonable(result.metrics)
        hp = {k: v for k, v in hyperparameters.items() if k != "reasons"}
        if family == TRANSFORMER:
            hp["learning_rate_multiplier"] = (j.hyperparameters or {}).get("learning_rate_multiplier", "auto")
        j.hyperparameters = hp
        j.result_files = [results_id]
        j.estimated_finish = None
        job_store.add_event(s, j, "info", f"New fine-tuned model created: {model_id}",
                            data={"metrics": j.metrics})
        job_store.add_event(s, j, "info", "The job has successfully completed.")
        s.add(usage)

    return "succeeded" if lease.write(write) is not False and not lease.lost.is_set() else "lost"


MLFLOW_STATUS = {"succeeded": "FINISHED", "failed": "FAILED"}  # cancelled, stopped, lost: KILLED


def _tracking(lease: Lease, job: FineTuningJob) -> TrackingCallbacks | None:
    """The job's callbacks with its integrations' tracker, or None when it has none."""
    opts = job.options or {}
    params = flat_params("", {"job_id": job.id, "model": job.model, "task": opts.get("task"),
                              "family": opts.get("family"), "seed": job.seed, "training_file": job.training_file,
                              "validation_file": job.validation_file, "text_column": opts.get("text_column"),
                              "label_column": opts.get("label_column"), "suffix": job.suffix})
    params |= flat_params("requested.", job.hyperparameters or {})
    tracker = start_tracking(opts.get("integrations") or [], params, job_id=job.id, attempt=lease.attempt)
    return None if tracker is None else TrackingCallbacks(JobCallbacks(lease), tracker)


def _track_result(tracking: TrackingCallbacks, hyperparameters: dict, result: Any, card: dict) -> None:
    tracker = tracking.tracker
    tracker.params(flat_params("final.", hyperparameters))
    last_step = max((int(r.get("step") or 0) for r in result.history), default=0)
    tracker.metrics({**{k: v for k, v in result.metrics.items() if k != "split"}, "split": "final", "step": last_step})
    tracker.text("model_card.json", card_text(card))


def _close_tracking(tracking: TrackingCallbacks | None, status: str) -> None:
    if tracking is not None and not tracking.tracker.closed:
        tracking.report_warnings(tracking.tracker.close(MLFLOW_STATUS.get(status, "KILLED")))


def _export(model_dir: Path, out_dir: Path, data: Any) -> dict | None:
    try:
        from aiaas.registry.export import export_trained_model
    except ImportError:
        return None
    texts = [e.text for e in data.validation]
    labels = [e.label for e in data.validation] if data.task == "single_label_classification" else None
    return export_trained_model(model_dir, out_dir, validation_texts=texts or None, validation_labels=labels)


def _results_csv(history: list[dict]) -> bytes:
    from aiaas.security.csv_safe import write_csv

    keys: list[str] = []
    for rec in history:
        for k, v in rec.items():
            if k not in keys and isinstance(v, int | float | str):
                keys.append(k)
    buf = io.StringIO()
    write_csv(([rec.get(k, "") for k in keys] for rec in history), buf, header=keys)
    return buf.getvalue().encode()
