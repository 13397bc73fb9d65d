"""Loading a model artifact for the in-process runtime: decrypt a fine-tuned model's ONNX part, or
export a base encoder once."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiaas.core.errors import AiaasError, Unavailable
from aiaas.core.settings import Settings
from aiaas.store.blobs import BlobStore
from aiaas.store.encrypted import private_tempdir

if TYPE_CHECKING:
    from aiaas.serving.runtime import ServedModel

log = logging.getLogger(__name__)
EXPORT_TIMEOUT_S = 600


class ArtifactLoader:
    """`loader(artifact)` -> a loaded runtime.ServedModel. Runs in a worker thread (the model cache calls it)."""

    def __init__(self, settings: Settings, blobs: BlobStore) -> None:
        self.settings = settings
        self.blobs = blobs

    def __call__(self, artifact: str) -> ServedModel:
        from aiaas.serving.runtime import load_predictor

        if artifact.startswith("base:"):
            return load_predictor(self._base_export(artifact[len("base:"):]))
        # Artifacts are encrypted at rest: decrypt the ONNX part into private memory-backed storage,
        # load it (ONNX Runtime and the tokenizer read everything into memory), and let it vanish.
        onnx = artifact.rstrip("/") + "/onnx"
        with self._runtime_files(onnx) as (onnx_dir, lazy):
            if not Path(onnx_dir).is_dir():
                raise Unavailable("This model has no exported runtime artifact; re-run its fine-tuning job.")
            # A model served by its stored first-token graph opens the full graph only for an embeddings request:
            # it is decrypted again then, instead of being kept in memory (22 of 79 MiB for MiniLM-L6 int8) by
            # every loaded model in case one comes (bench/README.md, "Density").
            full_graph = None if lazy is None else partial(self._read, f"{onnx}/{lazy}")
            return load_predictor(Path(onnx_dir), full_graph=full_graph)

    def _read(self, uri: str) -> bytes:
        """One file of a stored artifact, decrypted."""
        try:
            with self.blobs.open_local(uri) as path:
                return path.read_bytes()
        except (AiaasError, OSError) as exc:  # deleted since the model loaded (the cache drops it with its deployment)
            raise Unavailable("This model's artifact is no longer stored; retry the request.") from exc

    @contextlib.contextmanager
    def _runtime_files(self, onnx: str) -> Iterator[tuple[Path, str | None]]:
        """onnx/ decrypted, with only what loading a one-graph model reads where aiaas.json says what that is:
        the export keeps its fp32 graph as a fallback next to the int8 one (91 of MiniLM-L6's 114 MB), and
        decrypting it on every cold load cost CPU and memory-backed space for nothing (bench/README.md,
        "Density"). Anything else (ensembles, an unknown requirement, no meta): the whole directory.
        Also yields the name of the graph the stored first-token graph narrows, where that is what loads."""
        needed = self._needed_files(onnx)
        if needed is None:
            with self.blobs.open_local(onnx) as whole:
                yield whole, None
            return
        names, narrowed = needed
        with private_tempdir() as root, contextlib.ExitStack() as files:
            for name in names:
                os.symlink(files.enter_context(self.blobs.open_local(f"{onnx}/{name}")), root / name)
            yield root, narrowed

    def _needed_files(self, onnx: str) -> tuple[list[str], str | None] | None:
        from aiaas.serving.ensemble import is_ensemble
        from aiaas.serving.runtime import META_FILE, TOKENIZER_FILE, unmet_requirements
        from aiaas.serving.sessions import first_token_accepted, stored_first_token_file

        with self.blobs.open_local(f"{onnx}/{META_FILE}") as path:
            if not path.is_file():
                return None
            meta = json.loads(path.read_text())
        runtime = meta.get("runtime") if isinstance(meta, dict) else None
        if not isinstance(runtime, dict) or is_ensemble(meta):
            return None
        files, precision = runtime.get("files") or {}, runtime.get("precision")
        if not isinstance(precision, str):
            return None
        chosen = files.get(precision) if isinstance(files, dict) else None
        if not isinstance(chosen, str) or not _plain_name(chosen):
            return None
        names = [META_FILE, TOKENIZER_FILE, chosen]
        if unmet_requirements(runtime, precision):  # the runtime falls back to fp32
            fallback = files.get("fp32")
            if not isinstance(fallback, str) or not _plain_name(fallback):
                return None
            names.append(fallback)
        elif first_token_accepted(runtime, precision) and (ft := stored_first_token_file(runtime, precision)):
            names.append(ft)  # the logits graph the export stored, which the runtime opens (serving/sessions.py)
            return names, chosen
        return names, None

    def _base_export(self, base_id: str) -> Path:
        """Export a base encoder to ONNX once (in a subprocess: the API never imports torch)."""
        out = self.settings.data_dir / "base_exports" / base_id
        if (out / "aiaas.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f".{base_id}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one export per base model across API processes
            if (out / "aiaas.json").exists():
                return out
            code = (
                "import sys; from pathlib import Path; from aiaas.services.catalog import resolve; "
                "from aiaas.registry.export import export_base_model; "
                "m = resolve(sys.argv[1], Path(sys.argv[2])); export_base_model(m.path, Path(sys.argv[3]))"
            )
            tmp = out.with_name(out.name + ".partial")
            proc = subprocess.run(
                [sys.executable, "-c", code, base_id, str(self.settings.base_models_dir), str(tmp)],
                capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S, env=os.environ | {"HF_HUB_OFFLINE": "1"},
            )
            if proc.returncode != 0:
                log.error("export of base model %s failed: %s", base_id, proc.stderr[-2000:])
                raise Unavailable(f"Could not prepare base model '{base_id}' for serving.")
            os.replace(tmp, out)
        return out


def _plain_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and name not in (".", "..")
