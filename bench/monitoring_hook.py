"""µs per request of the monitoring hook (TrafficMonitor.observe), in process: python bench/monitoring_hook.py"""

import random
import statistics
import tempfile
import time

import numpy as np

from aiaas.services.monitoring import TrafficMonitor
from aiaas.serving.interface import ModelInfo, Outputs
from aiaas.store.db import Database

WORDS = ["the", "a", "service", "great", "terrible", "slow", "fast", "delivery", "refund"]


def texts(rng: random.Random, n: int, cyrillic: bool) -> list[str]:
    if cyrillic:
        return ["привет мир " * rng.randint(2, 30) for _ in range(n)]
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) for _ in range(n)]


def main() -> None:
    monitor = TrafficMonitor(Database("sqlite:///" + tempfile.mktemp()), check_seconds=0)
    rng = random.Random(0)
    info = ModelInfo(task="single_label_classification", labels=("a", "b", "c", "d"))
    for n, cyrillic in ((1, False), (8, False), (32, False), (1, True), (8, True)):
        batch = texts(rng, n, cyrillic)
        out = Outputs(np.random.default_rng(0).dirichlet(np.ones(4), n).astype(np.float32), 20 * n, info, 3)
        runs = []
        for _ in range(7):
            t = time.perf_counter()
            for _ in range(2000):
                monitor.observe("d", "o", "n", "m", info.labels, batch, out)
            runs.append((time.perf_counter() - t) / 2000 * 1e6)
        kind = "cyrillic" if cyrillic else "ascii"
        print(f"{n:3d} texts {kind:8s} avg {sum(map(len, batch)) / n:4.0f} chars: "
              f"min {min(runs):6.1f} us, median {statistics.median(runs):6.1f} us per request")


if __name__ == "__main__":
    main()
