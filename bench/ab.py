"""A/B of two source trees of aiaas on one machine: the serving and the training benchmark's aiaas
parts, run from each tree in interleaved windows, so a shared machine's load falls on both alike.

    git worktree add --detach ../aiaas-before 79e7c91     # the tree to compare against
    python -m bench.ab --before ../aiaas-before           # after = this tree (~35 min on loaded cores)
    python -m bench.ab --before ../aiaas-before --quick   # 2 short rounds each; writes nothing
    python -m bench.ab --report-only                      # the README section from the results file

Each side runs with PYTHONPATH=<its tree> and PYTHONSAFEPATH=1 (so neither the working directory
nor the venv's editable install can put the other tree's `aiaas` first); the driver checks where
each side imports `aiaas` from.

Serving (bench.serving): one benchmark model (bench.serving.model, built by this tree), and per
side that tree's own `bench.serving.aiaas_setup` steps (`aiaas init`, the artifact registered,
`aiaas serve --job-workers 0`, an infer key and a deployment). Then rounds of before, after,
before, after, ...: bench.serving.load's closed loop (32 clients) for one server while the other is
suspended (SIGSTOP), as bench.serving.run does.

Training (bench.training): the same split of Pang & Lee sentences, `bench.training.aiaas_worker`
(the engine's defaults) in a fresh process per run, before, after, before, after, ...; shorter
than `make bench-training` (fewer sentences) so that several rounds fit.

Per metric: the median over rounds of each side, after / before, the per-round after/before
ratios, and in how many rounds after was above before (a sign test: with 7 rounds, all seven
one way has p = 0.016 if the two trees are the same; with 5, p = 0.0625 at best). Results:
bench/results/ab_refactor.json and a section of bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import callgrind_ab
from bench.serving import aiaas_setup, load, procs
from bench.serving import run as serving_run
from bench.training import run as training_run
from bench.training.common import ROOT, machine, replace_section

RESULTS = ROOT / "bench" / "results" / "ab_refactor.json"
README = ROOT / "bench" / "README.md"
SECTION = "Refactor A/B (issue #20)"
SERVING_METRICS = ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "server_cores_busy")
TRAINING_METRICS = (
    "samples_per_s",
    "step_samples_per_s_median",
    "train_s",
    "process_wall_s",
    "cpu_s",
    "val_accuracy",
    "test_accuracy",
)
CROSS_CHECK_TEXTS = 60

log = logging.getLogger("bench.ab")


@dataclass(frozen=True)
class Side:
    name: str  # "before" or "after"
    tree: Path

    def env_extra(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.tree), "PYTHONSAFEPATH": "1"}

    def env(self, **extra: str) -> dict[str, str]:
        return procs.bench_env(**self.env_extra(), **extra)

    def describe(self) -> dict:
        def git(*args: str) -> str:
            out = subprocess.run(
                ["git", "-C", str(self.tree), *args], capture_output=True, text=True, check=True
            )
            return out.stdout.strip()

        return {
            "tree": str(self.tree),
            "commit": git("rev-parse", "HEAD"),
            "subject": git("log", "-1", "--format=%s")[:200],
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "last_commit_touching_aiaas": git("log", "-1", "--format=%h %s", "--", "aiaas")[:200],
        }


_WHERE = """
import json, aiaas, bench.serving.aiaas_setup as s, bench.training.aiaas_worker as w
print(json.dumps({"aiaas": aiaas.__file__, "aiaas_setup": s.__file__, "aiaas_worker": w.__file__}))
"""


def check_imports(side: Side) -> dict:
    """Where the side's processes import aiaas and the bench helpers from: all inside its tree."""
    out = subprocess.run(
        [sys.executable, "-c", _WHERE], env=side.env(), cwd=ROOT, capture_output=True, text=True, check=True
    )
    where = json.loads(out.stdout.strip().splitlines()[-1])
    for name, path in where.items():
        if not Path(path).resolve().is_relative_to(side.tree.resolve()):
            raise RuntimeError(f"{side.name}: {name} imports from {path}, outside {side.tree}")
    return where


# ---------------------------------------------------------------- statistics


def sign_test_p(higher: int, lower: int) -> float:
    """Two-sided sign test: how likely a split at least this uneven is if each round is a coin toss."""
    n, k = higher + lower, min(higher, lower)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def compare(before: list[float], after: list[float]) -> dict:
    """Medians, after/before, per-round ratios (round i's after vs round i's before) and the sign test."""
    mb, ma = statistics.median(before), statistics.median(after)
    paired = [a / b for a, b in zip(after, before, strict=True) if b]
    higher = sum(a > b for a, b in zip(after, before, strict=True))
    lower = sum(a < b for a, b in zip(after, before, strict=True))

    def spread(xs: list[float]) -> float | None:
        m = statistics.median(xs)
        return round((max(xs) - min(xs)) / m, 3) if m else None

    return {
        "before_median": round(mb, 4),
        "after_median": round(ma, 4),
        "ratio": round(ma / mb, 4) if mb else None,
        "paired_ratios": [round(x, 3) for x in paired],
        "paired_ratio_range": [round(min(paired), 3), round(max(paired), 3)] if paired else None,
        "after_higher_rounds": higher,
        "after_lower_rounds": lower,
        "sign_test_p": round(sign_test_p(higher, lower), 4),
        "before_spread": spread(before),  # (max - min) / median over the side's rounds
        "after_spread": spread(after),
    }


