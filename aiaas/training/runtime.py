"""Where and how fast training runs: device, precision, threads.

Imported first by `aiaas.training` so that `OMP_WAIT_POLICY=PASSIVE` lands in the
environment before torch loads its OpenMP runtime (libgomp reads it once, at load).
With the default policy idle OpenMP threads spin between parallel regions and steal
the cores that tokenization, the Python loop and neighbouring workers need. If torch
was imported earlier (by the caller), the setting cannot take effect in this process;
worker entrypoints should then export it themselves before importing torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiaas.core.cpu import usable_cores

logger = logging.getLogger(__name__)

# The training engine's name for the one core count (affinity mask capped by a cgroup quota).
available_cores = usable_cores

# setdefault: an operator who chose a policy keeps it.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# CPU flags that mean bf16 matmuls run natively (AMX tiles or AVX512-BF16); without
# them bf16 autocast is emulated and slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def omp_passive_in_effect() -> bool:
    """True when OpenMP threads sleep instead of spinning in this process."""
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_supports_bf16() -> bool:
    flags = cpu_flags()
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_precision(requested: str, device: str) -> tuple[str, str]:
    """Return (precision, why) for the requested "auto" | "bf16" | "fp32"."""
    if requested == "fp32":
        return "fp32", "requested"
    if device == "cuda":
        import torch

        supported = torch.cuda.is_bf16_supported()
        if requested == "bf16":
            return "bf16", "requested" + ("" if supported else " (GPU lacks native bf16: slow)")
        if supported:
            return "bf16", "auto: the GPU supports bf16"
        return "fp32", "auto: the GPU lacks bf16 support"
    native = cpu_supports_bf16()
    if requested == "bf16":
        return "bf16", "requested" + ("" if native else " (CPU lacks amx_bf16/avx512_bf16: emulated, slow)")
    if native:
        return "bf16", "auto: the CPU has native bf16 (amx_bf16/avx512_bf16)"
    return "fp32", "auto: the CPU has no native bf16 (amx_bf16/avx512_bf16), bf16 would be emulated"


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision for the forward pass: weights and optimizer state stay fp32."""
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads and put the previous count back afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
