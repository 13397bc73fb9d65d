"""The one core count: affinity mask capped by cgroup v2/v1 quotas, and a fallback without sched_getaffinity."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiaas.core import cpu


def _proc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


@pytest.fixture
def eight_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(8)), raising=False)


def test_no_cgroup_files_means_the_affinity_mask(tmp_path: Path, eight_cores: None) -> None:
    assert cpu.cgroup_cpu_limit(tmp_path, tmp_path / "missing") is None
    assert cpu.usable_cores(tmp_path, tmp_path / "missing") == 8


def test_cgroup_v2_quota_at_the_namespace_root_caps_the_count(tmp_path: Path, eight_cores: None) -> None:
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    proc = _proc(tmp_path, "0::/\n")
    assert cpu.cgroup_cpu_limit(tmp_path, proc) == 2.0
    assert cpu.usable_cores(tmp_path, proc) == 2
    # A fractional quota rounds up: 1.5 CPUs keep two threads busy.
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu.usable_cores(tmp_path, proc) == 2
    # Under one CPU still leaves one thread.
    (tmp_path / "cpu.max").write_text("20000 100000\n")
    assert cpu.usable_cores(tmp_path, proc) == 1


def test_cgroup_v2_max_is_no_limit(tmp_path: Path, eight_cores: None) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu.cgroup_cpu_limit(tmp_path, _proc(tmp_path, "0::/\n")) is None
    assert cpu.usable_cores(tmp_path, _proc(tmp_path, "0::/\n")) == 8


def test_cgroup_v2_own_cgroup_and_the_tightest_parent(tmp_path: Path, eight_cores: None) -> None:
    # A host view (no cgroup namespace): the process's cgroup is below the root; the tightest of it and
    # its parents applies.
    pod = tmp_path / "kubepods.slice" / "pod1"
    ctr = pod / "ctr"
    ctr.mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (pod / "cpu.max").write_text("300000 100000\n")
    (ctr / "cpu.max").write_text("max 100000\n")
    proc = _proc(tmp_path, "0::/kubepods.slice/pod1/ctr\n")
    assert cpu.cgroup_cpu_limit(tmp_path, proc) == 3.0
    assert cpu.usable_cores(tmp_path, proc) == 3


def test_cgroup_v1_cfs_quota(tmp_path: Path, eight_cores: None) -> None:
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("250000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(tmp_path, "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    assert cpu.cgroup_cpu_limit(tmp_path, proc) == 2.5
    assert cpu.usable_cores(tmp_path, proc) == 3
    # -1 is v1's "no quota".
    (d / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu.cgroup_cpu_limit(tmp_path, proc) is None


def test_cgroup_v1_namespaced_root(tmp_path: Path, eight_cores: None) -> None:
    # Inside a container with a cgroup namespace, the own quota files sit at the controller's root.
    d = tmp_path / "cpu"
    d.mkdir()
    (d / "cpu.cfs_quota_us").write_text("100000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu.usable_cores(tmp_path, _proc(tmp_path, "3:cpu:/\n")) == 1


def test_garbage_files_are_ignored(tmp_path: Path, eight_cores: None) -> None:
    (tmp_path / "cpu.max").write_text("lots\n")
    assert cpu.cgroup_cpu_limit(tmp_path, _proc(tmp_path, "0::/\n")) is None
    (tmp_path / "cpu.max").write_text("100000 0\n")
    assert cpu.cgroup_cpu_limit(tmp_path, _proc(tmp_path, "0::/\n")) is None


def test_quota_never_raises_the_count_above_the_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    (tmp_path / "cpu.max").write_text("1600000 100000\n")
    assert cpu.usable_cores(tmp_path, _proc(tmp_path, "0::/\n")) == 2


def test_without_sched_getaffinity_it_counts_cpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # macOS and Windows have no sched_getaffinity.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu.usable_cores(tmp_path, tmp_path / "missing") == 6
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cpu.usable_cores(tmp_path, _proc(tmp_path, "0::/\n")) == 4
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu.usable_cores(tmp_path, tmp_path / "missing") == 1


def test_settings_and_the_worker_pool_load_without_sched_getaffinity(monkeypatch: pytest.MonkeyPatch) -> None:
    # The issue: settings (inference_threads default) and the pool failed to load on macOS.
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.delattr(os, "process_cpu_count", raising=False)
    monkeypatch.setattr(cpu, "CGROUP_ROOT", Path("/nonexistent"))
    monkeypatch.delenv("AIAAS_INFERENCE_THREADS", raising=False)
    monkeypatch.setattr(cpu, "PROC_SELF_CGROUP", Path("/nonexistent"))
    from aiaas.core.settings import Settings
    from aiaas.serving.machine import usable_cores as serving_cores
    from aiaas.training.runtime import available_cores

    assert Settings().inference_threads == 4
    assert serving_cores() == available_cores() == 3


def test_worker_pool_shares_the_counted_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from aiaas.jobs import pool

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(pool, "usable_cores", lambda: 4)
    monkeypatch.delenv("AIAAS_TRAINING_THREADS", raising=False)
    seen: dict[str, str] = {}

    class FakePopen:
        def __init__(self, _args: list[str], env: dict[str, str]) -> None:
            seen.update(env)

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    pool.WorkerPool(2)._spawn()
    assert seen["AIAAS_TRAINING_THREADS"] == "2"
