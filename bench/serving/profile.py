"""Profile `aiaas serve` under the benchmark's closed-loop load with py-spy.

    python -m bench.serving.profile [--seconds 20] [--rate 40] [--idle] [--out /tmp/aiaas-serve.txt]

Starts only the aiaas config (same model, key, deployment as the benchmark), loads it
with 32 closed-loop clients (or `--rate N`: open loop at N requests/s), reads the CPU
of each server thread at both ends of the window (/proc; threads named by py-spy dump)
and runs `py-spy record --format raw` (collapsed stacks; `--idle` adds waiting threads)
on the server meanwhile, then prints the functions with the most samples, inclusive and
self, so the hot path can be read without a browser.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.serving import aiaas_setup, load, procs
from bench.serving import run as bench_run


def _top(collapsed: Path, n: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        total += k
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += k
        own[frames[-1]] += k
    out = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        out.append(f"-- top {n} {title} --")
        out += [f"{100 * c / total:6.1f}%  {frame}" for frame, c in counter.most_common(n)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "aiaas-serve-profile.txt")
    parser.add_argument("--idle", action="store_true", help="include idle (waiting) samples")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="open loop at this rate instead of closed loop"
    )
    args = parser.parse_args()
    entry = bench_run._build_model()
    texts = json.loads((entry / "data.json").read_text())["texts"]
    work = Path(tempfile.mkdtemp(prefix="aiaas-bench-profile-"))
    (work / "logs").mkdir()
    server = None
    try:
        server, admin_key, model_id, _ = aiaas_setup.start(entry, work, work / "logs")
        deployed = aiaas_setup.finish(server, admin_key, model_id)
        target = load.Target(
            "127.0.0.1",
            server.port,
            f"/v1/deployments/{deployed.deployment}/predict",
            [json.dumps({"inputs": [t]}).encode() for t in texts],
            {"Authorization": f"Bearer {deployed.infer_key}"},
        )
        load.warm(target, requests=200)
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        cmd = [
            py_spy,
            "record",
            "--pid",
            str(server.proc.pid),
            "--duration",
            str(int(args.seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(args.out),
            "--threads",
            "--nonblocking",
        ]
        if args.idle:
            cmd.append("--idle")
        recorder = threading.Thread(target=subprocess.run, args=(cmd,), kwargs={"capture_output": True})
        meter = procs.ThreadMeter(server)

        def cpu() -> float:
            if not meter.snapshots:
                recorder.start()  # py-spy covers the measured window
            return meter()

        if args.rate:
            window = load.open_loop(target, rate=args.rate, warmup_s=1.0, window_s=args.seconds, cpu=cpu)
        else:
            window = load.closed_loop(
                target, clients=args.clients, warmup_s=1.0, window_s=args.seconds, cpu=cpu
            )
        summary = window.summary()
        names = bench_run._py_spy_threads_by_id(server.proc.pid)
        recorder.join()
        print(json.dumps(summary))
        print(
            "CPU ms per request by thread:", json.dumps(meter.by_group(names, summary["requests"]), indent=1)
        )
        print(_top(args.out, args.top))
        print(f"collapsed stacks: {args.out}")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
