"""`aiaas serve` for the benchmark, able to name its threads without py-spy.

    python -m bench.serving.named_serve serve --port N ...   # the arguments of `aiaas`

/proc knows a process's threads by id only. On SIGUSR2 this process writes
{native thread id: Python thread name} to $BENCH_THREAD_NAMES, so the benchmark can tell the
inference executor's threads (`infer_*`: tokenizer + ONNX Runtime, the engine) from the event
loop (`MainThread`: HTTP, routing, auth, JSON) and Starlette's thread pool. Nothing runs until
the signal arrives. With $BENCH_CPROFILE set, the main thread (the event loop) runs under
cProfile and its stats are written to that path when the server stops (bench/serving/profile.py).
"""

from __future__ import annotations

import cProfile
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

NAMES_ENV = "BENCH_THREAD_NAMES"
CPROFILE_ENV = "BENCH_CPROFILE"


def _write_names(_signum: int, _frame: FrameType | None) -> None:
    path = Path(os.environ[NAMES_ENV])
    names = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id is not None}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(names))
    os.replace(tmp, path)


def main() -> None:
    from aiaas.cli.main import app

    if os.environ.get(NAMES_ENV):
        signal.signal(signal.SIGUSR2, _write_names)
    stats = os.environ.get(CPROFILE_ENV)
    profiler = cProfile.Profile() if stats else None
    if profiler is not None:
        profiler.enable()
    try:
        app(args=sys.argv[1:], prog_name="aiaas")
    finally:
        if profiler is not None and stats:
            profiler.disable()
            profiler.dump_stats(stats)


if __name__ == "__main__":
    main()
