"""Turn the measurements into bench/results/serving.json and the "## Serving" section of
bench/README.md (only that section is rewritten; other benchmarks own the rest)."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

HEADING = "## Serving"

TARGETS = {  # name in the JSON -> (comparison, threshold), from issue #4
    "ratio_vs_naive": (">=", 8.0),
    "ratio_vs_litserve": (">=", 2.0),
    "p99_at_half_load_ms": ("<=", 50.0),
    "cold_start_s": ("<=", 0.5),
}


def median_config(rounds: list[dict]) -> dict:
    """Median over rounds of each figure (rounds ran interleaved with the other configs)."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
    out = {k: round(statistics.median(r[k] for r in rounds), 3 if k == "cpu_ms_per_request" else 1)
           for k in keys}
    out["errors"] = sum(r["errors"] for r in rounds)
    out["client_cpu_ms_per_request"] = round(statistics.median(r["client_cpu_ms_per_request"] for r in rounds), 3)
    out["server_cores_busy"] = round(statistics.median(r["server_cores_busy"] for r in rounds), 2)
    return out


def check_targets(result: dict) -> dict:
    checks = {}
    for name, (op, threshold) in TARGETS.items():
        value = result.get(name)
        met = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        checks[name] = {"value": value, "target": f"{op} {threshold:g}", "met": bool(met)}
    return checks


def write_json(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)


def replace_section(path: Path, section: str) -> None:
    """Replace the "## Serving" section (up to the next "## " heading), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = section.rstrip() + "\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + body
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value, spec: str = ".1f") -> str:  # noqa: ANN001
    return "—" if value is None else format(value, spec)


def markdown(result: dict) -> str:
    cfg = result["configs"]
    p = result["parameters"]
    m = result["machine"]
    rows = []
    for name in ("naive", "litserve", "aiaas"):
        c = cfg[name]
        rows.append(f"| {name} | {c['what']} | {_fmt(c['rps'])} | {_fmt(c['p50_ms'])} | {_fmt(c['p99_ms'])} | "
                    f"{_fmt(c['cpu_ms_per_request'], '.2f')} | {c['errors']} |")
    t = result["targets"]
    target_rows = [f"| {name} | {_fmt(v['value'], '.3g')} | {v['target']} | {'yes' if v['met'] else '**no**'} |"
                   for name, v in t.items()]
    cold = result["cold_start"]["median"]
    half = result["half_load"]
    workers = result["aiaas_workers"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["cpu_flags"].items())
    return "\n".join([
        HEADING,
        "",
        "`make bench-serving` (`python -m bench.serving.run`) starts three servers on this machine and loads",
        f"each with {p['clients']} closed-loop clients sending one sentence per request ({p['sentences']} seeded",
        f"support-desk sentences, {p['token_lengths']['min']}–{p['token_lengths']['max']} tokens, median "
        f"{p['token_lengths']['median']}), {p['rounds']} rounds × {p['window_s']:g} s per config, interleaved "
        f"(naive, litserve, aiaas, naive, …), {p['warmup_s']:g} s warm-up before each window. Figures are "
        "medians over rounds; CPU is the server's whole process tree (psutil) over the window ÷ requests.",
        "",
        f"Run {result['date']} on {m['cores']} cores ({m['cpu_model']}; {flags}), "
        f"load average {m['loadavg_start'][0]:.1f} at start (the machine is shared): absolute figures move "
        "between runs, ratios from the same interleaved run are the comparable part.",
        "",
        "| config | what | rps | p50 ms | p99 ms | CPU ms / request | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "| target (issue #4) | value | target | met |",
        "|---|---:|---|---|",
        *target_rows,
        "",
        f"- Model: {result['model']['description']}. int8 vs fp32 argmax agreement on the {p['sentences']} "
        f"benchmark sentences (aiaas export report): **{result['int8_agreement']:.2%}**; accuracy against the "
        f"topic labels fp32 {result['model']['accuracy'].get('fp32')} %, int8 {result['model']['accuracy'].get('int8')} %.",
        f"- p99 at half of aiaas's saturation load: open loop, Poisson arrivals at {half['rate_rps']:.0f} rps "
        f"(0.5 × {cfg['aiaas']['rps']:.0f}), latency from the scheduled send time, {half['rounds']} × "
        f"{half['window_s']:g} s: p50 {_fmt(half['p50_ms'])} ms, p99 **{_fmt(half['p99_ms'])} ms** "
        "(median of the windows' p99).",
        f"- Cold start (fresh process → first prediction with `load_predictor`, median of {cold_runs(result)}): "
        f"**{cold['in_process_s']:.3f} s** = import {cold['import_s']:.3f} + load {cold['load_s']:.3f} + "
        f"first predict {cold['first_predict_s']:.3f}; {cold['process_s']:.3f} s including interpreter start-up.",
        f"- Server labels agree with each other on {result['cross_check']['agree_all']}/"
        f"{result['cross_check']['texts']} sentences (naive fp32 vs litserve/aiaas int8) — a sanity check "
        "that all three serve the same model.",
        "",
        "What each config is:",
        "",
        "- **naive** (`bench/serving/naive_server.py`): FastAPI, a sync `def` route (runs in Starlette's "
        "thread pool), `AutoModelForSequenceClassification` fp32 + tokenizer per request, torch's default "
        "threads, uvicorn defaults (1 process, access log on).",
        f"- **litserve** (`bench/serving/litserve_server.py`): LitServe {m['versions'].get('litserve')}, "
        f"the same int8 ONNX graph on ONNX Runtime, batching max {p['litserve']['max_batch_size']} / "
        f"{p['litserve']['batch_timeout_ms']:g} ms, {p['litserve']['workers']} inference worker processes × "
        f"{p['litserve']['ort_threads']} ORT thread, padding each batch to its longest sentence; LitServe's "
        "defaults otherwise (one API server process per worker, access log on).",
        "- **aiaas** (`bench/serving/aiaas_setup.py`): `aiaas serve --job-workers 0` as a subprocess, "
        "`aiaas init` organisation, an `infer`-scoped API key, a deployment (min_replicas=1) of the registered "
        "model; `POST /v1/deployments/{name}/predict` with `{\"inputs\": [text]}` and the key. Rate limits "
        "raised via `AIAAS_RATE_LIMIT_*` (the limiter still runs per request).",
        "",
        "How aiaas serves (evidence): " + workers["summary"],
        "",
        f"Raw per-round figures, the export report and all parameters: `bench/results/serving.json`. "
        f"Whole run: {result['duration_s']:.0f} s.",
    ])


def cold_runs(result: dict) -> int:
    return int(result["cold_start"]["runs"])
