"""The C allocator of a long-running server process: how many glibc malloc arenas its threads share, and
handing freed pages back to the system now and then.

Why: glibc gives each thread that allocates while another holds an arena a new arena, up to 8 per core;
the server's inference threads (ONNX Runtime, tokenizers), the thread pool the routes' database work runs
in and SQLite all allocate natively, so their freed memory scatters over many arenas, and glibc returns
an arena's free pages to the system only from its top. The soak (bench/README.md, "Soak") measured the
API process's RSS growing after warm-up while the bytes in use stayed flat: the growth was free memory
kept inside the arenas. Fewer arenas plus a periodic `malloc_trim` keeps it flat.

Off glibc (musl, macOS) every function here does nothing and says so by returning False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


@functools.lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not all(hasattr(libc, name) for name in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def limit_arenas(count: int) -> bool:
    """At most `count` malloc arenas from now on (threads share them); 0 keeps glibc's default.
    Arenas that already exist stay. True when glibc took the setting."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count must be an integer >= 0, got {count!r} (AIAAS_MALLOC_ARENA_MAX)")
    libc = _glibc()
    if count == 0 or libc is None:
        return False
    return bool(libc.mallopt(M_ARENA_MAX, count))


def trim() -> bool:
    """Give the free pages of every arena back to the system. True when some memory was released."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


class PeriodicTrim:
    """A daemon thread that calls trim() every `seconds` (never on a request's path). A trim walks each
    arena's free lists under that arena's lock and hands whole free pages back: measured 2-50 ms with
    little to hand back and ~140 ms handing back 18 MiB at once (6 threads' churn, 2 loaded cores), so
    trimming often keeps each trim small."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r} (AIAAS_MALLOC_TRIM_SECONDS)")
        self.seconds = seconds
        self.trims = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start the thread; False (and no thread) off glibc."""
        if _glibc() is None or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="malloc-trim", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            trim()
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
