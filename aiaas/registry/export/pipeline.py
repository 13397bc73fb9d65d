"""The transformer export pipeline: tokenizer and fp32 graph (trace.py), cheaper precision
candidates (precisions.py) judged by the accuracy guard (guard.py), the choice, and the
artifact's aiaas.json with this export's report under "runtime".
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path

from aiaas.core.errors import InvalidFile
from aiaas.protocol.tasks import EMBEDDING, TASKS
from aiaas.registry.export import guard, precisions, trace
from aiaas.registry.export.shared import check_precision, latency_fields, validation_set
from aiaas.serving import runtime as rt
from aiaas.serving.machine import cpu_features

logger = logging.getLogger(__name__)

CLASSIFIER_TASKS = TASKS  # models with a head; headless encoders go through export_base_model
LATENCY_SAMPLE = 32


def export_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    validation_labels: list | None = None,
    precision: str = "auto",
) -> dict:
    """Export a fine-tuned HF classifier/regressor (model_dir has aiaas.json); returns the runtime report."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = _read_model_meta(model_dir)
    return _export(
        model_dir,
        out_dir,
        meta,
        head=True,
        validation_texts=validation_texts,
        validation_labels=validation_labels,
        precision=precision,
    )


def export_base_model(
    model_dir: Path,
    out_dir: Path,
    *,
    validation_texts: list[str] | None = None,
    precision: str = "auto",
    max_length: int | None = None,
) -> dict:
    """Export a headless encoder (e.g. MiniLM for /v1/embeddings): only the "embeddings" output."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    meta = {
        "task": EMBEDDING,
        "labels": [],
        "max_length": max_length or _default_max_length(model_dir),
        "do_lower_case": _tokenizer_config(model_dir).get("do_lower_case", False),
    }
    return _export(
        model_dir,
        out_dir,
        meta,
        head=False,
        validation_texts=validation_texts,
        validation_labels=None,
        precision=precision,
    )


def _export(
    model_dir: Path,
    out_dir: Path,
    meta: dict,
    *,
    head: bool,
    validation_texts: list[str] | None,
    validation_labels: list | None,
    precision: str,
) -> dict:
    check_precision(precision)
    texts, labels = validation_set(validation_texts, validation_labels)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    features = cpu_features()

    fp32_path = out_dir / "model.fp32.onnx"
    trial = _fp32_trial(model_dir, fp32_path, meta, head=head, texts=texts, labels=labels, features=features)
    if precision in ("auto", "int8"):
        precisions.try_int8(trial, fp32_path, features)
    if precision in ("auto", "bf16"):
        precisions.try_bf16(trial, fp32_path, features)

    latency = trial.latency(texts[:LATENCY_SAMPLE])
    decisions, candidates = trial.decisions, trial.candidates
    chosen, why = guard.choose(precision, decisions, latency, candidates)
    runtime = trial.meta["runtime"]
    for name, candidate in candidates.items():
        candidate["chosen"] = name == chosen
        if name != chosen and name in runtime["files"]:  # keep the artifact lean
            (out_dir / runtime["files"].pop(name)).unlink(missing_ok=True)
            runtime["requires"].pop(name, None)
    runtime.update(
        {
            "precision": chosen,
            "file": runtime["files"][chosen],
            "reason": why,
            "agreement": {name: d.agreement for name, d in decisions.items()},
            "accuracy": guard.accuracy_report(decisions),
            **latency_fields(latency),
            "candidates": candidates,
            "validation_texts": len(texts),
        }
    )
    if head:
        runtime["first_token"] = {chosen: guard.judge_first_token(trial, chosen, texts[:LATENCY_SAMPLE])}
    runtime["export_seconds"] = round(time.perf_counter() - started, 2)
    (out_dir / rt.META_FILE).write_text(json.dumps(trial.meta, indent=2))
    logger.info("exported %s -> %s: %s (%s)", model_dir, out_dir, chosen, why)
    return runtime


def _fp32_trial(
    model_dir: Path,
    fp32_path: Path,
    meta: dict,
    *,
    head: bool,
    texts: list[str],
    labels: list | None,
    features: dict,
) -> guard.Trial:
    """Tokenizer and fp32 graph written and checked against torch: what candidates are judged by."""
    out_dir = fp32_path.parent
    pad_id = _write_tokenizer(model_dir, out_dir / rt.TOKENIZER_FILE, max_length=meta["max_length"])
    torch_reference, embedding_dim = trace.export_fp32(
        model_dir, fp32_path, meta, head=head, texts=texts[:16], pad_id=pad_id
    )
    runtime: dict = {
        "pad_token_id": pad_id,
        "embedding_dim": embedding_dim,
        "bucket_size": rt.DEFAULT_BUCKET_SIZE,
        "outputs": [rt.OUTPUT_LOGITS, rt.OUTPUT_EMBEDDINGS] if head else [rt.OUTPUT_EMBEDDINGS],
        "files": {"fp32": fp32_path.name},
        "requires": {},
        "machine": features,
    }
    meta = {**meta, "runtime": runtime}
    fp32 = guard.one_thread_predictor(fp32_path, meta, "fp32")
    runtime["fp32_vs_torch_max_abs_diff"] = trace.check_against_torch(fp32, torch_reference)
    return guard.Trial(out_dir, meta, texts, labels, guard.served_outputs(fp32, texts), {"fp32": fp32})


# -- files ----------------------------------------------------------------------------------
def _read_model_meta(model_dir: Path) -> dict:
    meta = rt.read_meta(model_dir)
    if meta["task"] not in CLASSIFIER_TASKS:
        raise InvalidFile(
            f"{model_dir}/aiaas.json: export_model needs one of {', '.join(CLASSIFIER_TASKS)}; "
            "use export_base_model for headless encoders."
        )
    if not isinstance(meta.get("max_length"), int) or meta["max_length"] < 2:
        raise InvalidFile(f"{model_dir}/aiaas.json: 'max_length' must be an integer >= 2.")
    if meta["task"] != "regression" and not meta.get("labels"):
        raise InvalidFile(f"{model_dir}/aiaas.json: a classifier needs its 'labels'.")
    return {k: v for k, v in meta.items() if k != "runtime"}


def _tokenizer_config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        return {}


def _default_max_length(model_dir: Path) -> int:
    """sentence-transformers' max_seq_length if present, else what both tokenizer and positions allow."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    limits = [512]
    with contextlib.suppress(OSError, ValueError, KeyError):
        limits.append(int(json.loads((model_dir / "config.json").read_text())["max_position_embeddings"]))
    tok_max = _tokenizer_config(model_dir).get("model_max_length")
    if isinstance(tok_max, int) and tok_max > 1:
        limits.append(tok_max)
    return min(limits)


def _write_tokenizer(model_dir: Path, dest: Path, *, max_length: int) -> int:
    """Save tokenizer.json with our truncation and no padding; return the pad token id."""
    from tokenizers import Tokenizer

    source = model_dir / rt.TOKENIZER_FILE
    if source.is_file():
        tokenizer = Tokenizer.from_file(str(source))
    else:  # a slow-tokenizer checkpoint (vocab.txt only): let transformers convert it once
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir, use_fast=True,
                                                  local_files_only=True).backend_tokenizer
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.save(str(dest))
    pad_token = _tokenizer_config(model_dir).get("pad_token")
    if isinstance(pad_token, dict):  # older configs store AddedToken dicts
        pad_token = pad_token.get("content")
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    return int(pad_id) if pad_id is not None else 0
