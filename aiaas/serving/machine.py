"""What this CPU can do, detected rather than assumed.

The export step picks int8/bf16 by measurement on the machine it runs on, and the
runtime re-checks on the machine that serves: an artifact quantised on a host with
VNNI may be served on one without it, where int8 kernels behave differently.
"""

from __future__ import annotations

import functools
import logging
import platform
from pathlib import Path
from typing import Any

from aiaas.core.cpu import usable_cores  # one count for every package

logger = logging.getLogger(__name__)

# /proc/cpuinfo flag names we care about (Linux spelling).
_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo_flags(text: str) -> set[str]:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


@functools.cache
def cpu_features() -> dict[str, Any]:
    """{"avx512_vnni", "amx_int8", "amx_bf16", "avx512_bf16", "avx_vnni", "avx2": bool, "cores": int}.

    Only Linux x86 flags are read; anywhere else every instruction-set flag is False,
    which makes callers take the portable (fp32 / reduced-range int8) path.
    """
    flags: set[str] = set()
    if platform.system() == "Linux":
        try:
            flags = _cpuinfo_flags(Path("/proc/cpuinfo").read_text())
        except OSError:
            logger.warning("could not read /proc/cpuinfo; assuming no AVX-512/AMX")
    features: dict[str, Any] = {name: name in flags for name in _FLAGS if name not in ("avx512f", "amx_tile")}
    features["cores"] = usable_cores()
    return features


def has_int8_dot_product(features: dict[str, Any] | None = None) -> bool:
    """True where u8*s8 dot products cannot saturate (VNNI or AMX), so full-range int8 weights are safe."""
    f = features if features is not None else cpu_features()
    return bool(f.get("avx512_vnni") or f.get("avx_vnni") or f.get("amx_int8"))


def has_bf16(features: dict[str, Any] | None = None) -> bool:
    f = features if features is not None else cpu_features()
    return bool(f.get("avx512_bf16") or f.get("amx_bf16"))


@functools.cache
def ort_bf16_matmul_error() -> str | None:
    """None if ONNX Runtime's CPU provider can run a bfloat16 MatMul here, else why not.

    CPU flags are not enough: onnxruntime 1.32's CPU provider has no bf16 MatMul kernel
    on x86 at all, so bf16 is only worth building where this probe passes.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "bf16_probe",
        [helper.make_tensor_value_info(name, TensorProto.BFLOAT16, [2, 2]) for name in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT reports NOT_IMPLEMENTED as a plain exception type
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        return f"onnxruntime {ort.__version__} CPU provider cannot run a bfloat16 MatMul ({detail})"
    return None
