"""Device, precision and thread choices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiaas.training import runtime


def test_cpu_flags_decide_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile\n")
    assert "amx_bf16" in runtime.cpu_flags(info)
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not set(runtime.BF16_CPU_FLAGS) & runtime.cpu_flags(info)
    assert runtime.cpu_flags(tmp_path / "missing") == set()


def test_precision_choice_says_why() -> None:
    assert runtime.pick_precision("fp32", "cpu") == ("fp32", "requested")
    precision, why = runtime.pick_precision("auto", "cpu")
    assert precision == ("bf16" if runtime.cpu_supports_bf16() else "fp32")
    assert why.startswith("auto")


def test_available_cores_is_the_one_core_count() -> None:
    # Quota and affinity parsing are tested in tests/core/test_cpu.py.
    from aiaas.core.cpu import usable_cores

    assert runtime.available_cores is usable_cores


def test_omp_wait_policy_is_set_passive_before_torch_loads() -> None:
    code = "import os, sys, aiaas.training; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PASSIVE", "False"]
    # An operator's explicit choice is kept.
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "ACTIVE"


def test_torch_threads_are_restored() -> None:
    import torch

    before = torch.get_num_threads()
    with runtime.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
