"""How many cores this process may use: the one place that counts them.

Containers usually limit CPU with a cgroup quota and leave the affinity mask alone: a 2-CPU pod on a
32-core node sees 32 cores in `os.sched_getaffinity`, and 32 threads there are throttled to 2 CPUs'
worth of time, each waiting its turn. So the count is the affinity mask (where the OS has one; macOS
and Windows do not) capped by the quota, rounded up (1.5 CPUs of quota keep 2 threads busy).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cores(root: Path | str | None = None, proc_cgroup: Path | str | None = None) -> int:
    """Cores this process may run on: the affinity mask, capped by a cgroup v2 or v1 CPU quota; at least 1.

    `root` and `proc_cgroup` default to /sys/fs/cgroup and /proc/self/cgroup (tests point them elsewhere).
    """
    cores = _affinity_cores()
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(cores, 1)


def _affinity_cores() -> int:
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        try:
            return len(getaffinity(0))
        except OSError:
            pass
    counter = getattr(os, "process_cpu_count", None) or os.cpu_count  # process_cpu_count: Python 3.13+
    return counter() or 1


def cgroup_cpu_limit(root: Path | str | None = None, proc_cgroup: Path | str | None = None) -> float | None:
    """CPUs allowed by the tightest cgroup CPU quota over this process's cgroup and its parents.

    None when there is no quota (or no cgroup file system, as outside Linux). Reads cgroup v2
    (`cpu.max`: "<quota> <period>" or "max <period>") and v1 (`cpu.cfs_quota_us`, -1 = none, and
    `cpu.cfs_period_us`). Inside a container the cgroup root is usually the container's own cgroup,
    so the files at the root are read as well.
    """
    root = Path(root) if root is not None else CGROUP_ROOT
    v2, v1 = _own_cgroup_paths(Path(proc_cgroup) if proc_cgroup is not None else PROC_SELF_CGROUP)
    limits: list[float] = []
    for directory in _dirs_up(root, v2):
        limit = _v2_limit(directory / "cpu.max")
        if limit is not None:
            limits.append(limit)
    for controller in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / controller
        for directory in _dirs_up(base, v1):
            limit = _v1_limit(directory / "cpu.cfs_quota_us", directory / "cpu.cfs_period_us")
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def _own_cgroup_paths(proc_cgroup: Path) -> tuple[str, str]:
    """This process's cgroup path in the v2 hierarchy and in the v1 `cpu` hierarchy ("" when unknown)."""
    v2 = v1 = ""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _dirs_up(base: Path, relative: str) -> list[Path]:
    """`base/relative`, then each parent up to `base` itself (each quota on the way applies)."""
    dirs = [base]
    current = base
    for part in [p for p in relative.split("/") if p and p not in (".", "..")]:
        current = current / part
        dirs.append(current)
    return list(dict.fromkeys(reversed(dirs)))


def _v2_limit(path: Path) -> float | None:
    try:
        fields = path.read_text().split()
    except OSError:
        return None
    if len(fields) < 2 or fields[0] == "max":
        return None
    return _ratio(fields[0], fields[1])


def _v1_limit(quota_path: Path, period_path: Path) -> float | None:
    try:
        quota, period = quota_path.read_text().strip(), period_path.read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:  # v1 writes -1 for "no quota"
        return None
    return q / p
