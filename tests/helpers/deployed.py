"""Register an exported tiny model directly in the registry (no training), for inference tests."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from aiaas.registry import models as registry
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted
from tests.helpers.tiny_bert import build_tiny_bert


_EXPORTS: dict[tuple, Path] = {}  # (labels, task) -> this process's first export of that model


def export_tiny_classifier(work: Path, *, labels=("negative", "positive"), task="single_label_classification") -> Path:
    """A tiny BERT with an aiaas.json, exported to ONNX; returns the artifact root (model/ + onnx/).

    The model is the same for the same labels and task (fixed seed and vocabulary), and an ONNX export costs
    2-4 s: the first export of each kind in a test process is kept, and later calls get a copy of it."""
    key = (tuple(labels), task)
    root = work / "artifact"
    if key not in _EXPORTS:
        _EXPORTS[key] = _export(Path(tempfile.mkdtemp(prefix="aiaas-tiny-export-")), labels, task)
        atexit.register(shutil.rmtree, _EXPORTS[key].parent, True)
    shutil.copytree(_EXPORTS[key], root, dirs_exist_ok=True)
    return root


def _export(work: Path, labels, task: str) -> Path:  # type: ignore[no-untyped-def]
    from aiaas.registry.export import export_model

    root = work / "artifact"
    model_dir = build_tiny_bert(root / "model", num_labels=len(labels))
    meta = {"task": task, "labels": list(labels), "max_length": 64, "do_lower_case": True}
    if task == "multi_label_classification":
        meta["thresholds"] = [0.5] * len(labels)
    (model_dir / "aiaas.json").write_text(json.dumps(meta))
    export_model(model_dir, root / "onnx", precision="fp32")
    return root


def register(settings, db, org_id: str, artifact_root: Path, *, model_id: str, task: str, labels) -> str:
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())  # as a job stores it
    uri = blobs.put_dir(f"{org_id}/models/{model_id.rsplit(':', 1)[-1]}", artifact_root)
    with db.session() as s:
        registry.register_model(s, model_id=model_id, org_id=org_id, job_id="ftjob-test", base_model="tiny-bert",
                                task=task, artifact_uri=uri, lineage={}, card={"labels": list(labels)})
    return uri