def compare_all(rounds: dict[str, list[dict]], metrics: tuple[str, ...]) -> dict:
    """`compare` per metric; a metric some run did not report (None) is left out."""
    out = {}
    for m in metrics:
        before, after = [r[m] for r in rounds["before"]], [r[m] for r in rounds["after"]]
        if None not in before and None not in after:
            out[m] = compare([float(x) for x in before], [float(x) for x in after])
    return out


# ---------------------------------------------------------------- serving

# Runs in the side's tree: that tree's own benchmark steps (`aiaas init`, register the artifact).
_SETUP = """
import json, os, sys
from pathlib import Path
from bench.serving import aiaas_setup
data_dir, entry, staging = (Path(a) for a in sys.argv[1:4])
key = aiaas_setup._init(dict(os.environ))
model_id = aiaas_setup._register(data_dir, key, entry, staging)
print(json.dumps({"admin_key": key, "model_id": model_id}))
"""


def start_server(side: Side, entry: Path, work: Path, log_dir: Path) -> tuple[procs.Server, dict]:
    data_dir = work / side.name / "aiaas-data"
    data_dir.parent.mkdir(parents=True)
    env = side.env(
        AIAAS_DATA_DIR=str(data_dir),
        AIAAS_ENV="production",
        AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE=aiaas_setup.HIGH_RPM,
        AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE=aiaas_setup.HIGH_TPM,
    )
    args = [str(data_dir), str(entry), str(work / side.name / "staging")]
    out = subprocess.run(
        [sys.executable, "-c", _SETUP, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side.name}: setting up aiaas failed:\n{out.stderr[-4000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    port = procs.free_port()
    server = procs.start(
        f"aiaas-{side.name}",
        ["-m", "aiaas.cli.main", "serve", "--port", str(port), "--job-workers", "0"],
        env=env,
        log_dir=log_dir,
        port=port,
    )
    return server, info


def _predict_all(server: procs.Server, key: str, texts: list[str]) -> list[dict]:
    path = f"/v1/deployments/{aiaas_setup.DEPLOYMENT}/predict"
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        out = []
        for text in texts:
            r = c.post(path, json={"inputs": [text]})
            r.raise_for_status()
            out.append(r.json()["data"][0])
        return out


def cross_check(deployed: dict[str, aiaas_setup.Aiaas], texts: list[str]) -> dict:
    """Do both trees answer alike? Labels, and the whole answer item (label and scores)."""
    got = {name: _predict_all(d.server, d.infer_key, texts) for name, d in deployed.items()}
    pairs = list(zip(got["before"], got["after"], strict=True))
    return {
        "texts": len(texts),
        "same_label": sum(a.get("label") == b.get("label") for a, b in pairs),
        "same_answer": sum(a == b for a, b in pairs),
        "example": {"before": got["before"][0], "after": got["after"][0]},
    }


def serving_rounds(
    args: argparse.Namespace, deployed: dict[str, aiaas_setup.Aiaas], texts: list[str]
) -> dict[str, list[dict]]:
    servers = {name: d.server for name, d in deployed.items()}
    targets = {
        name: load.Target(
            "127.0.0.1",
            d.server.port,
            f"/v1/deployments/{aiaas_setup.DEPLOYMENT}/predict",
            [json.dumps({"inputs": [t]}).encode() for t in texts],
            {"Authorization": f"Bearer {d.infer_key}"},
        )
        for name, d in deployed.items()
    }
    for name, target in targets.items():
        with serving_run._alone(servers, name):
            load.warm(target, requests=200)
    rounds: dict[str, list[dict]] = {name: [] for name in servers}
    for r in range(args.rounds):
        for name in servers:
            with serving_run._alone(servers, name):  # the other side is SIGSTOPped meanwhile
                window = load.closed_loop(
                    targets[name],
                    clients=args.clients,
                    warmup_s=args.warmup,
                    window_s=args.window,
                    cpu=servers[name].cpu_seconds,
                )
            summary = {"round": r, **window.summary(), "loadavg_1m": round(os.getloadavg()[0], 2)}
            rounds[name].append(summary)
            shown = {k: summary[k] for k in (*SERVING_METRICS, "errors")}
            log.info("serving round %d %-6s %s", r, name, shown)
    return rounds


def run_serving(args: argparse.Namespace, sides: list[Side]) -> dict:
    entry = serving_run._build_model()
    texts = json.loads((entry / "data.json").read_text())["texts"]
    work = Path(tempfile.mkdtemp(prefix="aiaas-bench-ab-"))
    log_dir = work / "logs"
    log_dir.mkdir()
    servers: dict[str, procs.Server] = {}
    try:
        infos = {}
        for side in sides:
            servers[side.name], infos[side.name] = start_server(side, entry, work, log_dir)
        deployed = {
            name: aiaas_setup.finish(servers[name], infos[name]["admin_key"], infos[name]["model_id"])
            for name in servers
        }
        check = cross_check(deployed, texts[:CROSS_CHECK_TEXTS])
        log.info("cross-check: %s", {k: check[k] for k in ("texts", "same_label", "same_answer")})
        rounds = serving_rounds(args, deployed, texts)
        trees = {name: server.describe() for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "what": "`aiaas serve` from each tree, POST /v1/deployments/{name}/predict with an infer key, "
        "one sentence per request, closed loop",
        "model": str(entry.name),
        "parameters": {
            "clients": args.clients,
            "rounds": args.rounds,
            "window_s": args.window,
            "warmup_s": args.warmup,
            "sentences": len(texts),
        },
        "cross_check": check,
        "compare": compare_all(rounds, SERVING_METRICS),
        "errors": {name: sum(r["errors"] for r in rs) for name, rs in rounds.items()},
        "server_rss_mib_end": {n: round(sum(p["rss_mib"] for p in t), 1) for n, t in trees.items()},
        "rounds": rounds,
    }


# ---------------------------------------------------------------- training


def run_training(args: argparse.Namespace, sides: list[Side]) -> dict:
    split = training_run._split(args.train, args.validation, args.test)
    rounds: dict[str, list[dict]] = {side.name: [] for side in sides}
    preds: dict[str, list[dict]] = {side.name: [] for side in sides}
    with tempfile.TemporaryDirectory(prefix="bench-ab-training-") as tmp:
        split_file = Path(tmp) / "split.json"
        split.to_file(split_file)
        for r in range(args.training_rounds):
            for side in sides:
                result = training_run._run_worker(
                    "bench.training.aiaas_worker",
                    split_file,
                    Path(tmp) / f"{side.name}-{r}.json",
                    args.epochs,
                    "minilm-l6",
                    1800,
                    env_extra=side.env_extra(),
                )
                preds[side.name].append(result.pop("_pred"))
                result["round"] = r
                rounds[side.name].append(result)
    first = preds["before"][0]
    return {
        "what": "bench.training.aiaas_worker (aiaas.training.train with its defaults) from each tree, "
        "a fresh process per run",
        "data": {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)},
        "epochs": args.epochs,
        "rounds_each": args.training_rounds,
        # The engine is seeded: the same tree twice, and two trees that train alike, predict alike.
        "runs_predicting_as_the_first_before_run": {
            name: sum(p == first for p in ps) for name, ps in preds.items()
        },
        "settings": {name: rs[0]["settings"] for name, rs in rounds.items()},
        "compare": compare_all(rounds, TRAINING_METRICS),
        "rounds": rounds,
    }


# ---------------------------------------------------------------- report


def _table(compared: dict, lower_is_better: set[str]) -> list[str]:
    lines = [
        "| metric | before (median) | after (median) | after / before | per-round after / before "
        "| rounds after > before | sign test p |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for metric, c in compared.items():
        note = " (lower is better)" if metric in lower_is_better else ""
        rounds = c["after_higher_rounds"] + c["after_lower_rounds"]
        lines.append(
            f"| {metric}{note} | {c['before_median']:g} | {c['after_median']:g} | **{c['ratio']:.3f}** | "
            f"{c['paired_ratio_range'][0]:.3f}–{c['paired_ratio_range'][1]:.3f} | "
            f"{c['after_higher_rounds']}/{rounds} | {c['sign_test_p']:.3f} |"
        )
    return lines


def readme_section(result: dict) -> str:
    m, b, a = result["machine"], result["sides"]["before"], result["sides"]["after"]
    loads = result["loadavg_seen"]
    out = [
        f"`python -m bench.ab --before <tree>` (`bench/ab.py`; after = this tree) runs the aiaas parts of "
        "the serving and training benchmarks from two source trees in alternating windows "
        "(before, after, before, after, …; see the module docstring). Before = "
        f"`{b['commit'][:7]}` ({b['subject'][:90]}…), after = `{a['commit'][:7]}`"
        + (" with uncommitted changes" if a["uncommitted_changes"] else "")
        + f" (its `aiaas/` last changed in `{a['last_commit_touching_aiaas'][:7]}`).",
        "",
        f"Run {result['date']} on {m['cores']} cores of an {m['cpu_model']} (flags: "
        + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in m["cpu_flags"].items())
        + f"). **The machine was loaded**: it is shared with other work, 1-minute load average "
        f"{loads['min']}–{loads['max']} during the run (on {m['cores']} cores), so absolute figures "
        "are low and move from window to window; only the side-by-side ratios mean anything. "
        f"Whole run: {result['duration_s'] / 60:.1f} min.",
    ]
    if "serving" in result:
        s = result["serving"]
        p, cc = s["parameters"], s["cross_check"]
        out += [
            "",
            f"**Serving**: {p['rounds']} rounds × {p['window_s']:g} s per side ({p['warmup_s']:g} s warm-up "
            f"before each window), {p['clients']} closed-loop clients, the idle side SIGSTOPped. Errors: "
            f"before {s['errors']['before']}, after {s['errors']['after']}. The two servers give the same "
            f"label on {cc['same_label']}/{cc['texts']} sentences and the same answer (label and scores) "
            f"on {cc['same_answer']}/{cc['texts']}.",
            "",
            *_table(s["compare"], {"p50_ms", "p99_ms", "cpu_ms_per_request"}),
        ]
    if "training" in result:
        t = result["training"]
        same = t["runs_predicting_as_the_first_before_run"]
        out += [
            "",
            f"**Training**: {t['rounds_each']} runs per side, each `aiaas.training.train` with its defaults "
            f"({t['settings']['after']['batch_size']}-sample batches, {t['settings']['after']['precision']}) "
            f"on {t['data']['train']} training sentences for {t['epochs']} epochs, in a fresh process. "
            f"Runs whose validation and test predictions equal the first before-run's: before "
            f"{same['before']}/{t['rounds_each']}, after {same['after']}/{t['rounds_each']}.",
            "",
            *_table(t["compare"], {"train_s", "process_wall_s", "wall_s", "cpu_s"}),
        ]
    if result.get("incomplete"):
        out += ["", f"**Incomplete run**: {result['incomplete']}."]
    out += [
        "",
        "A ratio is within noise when the rounds do not agree on a direction (the sign test's p above "
        "0.05); per-round figures, each side's spread and the parameters are in "
        "`bench/results/ab_refactor.json`.",
    ]
    for key in ("callgrind", "callgrind_winback"):  # bench/callgrind_ab.py's runs, kept in the results file
        if key in result:
            out += ["", callgrind_ab.readme_part(result[key])]
    return "\n".join(out)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="source tree of the 'before' side (required)")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree of the 'after' side (this one)")
    parser.add_argument("--only", choices=("serving", "training"))
    parser.add_argument("--rounds", type=int, default=7, help="serving rounds per side")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured per serving window")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--training-rounds", type=int, default=5)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="2 short rounds each; writes nothing")
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the README section from the results file"
    )
    args = parser.parse_args()
    if args.before is None and not args.report_only:
        parser.error("--before is required: the source tree to compare this one with")
    if args.quick:
        args.rounds, args.window, args.warmup, args.training_rounds = 2, 3.0, 1.0, 2
        args.train, args.validation, args.test, args.epochs = 100, 50, 50, 1
    return args


