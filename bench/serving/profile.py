"""Profile `aiaas serve` under the benchmark's closed-loop load with py-spy (or cProfile).

    python -m bench.serving.profile [--route predict] [--routed] [--seconds 20] [--rate 40] [--idle] [--out FILE]

Starts only the aiaas config (same model, key, deployment as the benchmark), loads one of
its routes (`--route`: predict, classifications, embeddings, oip_binary) with 32 closed-loop
clients (or `--rate N`: open loop at N requests/s), reads the CPU of each server thread at
both ends of the window (/proc; threads named by the server, bench/serving/named_serve.py)
and prints it by thread group with the engine's share. With py-spy installed it runs
`py-spy record --format raw` (collapsed stacks; `--idle` adds waiting threads) on the server
meanwhile and prints the functions with the most samples, inclusive and self. Without it,
the server's event loop (its main thread) runs under cProfile for the whole run, and the
functions with the most own and cumulative time there are printed; cProfile slows the
event loop, so read its shares, not its absolute times, and take the per-thread CPU from a
run without it (`--no-cprofile`).
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.serving import aiaas_setup, load, procs, report
from bench.serving import run as bench_run

ROUTES = ("predict", *bench_run.ROUTES)


def _cprofile_top(stats_file: Path, n: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(stats_file), stream=out)
    stats.sort_stats("tottime").print_stats(n)
    stats.sort_stats("cumulative").print_stats(n)
    return out.getvalue()


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
    parser.add_argument("--route", choices=ROUTES, default="predict")
    parser.add_argument(
        "--routed", action="store_true", help="with the shortcut off (AIAAS_FAST_PREDICT_ROUTE=false): FastAPI routes it"
    )
    parser.add_argument(
        "--no-cprofile", action="store_true", help="without py-spy: per-thread CPU only, no cProfile"
    )
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    have_py_spy = Path(py_spy).exists()
    entry = bench_run._build_model()
    texts = json.loads((entry / "data.json").read_text())["texts"]
    work = Path(tempfile.mkdtemp(prefix="aiaas-bench-profile-"))
    (work / "logs").mkdir()
    server = None
    stats_file = None if have_py_spy or args.no_cprofile else work / "event-loop.prof"
    try:
        server, admin_key, model_id, _ = aiaas_setup.start(
            entry,
            work,
            work / "logs",
            cprofile=stats_file,
            server_env={"AIAAS_FAST_PREDICT_ROUTE": "false"} if args.routed else None,
        )
        deployed = aiaas_setup.finish(server, admin_key, model_id)
        if args.route == "predict":
            target = load.Target(
                "127.0.0.1",
                server.port,
                f"/v1/deployments/{deployed.deployment}/predict",
                [json.dumps({"inputs": [t]}).encode() for t in texts],
                {"Authorization": f"Bearer {deployed.infer_key}"},
            )
        else:
            target = bench_run._route_targets(server.port, texts, deployed.infer_key)[f"aiaas_{args.route}"]
        load.warm(target, requests=200)
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
            if not meter.snapshots and have_py_spy:
                recorder.start()  # py-spy covers the measured window
            return meter()

        if args.rate:
            window = load.open_loop(target, rate=args.rate, warmup_s=1.0, window_s=args.seconds, cpu=cpu)
        else:
            window = load.closed_loop(
                target, clients=args.clients, warmup_s=1.0, window_s=args.seconds, cpu=cpu
            )
        summary = window.summary()
        names = aiaas_setup.thread_names(server, work) or bench_run._py_spy_threads_by_id(server.proc.pid)
        by_thread = meter.by_group(names, summary["requests"])
        print(json.dumps({"route": args.route, "routed": args.routed, "cprofile": stats_file is not None, **summary}))
        print("CPU ms per request by thread:", json.dumps(by_thread, indent=1))
        print("engine share:", json.dumps(report.engine_share({args.route: by_thread})[args.route]))
        if have_py_spy:
            recorder.join()
            print(_top(args.out, args.top))
            print(f"collapsed stacks: {args.out}")
        server.stop()  # the cProfile stats are written as the server stops
        if stats_file is not None and stats_file.exists():
            print(f"-- cProfile of the event loop (main thread), whole run, route {args.route} --")
            print(_cprofile_top(stats_file, args.top))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
