"""Take your model with you: a fine-tuned model's decrypted artifact as an archive.

`hf`: the transformers directory (config with the label map, tokenizer, safetensors weights) and a
README.md model card rendered from the registry's card, loadable offline by
`AutoModelForSequenceClassification.from_pretrained`. `onnx`: the graph the platform serves, its
tokenizer, `aiaas.json` (task, labels, max_length) and `labels.json`. The archive is built in an
anonymous temporary file (never visible by name) and streamed in chunks.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiaas.core.errors import InvalidRequest, Unavailable
from aiaas.services import audit
from aiaas.services.deployments import resolve_model

if TYPE_CHECKING:
    from aiaas.services.context import AppContext

FORMATS = ("hf", "onnx")
ARCHIVES = ("tar.gz", "zip")
CHUNK = 1 << 20
INTERNAL = {"aiaas_test_model.json"}  # test fixtures' markers, never part of a user's model


def model_card_markdown(model_id: str, model: Any) -> str:
    card = model.card or {}
    lines = [f"# {model_id}", "", f"- Task: {model.task}", f"- Base model: {model.base_model}"]
    if model.job_id:
        lines.append(f"- Fine-tuning job: {model.job_id}")
    if card.get("labels"):
        lines.append(f"- Labels: {', '.join(str(x) for x in card['labels'])}")
    metrics = card.get("metrics") or (model.lineage or {}).get("metrics") or {}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    if scalars:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in sorted(scalars.items())]
    lines += ["", "Exported from aiaas. Load with `AutoModelForSequenceClassification.from_pretrained(dir)`.", ""]
    return "\n".join(lines)


def _hf_config(path: Path, labels: list[str], task: str) -> bytes:
    """config.json with the platform's label names, so transformers reports the same labels."""
    config = json.loads(path.read_text())
    if labels and task != "regression":
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
        if task == "multi_label_classification":
            config["problem_type"] = task
    return json.dumps(config, indent=2).encode()


def build_archive(state: AppContext, actor: audit.Actor, org_id: str, ref: str, fmt: str,
                  archive: str) -> tuple[str, Iterator[bytes]]:
    """(file name, chunks) of the archive; audited. Blocking: run it in a thread."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.", param="format")
    if archive not in ARCHIVES:
        raise InvalidRequest(f"Unknown archive '{archive}'; use one of {', '.join(ARCHIVES)}.", param="archive")
    with state.db.session() as s:
        model = resolve_model(s, org_id, ref)
        model_id, artifact, task = model.id, model.artifact_uri, model.task
        labels = [str(x) for x in (model.card or {}).get("labels") or []]
        readme = model_card_markdown(model_id, model)
        audit.record(s, actor, "model.downloaded", target_type="model", target_id=model_id,
                     details={"format": fmt, "archive": archive, "requested_as": ref})
    top = model_id.replace(":", "_").strip("_") + f"-{fmt}"
    out = tempfile.TemporaryFile()  # noqa: SIM115 - streamed, then closed by the iterator
    try:
        part = "model" if fmt == "hf" else "onnx"
        with state.services.blobs.open_local(artifact.rstrip("/") + "/" + part) as src:
            if not Path(src).is_dir():
                raise Unavailable(f"This model has no {fmt} artifact to download; re-run its fine-tuning job.")
            files: dict[str, bytes | Path] = {}
            for p in sorted(Path(src).rglob("*")):
                if p.is_file() and p.name not in INTERNAL:
                    files[p.relative_to(src).as_posix()] = p
            if fmt == "hf" and "config.json" in files:
                files["config.json"] = _hf_config(Path(src) / "config.json", labels, task)
            if fmt == "hf":
                files["README.md"] = readme.encode()
            else:
                files["labels.json"] = json.dumps(labels).encode()
            _write(out, archive, top, files)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return f"{top}.{archive}", _chunks(out)


def _write(out: Any, archive: str, top: str, files: dict[str, bytes | Path]) -> None:
    if archive == "zip":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for name, item in files.items():
                if isinstance(item, Path):
                    z.write(item, f"{top}/{name}")
                else:
                    z.writestr(f"{top}/{name}", item)
        return
    with tarfile.open(fileobj=out, mode="w:gz") as t:
        for name, item in files.items():
            if isinstance(item, Path):
                t.add(item, arcname=f"{top}/{name}", recursive=False)
            else:
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(item)
                t.addfile(info, io.BytesIO(item))


def _chunks(f: Any) -> Iterator[bytes]:
    try:
        while chunk := f.read(CHUNK):
            yield chunk
    finally:
        f.close()
