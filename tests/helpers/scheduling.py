"""How `make test` shares the suite between its two xdist workers (`--dist loadfile --no-loadscope-reorder`).

A work unit is a file, as with plain loadfile (module fixtures and module-level caches stay on one worker),
except in SPLIT_BY_BACKEND: files whose tests use function-scoped fixtures only, where the SQLite and the
PostgreSQL tests are a unit each, so the two halves of a long file can run on both workers at once.

The longest units go first: seconds from the last full run (pytest's cache), else UNIT_SECONDS_FILE (a full
run's --durations), else a guess from the marks (slow, then e2e). The end of the run is then short files that
keep both workers busy; xdist's own order (most tests first) left the few long e2e files for last, and one
worker idle while the other ran them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadFileScheduling

SPLIT_BY_BACKEND = {
    "tests/e2e/test_chaos_idempotency.py",
    "tests/e2e/test_chaos_kill.py",
    "tests/e2e/test_chaos_lease.py",
    "tests/e2e/test_chaos_shutdown.py",
    "tests/e2e/test_foundation.py",
    "tests/e2e/test_main_job.py",
    "tests/e2e/test_secret_rotation.py",
    "tests/hostile/test_openapi_fuzz.py",  # its fuzzing run is cached per backend: one run each still
}
BACKEND_ID = re.compile(r"\[(?:[^\]]*-)?(sqlite|postgres)(?:-[^\]]*)?\]$")
UNIT_SECONDS_FILE = Path(__file__).with_name("unit_seconds.json")
CACHE_KEY = "aiaas/unit_seconds"
SHARED_SCOPES = ("class", "module", "package", "session")


def unit_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    backend = BACKEND_ID.search(nodeid) if path in SPLIT_BY_BACKEND else None
    return f"{path}[{backend.group(1)}]" if backend else path


class FileOrBackendScheduling(LoadFileScheduling):
    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the order is the collection's: longest_units_first

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)


def _guess_seconds(items: list[pytest.Item]) -> float:
    if any(i.get_closest_marker("slow") for i in items):
        return 30.0
    return 10.0 if any(i.get_closest_marker("e2e") for i in items) else 1.0


def longest_units_first(items: list[pytest.Item], config: pytest.Config) -> list[pytest.Item]:
    """The collection reordered by unit, longest first (both workers compute the same order: xdist checks)."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        unit = unit_of(item.nodeid)
        if unit != item.nodeid.split("::", 1)[0]:
            shared = [f"{d.argname} ({d.scope})" for ds in item._fixtureinfo.name2fixturedefs.values()
                      for d in ds if d.scope in SHARED_SCOPES and not d.baseid == ""]
            if shared:  # a module fixture would be built once per backend unit, on both workers
                raise pytest.UsageError(f"{item.nodeid} uses {shared}: take its file out of SPLIT_BY_BACKEND")
        units.setdefault(unit, []).append(item)
    seconds: dict[str, float] = json.loads(UNIT_SECONDS_FILE.read_text())
    cache = getattr(config, "cache", None)
    seconds |= (cache.get(CACHE_KEY, {}) if cache is not None else {}) or {}
    order = sorted(units, key=lambda u: -(seconds.get(u) or _guess_seconds(units[u])))
    return [item for unit in order for item in units[unit]]


_measured: dict[str, float] = {}


def record(report: pytest.TestReport) -> None:
    unit = unit_of(report.nodeid)
    _measured[unit] = _measured.get(unit, 0.0) + report.duration


def save(config: pytest.Config) -> None:
    """On the controller of an xdist run: keep each unit's seconds for the next run's order."""
    cache = getattr(config, "cache", None)
    if _measured and cache is not None and config.getvalue("dist") == "loadfile":
        cache.set(CACHE_KEY, {**(cache.get(CACHE_KEY, {}) or {}), **_measured})
