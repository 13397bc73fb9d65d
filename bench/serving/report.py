"""Turn the measurements into bench/results/serving.json and the "## Serving" section of
bench/README.md (only that section is rewritten; other benchmarks own the rest)."""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

HEADING = "## Serving"

TARGETS = {  # name in the JSON -> (comparison, threshold), from issues #4 and #18
    "ratio_vs_naive": (">=", 8.0),
    "ratio_vs_litserve": (">=", 2.0),
    "p99_at_half_load_ms": ("<=", 50.0),
    "cold_start_s": ("<=", 0.5),
    "classifications_vs_predict": (">=", 0.9),
    "embeddings_vs_predict": (">=", 0.9),
    "oip_binary_vs_predict": (">=", 0.9),
    "predict_vs_litserve": (">=", 3.0),
}
ROUTE_CONFIGS = ("aiaas_classifications", "aiaas_embeddings", "aiaas_oip_binary")
ENGINE_PREFIX = "infer"  # the inference executor's threads (aiaas/serving/local.py): tokenizer + ONNX Runtime


def engine_share(by_thread: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per config: server CPU ms per request in the engine (the `infer_*` threads), the event loop
    (`MainThread`) and the rest, and the engine's share of the whole."""
    out = {}
    for config, groups in by_thread.items():
        engine = sum(ms for name, ms in groups.items() if name.startswith(ENGINE_PREFIX))
        loop = groups.get("MainThread", 0.0)
        total = sum(groups.values())
        out[config] = {
            "engine_ms": round(engine, 3),
            "event_loop_ms": round(loop, 3),
            "other_ms": round(total - engine - loop, 3),
            "total_ms": round(total, 3),
            "engine_share": round(engine / total, 3) if total else None,
        }
    return out


def median_config(rounds: list[dict]) -> dict:
    """Median over rounds of each figure (rounds ran interleaved with the other configs)."""
    keys = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request")
    out = {
        k: round(statistics.median(r[k] for r in rounds), 3 if k == "cpu_ms_per_request" else 1) for k in keys
    }
    out["requests_per_cpu_s"] = round(1000.0 / out["cpu_ms_per_request"], 1)  # throughput per busy core
    out["errors"] = sum(r["errors"] for r in rounds)
    out["client_cpu_ms_per_request"] = round(
        statistics.median(r["client_cpu_ms_per_request"] for r in rounds), 3
    )
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
    pattern = re.compile(rf"^{re.escape(HEADING)}[ \t]*\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(text):
        text = pattern.sub(lambda _m: body + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + body
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt(value, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def _intro(result: dict) -> list[str]:
    p, m = result["parameters"], result["machine"]
    lengths = p["token_lengths"]
    flags = ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["cpu_flags"].items())
    return [
        (
            "`make bench-serving` (`python -m bench.serving.run`) starts three servers on this machine and "
            f"loads each with {p['clients']} closed-loop clients sending one sentence per request "
            f"({p['sentences']} seeded support-desk sentences, {lengths['min']}–{lengths['max']} tokens, "
            f"median {lengths['median']}), {p['rounds']} rounds × {p['window_s']:g} s per config, interleaved "
            f"({', '.join(p['order'])}, naive, …), {p['warmup_s']:g} s warm-up before each window; the servers "
            "not being measured are suspended (SIGSTOP) meanwhile. Figures are medians over rounds; CPU is the "
            "server's whole process tree (psutil) over the window ÷ requests."
        ),
        (
            f"Run {result['date']} on {m['cores']} cores ({m['cpu_model']}; {flags}), load average "
            f"{m['loadavg_start'][0]:.1f} at start and {m['loadavg_end'][0]:.1f} at the end: the machine is "
            "shared with other work, so absolute figures move between runs; compare configs within one run."
        ),
    ]


def _tables(result: dict) -> list[str]:
    cfg = result["configs"]
    table = [
        "| config | what | rps | p50 ms | p99 ms | CPU ms / request | errors | processes / threads |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("naive", "litserve", "aiaas", *(n for n in ROUTE_CONFIGS if n in cfg)):
        c = cfg[name]
        table.append(
            f"| {name} | {c['what']} | {_fmt(c['rps'])} | {_fmt(c['p50_ms'])} | {_fmt(c['p99_ms'])} | "
            f"{_fmt(c['cpu_ms_per_request'], '.2f')} | {c['errors']} | "
            f"{c['server_processes']} / {c['server_threads']} |"
        )
    targets = ["| target (issues #4, #18) | value | target | met |", "|---|---:|---|---|"]
    for name, v in result["targets"].items():
        met = "yes" if v["met"] else "**no**"
        targets.append(f"| {name} | {_fmt(v['value'], '.3g')} | {v['target']} | {met} |")
    per_cpu = (
        "Per CPU-second (server CPU per request; unlike rps it does not depend on how much of the shared "
        "cores each server won from the other tenants): aiaas serves "
        f"{result['cpu_efficiency_vs_naive']:.2f}× the requests of naive and "
        f"{result['cpu_efficiency_vs_litserve']:.2f}× those of litserve. Per-round rps ratios: vs naive "
        f"{result['ratio_per_round']['naive']}, vs litserve {result['ratio_per_round']['litserve']}."
    )
    per_cpu_routes = result.get("routes_vs_predict_per_cpu")
    if per_cpu_routes:
        per_cpu += (
            " aiaas's routes per CPU-second, relative to its predict route: "
            + ", ".join(f"{route} {ratio:.2f}" for route, ratio in per_cpu_routes.items())
            + f"; per-round rps ratios: {result['routes_vs_predict_per_round']}."
        )
    out = ["\n".join(table), per_cpu]
    if "engine_share" in result:
        out.append(_engine_table(result))
    out.append("\n".join(targets))
    missed = _missed(result)
    if missed:
        out.append(missed)
    return out


def _engine_table(result: dict) -> str:
    rows = [
        "Where each aiaas route's server CPU goes, ms per request (last round; per-thread CPU from /proc, "
        "threads named by the server, bench/serving/named_serve.py): the engine is the inference executor's "
        "`infer_*` threads (tokenizer + ONNX Runtime), the event loop is HTTP, routing, auth, limits, JSON "
        "and metering.",
        "",
        "| route | engine | event loop | other threads | total | engine share |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for config, e in result["engine_share"].items():
        share = "—" if e["engine_share"] is None else f"{e['engine_share']:.0%}"
        rows.append(
            f"| {config} | {e['engine_ms']:.3f} | {e['event_loop_ms']:.3f} | {e['other_ms']:.3f} | "
            f"{e['total_ms']:.3f} | {share} |"
        )
    return "\n".join(rows)


def _missed(result: dict) -> str:
    """A line per missed target, with the CPU profile that explains it."""
    cfg, share = result["configs"], result.get("engine_share", {})
    lines = []

    def split(config: str) -> str:
        e = share.get(config)
        if not e:
            return f"{config}: {cfg[config]['cpu_ms_per_request']:.2f} ms CPU/request"
        return (
            f"{config}: {e['total_ms']:.2f} ms CPU/request = engine {e['engine_ms']:.2f} + event loop "
            f"{e['event_loop_ms']:.2f} + other {e['other_ms']:.2f}"
        )

    for name, check in result["targets"].items():
        if check["met"] or check["value"] is None:
            continue
        if name.endswith("_vs_predict"):
            config = "aiaas_" + name.removesuffix("_vs_predict")
            why = f"{split(config)}; {split('aiaas')}"
        elif name in ("predict_vs_litserve", "ratio_vs_litserve"):
            lit = cfg["litserve"]["cpu_ms_per_request"]
            why = (
                f"{split('aiaas')}; litserve: {lit:.2f} ms CPU/request (its whole process tree); per CPU-second "
                f"aiaas serves {result['cpu_efficiency_vs_litserve']:.2f}× litserve's requests"
            )
            engine = share.get("aiaas", {}).get("engine_ms")
            if engine:
                why += (
                    f"; with no event-loop or other work at all, aiaas's engine alone would allow "
                    f"{lit / engine:.2f}× per CPU-second: the rest of the gap is the engine (tokenizer + ONNX "
                    "Runtime), not the serving path"
                )
        else:
            m = result["machine"]
            why = (
                f"no route profile explains this one; the machine's load average was {m['loadavg_start'][0]:.1f} "
                f"at start and {m['loadavg_end'][0]:.1f} at the end, and aiaas's server had "
                f"{cfg['aiaas']['server_cores_busy']:.2f} of {m['cores']} cores busy in its windows"
            )
        lines.append(f"- **{name}** {check['value']} (target {check['target']}): {why}.")
    return ("Targets missed, and the profile that explains each:\n" + "\n".join(lines)) if lines else ""


def _facts(result: dict) -> str:
    p, cfg, half = result["parameters"], result["configs"], result["half_load"]
    lit_half = half["litserve_same_rate"]
    cold, acc, cross = result["cold_start"]["median"], result["model"]["accuracy"], result["cross_check"]
    model = (
        f"- Model: {result['model']['description']}. int8 vs fp32 argmax agreement on the {p['sentences']} "
        f"benchmark sentences (aiaas export report): **{result['int8_agreement']:.2%}**; accuracy against "
        f"the topic labels fp32 {acc.get('fp32')} %, int8 {acc.get('int8')} %."
    )
    half_load = (
        "- p99 at half of aiaas's saturation load: open loop, Poisson arrivals at "
        f"{half['rate_rps']:.0f} rps (0.5 × {cfg['aiaas']['rps']:.0f}), latency from the scheduled send "
        f"time, {half['rounds']} × {half['window_s']:g} s: p50 {_fmt(half['p50_ms'])} ms, "
        f"p99 **{_fmt(half['p99_ms'])} ms** (median of the windows' p99). LitServe at the same rate and "
        f"arrival times, interleaved: p50 {_fmt(lit_half['p50_ms'])} ms, p99 {_fmt(lit_half['p99_ms'])} ms."
    )
    cold_start = (
        "- Cold start (fresh process → first prediction with `load_predictor`, median of "
        f"{result['cold_start']['runs']}): **{cold['in_process_s']:.3f} s** = import "
        f"{cold['import_s']:.3f} + load {cold['load_s']:.3f} + first predict {cold['first_predict_s']:.3f}; "
        f"{cold['process_s']:.3f} s including the interpreter's own start-up."
    )
    same = (
        f"- The three servers' labels agree on {cross['agree_all']}/{cross['texts']} sentences, litserve's and "
        f"aiaas's (the same int8 graph file) on {cross['litserve_vs_aiaas']}/{cross['texts']}: all three serve "
        "the same model. Labels can still differ on borderline sentences: fp32 vs int8 (the agreement figure "
        "above), and between the int8 servers because dynamic int8 quantises each batch's activations with "
        "one scale (batch-mates and padding differ), aiaas turns one of ONNX Runtime's fusions off, and "
        "aiaas quantises the first-token rows of the last layer on their own (below)."
    )
    routes = cross.get("aiaas_routes_vs_predict")
    if routes:
        same += (
            f" aiaas's /v1/classifications and OIP binary infer give its predict route's label on "
            f"{routes['classifications']}/{cross['texts']} and {routes['oip_binary']}/{cross['texts']} sentences; "
            f"/v1/embeddings answers {routes['embedding_dims']}-dimensional vectors."
        )
    lines = [model, half_load, cold_start, same]
    first = result["model"].get("first_token")
    if first:
        speed = first.get("throughput_seq_s", {})
        lines.append(
            "- First-token logits graph (`aiaas/serving/first_token.py`): at load, aiaas's runtime derives from "
            "the artifact's int8 graph a logits-only graph whose last layer computes the [CLS] row alone "
            "(keys and values still use every token); the export judged it with the accuracy guard: "
            f"{first['reason']}, accepted={first['accepted']}; one thread in the export, "
            f"{_fmt(speed.get('full'))} → {_fmt(speed.get('first_token'))} sentences/s. LitServe loads the "
            "artifact's graph file as it is."
        )
    return "\n".join(lines)


def _configs(result: dict) -> str:
    p, m = result["parameters"], result["machine"]
    lit = p["litserve"]
    naive = (
        "- **naive** (`bench/serving/naive_server.py`): FastAPI, a sync `def` route (runs in Starlette's "
        "thread pool), `AutoModelForSequenceClassification` fp32 + tokenizer per request, torch's default "
        "threads, uvicorn's defaults (1 process, access log on)."
    )
    litserve = (
        f"- **litserve** (`bench/serving/litserve_server.py`): LitServe {m['versions'].get('litserve')}, "
        f"the same int8 ONNX graph on ONNX Runtime, batching max {lit['max_batch_size']} / "
        f"{lit['batch_timeout_ms']:g} ms, {lit['workers']} inference worker processes × {lit['ort_threads']} "
        "ORT thread (one worker per core, as LitServe advises for CPU; 1 worker × 2 threads served ~1.7× "
        "fewer requests per CPU-second here, 4 × 1 about the same as 2 × 1), each batch padded to its "
        "longest sentence; LitServe's defaults otherwise (one API server process per worker, access log on)."
    )
    aiaas = (
        "- **aiaas** (`bench/serving/aiaas_setup.py`): `aiaas serve --job-workers 0` as a subprocess, the "
        "`aiaas init` organisation, an `infer`-scoped API key, a deployment (min_replicas=1) of the "
        "registered model (artifact encrypted at rest, as fine-tuning jobs store it); "
        '`POST /v1/deployments/{name}/predict` with `{"inputs": [text]}` and the key. '
        "Rate limits raised via `AIAAS_RATE_LIMIT_*` (the limiter still runs on every request). "
        "The aiaas_* configs (issue #18) load the same server with the same sentences and key through "
        "`/v1/classifications`, `/v1/embeddings` (the deployment name as `model`, one sentence as `input`) and "
        "OIP v2 infer with binary tensors (as tritonclient sends with binary_data=True)."
    )
    return f"{naive}\n{litserve}\n{aiaas}"


def markdown(result: dict) -> str:
    workers = result["aiaas_workers"]
    by_thread = ", ".join(
        f"{group} {ms:.2f} ms" for group, ms in workers["cpu_ms_per_request_by_thread_last_round"].items()
    )
    paragraphs = [
        HEADING,
        *_intro(result),
        *_tables(result),
        _facts(result),
        "What each config is:",
        _configs(result),
        "How aiaas serves (evidence): " + workers["summary"],
        (
            "Where aiaas's server CPU goes, per request (last aiaas window; per-thread CPU from /proc, "
            f"threads named by the server): {by_thread}. `python -m bench.serving.profile` repeats this on aiaas "
            "alone, on any of its routes, and adds a profile of the hot path (py-spy, or cProfile of the event "
            "loop without it)."
        ),
        (
            "Raw per-round figures, the export report and all parameters: `bench/results/serving.json`. "
            f"Whole run: {result['duration_s']:.0f} s."
        ),
    ]
    return "\n\n".join(paragraphs) + "\n"
