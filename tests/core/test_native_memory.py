"""The API process's C allocator settings (aiaas/core/native_memory.py): fewer glibc arenas and a periodic
trim, applied by the server's lifespan. Without them the soak's API process grew ~18% after warm-up."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aiaas.core import native_memory
from aiaas.core.cpu import usable_cores

glibc_only = pytest.mark.skipif(native_memory._glibc() is None, reason="glibc malloc only")

# Eight threads allocate at the same time, then the process counts its malloc heaps (arenas) from malloc_info.
_COUNT_ARENAS = r"""
import ctypes, re, sys, tempfile, threading
from aiaas.core import native_memory
if int(sys.argv[1]):
    assert native_memory.limit_arenas(int(sys.argv[1]))
ready = threading.Barrier(9)
def work():
    keep = [bytearray(1000) for _ in range(100)]
    ready.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads:
    t.start()
ready.wait()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
path = tempfile.mktemp()
fp = ctypes.c_void_p(libc.fopen(path.encode(), b"w"))
libc.malloc_info(0, fp)
libc.fclose(fp)
print(len(re.findall(r"<heap nr=", open(path).read())))
for t in threads:
    t.join()
"""


def _arenas(limit: int) -> int:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", _COUNT_ARENAS, str(limit)], cwd=root, capture_output=True,
                         text=True, timeout=60, check=True)
    return int(out.stdout.strip())


@glibc_only
def test_arena_limit_makes_threads_share_arenas():
    assert _arenas(0) > 2  # glibc's default: a new arena for each thread that allocates alongside others
    assert _arenas(2) <= 2


def test_arena_limit_rejects_a_negative_count():
    with pytest.raises(ValueError, match="AIAAS_MALLOC_ARENA_MAX"):
        native_memory.limit_arenas(-1)
    assert native_memory.limit_arenas(0) is False  # 0: glibc's default, nothing changed


@glibc_only
def test_periodic_trim_runs_on_its_own_thread_and_stops():
    trimmer = native_memory.PeriodicTrim(0.01)
    assert trimmer.start()
    deadline = time.monotonic() + 10
    while trimmer.trims < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert trimmer.trims >= 2
    trimmer.stop()
    assert "malloc-trim" not in {t.name for t in threading.enumerate()}
    with pytest.raises(ValueError, match="AIAAS_MALLOC_TRIM_SECONDS"):
        native_memory.PeriodicTrim(0)


def test_settings_default_to_one_arena_per_core_and_a_trim_every_30_s():
    from aiaas.core.settings import Settings

    defaults = Settings()
    assert defaults.malloc_arena_max == usable_cores()
    assert defaults.malloc_trim_seconds == 30.0


@glibc_only
async def test_the_server_applies_the_allocator_settings_while_it_runs(settings, db, monkeypatch):
    from aiaas.api.app import create_app

    limits: list[int] = []
    monkeypatch.setattr(native_memory, "limit_arenas", lambda count: limits.append(count) or True)
    app = create_app(settings.model_copy(update={"malloc_arena_max": 3, "malloc_trim_seconds": 5.0}),
                     db=db, migrate_db=False)
    async with app.router.lifespan_context(app):
        assert limits == [3]
        assert "malloc-trim" in {t.name for t in threading.enumerate()}
    assert "malloc-trim" not in {t.name for t in threading.enumerate()}

    off = create_app(settings.model_copy(update={"malloc_arena_max": 0, "malloc_trim_seconds": 0.0}),
                     db=db, migrate_db=False)
    async with off.router.lifespan_context(off):
        assert limits == [3, 0]
        assert "malloc-trim" not in {t.name for t in threading.enumerate()}
