"""µs per request of the monitoring hook (TrafficMonitor.observe), in process: python bench/monitoring_hook.py"""
import time, random, statistics, numpy as np, tempfile
from aiaas.services.monitoring import TrafficMonitor
from aiaas.serving.interface import Outputs, ModelInfo
from aiaas.store.db import Database
db = Database("sqlite:///" + tempfile.mktemp())
m = TrafficMonitor(db, check_seconds=0)
rng = random.Random(0)
W = "the a service great terrible slow fast delivery refund".split()
def texts(n, ru=False):
    return [" ".join(rng.choice(W) for _ in range(rng.randint(5, 60))) if not ru else "привет мир "*rng.randint(2,30) for _ in range(n)]
info = ModelInfo(task="single_label_classification", labels=("a","b","c","d"))
for n, ru in ((1, False), (8, False), (32, False), (1, True), (8, True)):
    batch = texts(n, ru)
    out = Outputs(np.random.default_rng(0).dirichlet(np.ones(4), n).astype(np.float32), 20*n, info, 3)
    runs = []
    for rep in range(7):
        t = time.perf_counter()
        for _ in range(2000):
            m.observe("d", "o", "n", "m", info.labels, batch, out)
        runs.append((time.perf_counter() - t) / 2000 * 1e6)
    print(f"{n:3d} texts {'cyrillic' if ru else 'ascii   '} avg chars {sum(map(len,batch))/n:5.0f}: min {min(runs):6.1f} us, median {statistics.median(runs):6.1f} us per request")