def main() -> None:
    args = _parse()
    if args.report_only:
        replace_section(README, SECTION, readme_section(json.loads(RESULTS.read_text())))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    sides = [Side("before", args.before.resolve()), Side("after", args.after.resolve())]
    result: dict = {
        "benchmark": "ab",
        "issue": 20,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "sides": {side.name: {**side.describe(), "imports": check_imports(side)} for side in sides},
    }
    if args.only != "training":
        result["serving"] = run_serving(args, sides)
    if args.only != "serving":
        result["training"] = run_training(args, sides)
    seen = [round(os.getloadavg()[0], 2)]
    for side_rounds in result.get("serving", {}).get("rounds", {}).values():
        seen += [r["loadavg_1m"] for r in side_rounds]
    for side_rounds in result.get("training", {}).get("rounds", {}).values():
        seen += [snapshot[0] for r in side_rounds for snapshot in r["loadavg_during"]]
    result["loadavg_seen"] = {"min": min(seen), "max": max(seen), "median": statistics.median(seen)}
    result["duration_s"] = round(time.perf_counter() - started, 1)
    section = readme_section(result)
    print(section)
    if args.quick:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    for key in ("callgrind", "callgrind_winback"):  # bench/callgrind_ab.py's runs: not this script's to drop
        if key in kept:
            result[key] = kept[key]
    section = readme_section(result)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    replace_section(README, SECTION, section)
    log.info("wrote %s and the %r section of %s", RESULTS, SECTION, README)


if __name__ == "__main__":
    main()
