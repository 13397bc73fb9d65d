"""Loading a model artifact for the in-process runtime: decrypt a fine-tuned model's ONNX part, or
export a base encoder once."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aiaas.core.errors import Unavailable
from aiaas.core.settings import Settings
from aiaas.store.blobs import BlobStore

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
        with self.blobs.open_local(artifact.rstrip("/") + "/onnx") as onnx_dir:
            if not Path(onnx_dir).is_dir():
                raise Unavailable("This model has no exported runtime artifact; re-run its fine-tuning job.")
            return load_predictor(Path(onnx_dir))

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
