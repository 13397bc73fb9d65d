"""What the model cache (cache.py) keeps, and how its loads share the CPU with requests.

- `RecentUses`: requests per model over a recent window (halved every `window` requests,
  TinyLFU's aging), remembered for models that are not loaded too. The cache evicts the
  idle model with the fewest recent requests first, least recently used among equals: under
  long-tailed traffic a one-off request for a tail model must not push out a head model that
  is used every second, which is what pure LRU does (bench/README.md, "Density").
- `load_executor`: the threads that load models run at a lower OS priority (nice) than the
  threads that serve requests. A load (decrypt, ONNX session creation, tokenizer) is ~0.2 s of
  CPU; at the same priority it takes a core from resident models' requests for that long. ONNX
  Runtime builds a session in the calling thread, and sessions are made with one intra-op
  thread (sessions.py), so it starts no pool threads that would inherit the lowered priority.
  A raised nice cannot be lowered again without CAP_SYS_NICE, so these threads only ever load.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

# Recent requests: halve every model's count once this many requests have been counted. Long enough
# that a Zipf tail model's one request does not outweigh a head model's rate, short enough that a
# model whose traffic moved on gives way within a few windows.
DEFAULT_WINDOW = 2000
# How much lower than the serving threads a load thread runs (nice 0 -> 10: CFS gives it ~1/10 of a
# core's share next to a busy serving thread, all of an idle core).
LOAD_NICE = 10
MAX_NICE = 19


class RecentUses:
    """Requests per key, aged by halving all counts every `window` requests; keys at 0 are forgotten."""

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self._window = window
        self._counts: dict[str, int] = {}
        self._since_aging = 0

    def add(self, key: str) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._since_aging += 1
        if self._since_aging >= self._window:
            self._since_aging = 0
            self._counts = {k: n // 2 for k, n in self._counts.items() if n > 1}

    def __getitem__(self, key: str) -> int:
        return self._counts.get(key, 0)

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by `increment` (Linux: nice is per thread). Elsewhere, or if
    the OS refuses, the thread keeps its priority: loads then compete with requests as before."""
    if increment <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as exc:
        logger.warning("could not lower the model load thread's priority: %s", exc)


def load_executor(max_workers: int, nice: int = LOAD_NICE) -> ThreadPoolExecutor:
    """Threads for model loads only, each `nice` below the process's priority from its start."""
    if not isinstance(nice, int) or isinstance(nice, bool) or not 0 <= nice <= MAX_NICE:
        raise ValueError(f"load nice must be an integer in 0..{MAX_NICE}, got {nice!r}")
    return ThreadPoolExecutor(
        max_workers=max_workers,
        thread_name_prefix="aiaas-load",
        initializer=lower_thread_priority,
        initargs=(nice,),
    )
