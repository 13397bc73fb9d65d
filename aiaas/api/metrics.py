"""Prometheus collectors read at scrape time (nothing added per request): the model cache of this process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from aiaas.serving.local import LocalRuntime

_COUNTERS = ("hits", "misses", "loads", "load_failures", "evictions", "idle_unloads")


class ModelCacheCollector:
    """Hits, misses, loads, evictions and resident bytes of the in-process model cache."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        cache = self.runtime._cache  # not created yet: a process that served nothing reports zeros
        stats = cache.stats() if cache is not None else {}
        for name in _COUNTERS:
            yield CounterMetricFamily(f"aiaas_model_cache_{name}", f"Model cache {name.replace('_', ' ')}",
                                      value=stats.get(name, 0))
        yield GaugeMetricFamily("aiaas_model_cache_resident_bytes", "Bytes of the models loaded now",
                                value=stats.get("memory_bytes", 0))
        yield GaugeMetricFamily("aiaas_model_cache_models", "Models loaded now", value=len(stats.get("models", {})))
