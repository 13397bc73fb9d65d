"""Instructions per predict request, before and after a merge, counted by callgrind: a measure that does
not move with the machine's load (bench/ab.py's CPU-seconds do).

    python -m bench.callgrind_ab --merge 7ef0d42 --merge 9f7d834     # each merge vs its first parent
    python -m bench.callgrind_ab --tree /tmp/ab-x --tree /tmp/ab-y     # any trees, compared pairwise

For each merge, read-only trees of the merge and of its first parent go to /tmp/ab-<sha> (`git worktree
add --detach`, removed at the end). Per tree, natively and with that tree's own code: `aiaas init`, a tiny
BERT exported by the tree's tests/helpers and registered as a fine-tuned model. Then, under `valgrind
--tool=callgrind --instr-atstart=no`, one process of that tree runs create_app() in process behind
httpx.ASGITransport (lifespan included), makes an infer key and a deployment through the API, warms up,
and switches instrumentation on (a client request through a tiny C helper built here) only around a
loop of N `POST /v1/deployments/{name}/predict` requests, one sentence each, in sequence. The same
process also counts an idle window (asyncio.sleep) of the loop's wall time: what background threads cost
meanwhile, subtracted. instructions/request = (loop - idle) / N. Settings that make work depend on
wall time are set far out (usage and request-log flushes, lookup caches, webhook poll, metrics flush), as
a busy server amortises them over thousands of requests; ONNX Runtime runs one intra-op thread.

A second, native run of the same loop under cProfile gives Python calls per request per function, to
name what accounts for a difference (callgrind sees Python only as the interpreter's C functions).
Results: bench/results/ab_refactor.json (key "callgrind", or --key: the merges' run and the win-back's
"callgrind_winback" are kept side by side) and the Refactor A/B section of bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.serving import procs
from bench.training.common import ROOT, machine, replace_section

RESULTS = ROOT / "bench" / "results" / "ab_refactor.json"
log = logging.getLogger("bench.callgrind_ab")

_CG_C = r"""
#include <valgrind/callgrind.h>
void cg_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void cg_off(const char *name) { CALLGRIND_STOP_INSTRUMENTATION; CALLGRIND_DUMP_STATS_AT(name); }
"""

# Runs natively in the side's tree: its own `aiaas init`, its own export and registration helpers.
_SETUP = r"""
import json, os, subprocess, sys
from pathlib import Path
work = Path(sys.argv[1])
out = subprocess.run([sys.executable, "-m", "aiaas.cli.main", "init"], capture_output=True, text=True,
                     timeout=300, check=True)
keys = [l.strip() for l in out.stdout.splitlines() if l.strip().startswith("aiaas_sk_")]
assert len(keys) == 1, out.stdout + out.stderr
import sqlalchemy as sa
from aiaas.core.settings import Settings
from aiaas.store.db import Database
from tests.helpers.deployed import register
settings = Settings()
db = Database(settings.sqlalchemy_url)
with db.engine.connect() as c:
    (org_id,) = c.execute(sa.text("select id from organizations")).one()
root = Path(sys.argv[2])  # one artifact for every tree, built once by the driver
model_id = "ft:tiny-bert:default:cg:ftjob-cgbench1"
register(settings, db, org_id, root, model_id=model_id, task="single_label_classification",
         labels=("negative", "positive"))
db.dispose()
print(json.dumps({"admin_key": keys[0], "model_id": model_id}))
"""

# Runs in the side's tree, under callgrind (mode "callgrind") or natively (mode "profile").
_MEASURE = r"""
import asyncio, ctypes, json, sys, time
import httpx
from aiaas.api.app import create_app
from aiaas.core.settings import Settings
mode, admin_key, model_id, n, warm, lib, out = sys.argv[1:8]
n, warm = int(n), int(warm)
DEPLOYMENT = f"cg-{mode}"  # both runs share the data directory
TEXTS = ["my card was charged twice please refund", "the app crashes when i open settings",
         "great service thank you very much", "where is my package it is late",
         "cancel my subscription today", "login fails with an error message"]

async def main():
    app = create_app(Settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=600) as c:
            admin = {"Authorization": f"Bearer {admin_key}"}
            r = await c.post("/v1/api_keys", json={"name": "cg", "scopes": ["infer"]}, headers=admin)
            r.raise_for_status()
            infer = {"Authorization": f"Bearer {r.json()['key']}"}
            r = await c.post("/v1/deployments", json={"name": DEPLOYMENT, "model": model_id, "min_replicas": 1},
                             headers=admin)
            r.raise_for_status()
            bodies = [{"inputs": [t]} for t in TEXTS]
            ok, answers = 0, []
            for i in range(warm * 20):
                r = await c.post(f"/v1/deployments/{DEPLOYMENT}/predict", json=bodies[i % len(bodies)], headers=infer)
                if r.status_code == 200:
                    ok += 1
                    if ok >= warm:
                        break
                else:
                    await asyncio.sleep(0.5)
            assert ok >= warm, (r.status_code, r.text)
            async def loop(n):
                for i in range(n):
                    r = await c.post(f"/v1/deployments/{DEPLOYMENT}/predict", json=bodies[i % len(bodies)], headers=infer)
                    assert r.status_code == 200, r.text
                    answers.append(r.json()["data"][0])
            if mode == "callgrind":
                cg = ctypes.CDLL(lib)
                cg.cg_on(); await loop(0); cg.cg_off(b"base")  # the window itself, no request
                t0 = time.monotonic()
                cg.cg_on(); await loop(n); cg.cg_off(b"loop")
                wall = time.monotonic() - t0
                cg.cg_on(); await asyncio.sleep(wall); cg.cg_off(b"idle")  # background threads meanwhile
            else:
                import cProfile
                prof = cProfile.Profile()
                t0 = time.monotonic()
                prof.enable(); await loop(n); prof.disable()
                wall = time.monotonic() - t0
                import pstats
                st = pstats.Stats(prof).stats
                calls = {}
                for (fn, line, name), (cc, nc, tt, ct, callers) in st.items():
                    calls[f"{fn}:{line}({name})"] = nc
            result = {"wall_s": wall, "answers": answers[:6]}
            if mode != "callgrind":
                result["calls"] = calls
            with open(out, "w") as f:
                json.dump(result, f)

asyncio.run(main())
"""

QUIET = {  # work that runs by the clock, not per request: far out, as a busy server amortises it
    "AIAAS_ENV": "production",
    "AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE": "100000000",
    "AIAAS_RATE_LIMIT_TOKENS_PER_MINUTE": "100000000000",
    "AIAAS_USAGE_FLUSH_SECONDS": "3600",
    "AIAAS_LOOKUP_CACHE_SECONDS": "3600",
    "AIAAS_MALLOC_TRIM_SECONDS": "0",
    "AIAAS_MONITORING_CHECK_SECONDS": "3600",
    "AIAAS_WEBHOOK_POLL_SECONDS": "3600",
    "AIAAS_METRICS_FLUSH_SECONDS": "3600",
    "AIAAS_REQUEST_LOG_FLUSH_SECONDS": "3600",
}


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def build_helper(work: Path) -> Path:
    src, lib = work / "cg.c", work / "libcg.so"
    src.write_text(_CG_C)
    subprocess.run(["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib


def side_env(tree: Path, data_dir: Path) -> dict[str, str]:
    # PYTHONHASHSEED: set and dict orders, and so the work they cause, the same in every run.
    return procs.bench_env(PYTHONPATH=str(tree), PYTHONSAFEPATH="1", PYTHONHASHSEED="0",
                           AIAAS_DATA_DIR=str(data_dir), **QUIET)


def _totals(path: Path) -> int:
    m = re.search(r"^totals:\s*(\d+)", path.read_text(), re.MULTILINE)
    if not m:
        raise RuntimeError(f"no totals in {path}")
    return int(m.group(1))


_BUILD = r"""
import sys
from pathlib import Path
from tests.helpers.deployed import export_tiny_classifier
print(export_tiny_classifier(Path(sys.argv[1]), labels=("negative", "positive")))
"""


def build_artifact(work: Path) -> Path:
    """The tiny BERT (tests/helpers), exported by this tree once: every side serves the same weights."""
    out = subprocess.run([sys.executable, "-c", _BUILD, str(work / "tiny")], env=procs.bench_env(PYTHONPATH=str(ROOT)),
                         cwd=ROOT, capture_output=True, text=True, timeout=900, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def measure_tree(tree: Path, work: Path, lib: Path, artifact: Path, n: int, warm: int) -> dict:
    data_dir = work / "data"
    env = side_env(tree, data_dir)
    out = subprocess.run([sys.executable, "-c", _SETUP, str(work), str(artifact)], env=env, cwd=tree,
                         capture_output=True, text=True, timeout=900)
    if out.returncode:
        raise RuntimeError(f"{tree}: setup failed\n{out.stderr[-3000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    cg_out = work / "callgrind.out"
    cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={cg_out}.%p",
           sys.executable, "-c", _MEASURE, "callgrind", info["admin_key"], info["model_id"], str(n),
           str(warm), str(lib), str(work / "cg.json")]
    run = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=3600)
    errors = [_check(run, work / "cg.json", tree, "callgrind run")]
    dumps = {}
    for f in work.glob("callgrind.out.*"):
        text = f.read_text(errors="replace")
        m = re.search(r"^desc: Trigger: Client Request: (\w+)", text, re.MULTILINE)
        if m:
            dumps[m.group(1)] = f
    base, loop, idle = _totals(dumps["base"]), _totals(dumps["loop"]), _totals(dumps["idle"])
    cg = json.loads((work / "cg.json").read_text())
    prof = subprocess.run([sys.executable, "-c", _MEASURE, "profile", info["admin_key"], info["model_id"],
                           str(n), str(warm), "", str(work / "prof.json")],
                          env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    errors.append(_check(prof, work / "prof.json", tree, "profile run"))
    calls = json.loads((work / "prof.json").read_text())["calls"]
    return {
        "tree": str(tree),
        "commit": _git("rev-parse", "HEAD", cwd=tree),
        "subject": _git("log", "-1", "--format=%s", cwd=tree)[:160],
        "requests": n,
        "loop_instructions": loop,
        "baseline_instructions": base,  # the same window with no request in it
        "idle_instructions": idle,  # an idle window as long as the loop's: background threads, not subtracted
        "loop_wall_s_under_callgrind": round(cg["wall_s"], 2),
        "instructions_per_request": round((loop - base) / n),
        "answers": cg["answers"],
        "python_calls_per_request": _per_request(calls, tree, n),
        "callgrind_file": str(dumps["loop"]),
        "errors_after_the_measurement": [e for e in errors if e],
    }


def _measured(tree: Path, work: Path, lib: Path, artifact: Path, n: int, warm: int, again: bool) -> dict:
    """measure_tree, or its saved result from an earlier run with the same tree, commit and N."""
    commit = _git("rev-parse", "HEAD", cwd=tree)
    name = f"{commit[:12]}-{n}-{warm}" + ("-again" if again else "")
    saved = work / f"{name}.json"
    if saved.exists() and not _git("status", "--porcelain", "--untracked-files=no", cwd=tree):
        return json.loads(saved.read_text())
    side = work / name
    shutil.rmtree(side, ignore_errors=True)
    result = measure_tree(tree, side, lib, artifact, n, warm)
    saved.write_text(json.dumps(result))
    return result


def _check(run: subprocess.CompletedProcess[str], out: Path, tree: Path, what: str) -> str | None:
    """A run must have written its result; an error after that (at shutdown) is kept, not fatal."""
    if not out.exists():
        raise RuntimeError(f"{tree}: {what} failed\n{run.stderr[-3000:]}")
    if run.returncode:
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else f"exit {run.returncode}"
        log.warning("%s: %s ended with an error after writing its result: %s", tree, what, last)
        return f"{what}: {last}"
    return None


def _per_request(calls: dict[str, int], tree: Path, n: int) -> dict[str, float]:
    """Calls per request by 'file(function)', line numbers dropped and paths made tree-independent."""
    out: dict[str, float] = {}
    for key, count in calls.items():
        m = re.match(r"^(.*):(\d+)\((.*)\)$", key)
        fn, name = (m.group(1), m.group(3)) if m else (key, "")
        fn = fn.replace(str(tree) + "/", "")
        fn = re.sub(r"^.*site-packages/", "", fn)
        fn = re.sub(r"^.*/lib/python3\.\d+/", "", fn)
        k = re.sub(r" at 0x[0-9a-f]+", "", f"{fn}({name})")
        out[k] = out.get(k, 0.0) + count / n
    return {k: round(v, 3) for k, v in out.items()}


def call_diff(before: dict[str, float], after: dict[str, float], top: int = 25) -> list[dict]:
    keys = set(before) | set(after)
    rows = [{"function": k, "before": before.get(k, 0.0), "after": after.get(k, 0.0),
             "delta": round(after.get(k, 0.0) - before.get(k, 0.0), 3)} for k in keys]
    rows = [r for r in rows if abs(r["delta"]) >= 0.5]
    rows.sort(key=lambda r: -abs(r["delta"]))
    return rows[:top]


def annotate_diff(before: Path, after: Path, top: int = 15) -> list[dict]:
    """Self instructions per C function (callgrind_annotate), after minus before, largest first."""
    def table(path: Path) -> dict[str, int]:
        out = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)], capture_output=True,
                             text=True, check=True).stdout
        rows: dict[str, int] = {}
        for line in out.splitlines():
            m = re.match(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$", line)
            if m and ":" in m.group(2):
                # file:function, without the object file (named on some lines only) or recursion depth
                name = re.sub(r"'\d+$", "", re.sub(r" \[[^]]*\]$", "", m.group(2).strip()))
                name = re.sub(r"^/tmp/python-build[^/]*/Python-[^/]*/", "cpython/", name)
                rows[name] = rows.get(name, 0) + int(m.group(1).replace(",", ""))
        return rows

    b, a = table(before), table(after)
    rows = [{"function": k, "before": b.get(k, 0), "after": a.get(k, 0), "delta": a.get(k, 0) - b.get(k, 0)}
            for k in set(a) | set(b)]
    rows.sort(key=lambda r: -abs(r["delta"]))
    return rows[:top]


SHOWN = ("commit", "subject", "instructions_per_request", "loop_instructions", "baseline_instructions",
         "idle_instructions", "loop_wall_s_under_callgrind")


def compare_pair(label: str, before: dict, after: dict) -> dict:
    ib, ia = before["instructions_per_request"], after["instructions_per_request"]
    n_b, n_a = before["requests"], after["requests"]
    return {
        "pair": label,
        "before": {k: before[k] for k in SHOWN},
        "after": {k: after[k] for k in SHOWN},
        "ratio": round(ia / ib, 4),
        "delta_per_request": ia - ib,
        "same_answers": before["answers"] == after["answers"],
        "python_call_changes_per_request": call_diff(before["python_calls_per_request"],
                                                     after["python_calls_per_request"]),
        "c_self_instruction_changes_whole_loop": annotate_diff(Path(before["callgrind_file"]),
                                                               Path(after["callgrind_file"])),
        "requests": [n_b, n_a],
    }


def readme_part(cg: dict) -> str:
    """The README's account of a callgrind run: per pair, instructions per request before -> after."""
    m = cg["machine"]
    out = [
        f"**Instructions per request** (`python -m bench.callgrind_ab`, `bench/callgrind_ab.py`; run {cg['date']} "
        f"on an {m.get('cpu_model')}, {cg['valgrind']}): {cg['what']}. {cg['requests_per_side']} requests per "
        f"tree after {cg['warmup_requests']} of warm-up; each pair as labelled (a merge against its first "
        "parent, or two trees), and one tree measured twice: what is left of noise, to hold each Δ against. "
        "Counts of executed instructions do not depend on the machine's speed, but the event loop's polling "
        "while a request runs in a thread does follow the scheduling, so that noise is not zero.",
        "",
        "| pair | before → after (instructions / request) | after / before | Δ / request | same answers |",
        "|---|---:|---:|---:|---|",
    ]
    for p in cg["pairs"]:
        b, a = p["before"], p["after"]
        out.append(
            f"| {p['pair']} | {b['instructions_per_request']:,} → {a['instructions_per_request']:,} | "
            f"**{p['ratio']:.4f}** | {p['delta_per_request']:+,} | {'yes' if p['same_answers'] else 'no'} |"
        )
    return "\n".join(out)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--merge", action="append", default=[], help="a merge commit: compared with its first parent")
    ap.add_argument("--tree", action="append", default=[], help="trees compared in pairs (before, after, ...)")
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--no-write", action="store_true", help="print the result, leave the results file alone")
    ap.add_argument("--key", default="callgrind", help="the results file's key for this run (others are kept)")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep each tree's measurement (and callgrind files) here and reuse them on a rerun")
    args = ap.parse_args()

    pairs: list[tuple[str, Path, Path]] = []
    made: list[Path] = []
    for merge in args.merge:
        sha = _git("rev-parse", merge)
        parent = _git("rev-parse", f"{sha}^1")
        trees = []
        for c in (parent, sha):
            path = Path(f"/tmp/ab-{c[:7]}")
            if not path.exists():
                _git("worktree", "add", "--detach", str(path), c)
                made.append(path)
            trees.append(path)
        what = _git("log", "-1", "--format=%s", sha).split(":")[0]  # e.g. "Merge wp-e-inference"
        pairs.append((f"{sha[:7]} ({what}) vs its first parent {parent[:7]}", trees[0], trees[1]))
    for i in range(0, len(args.tree) - 1, 2):
        before, after = Path(args.tree[i]), Path(args.tree[i + 1])
        same = before.resolve() == after.resolve()
        b, a = (_git("rev-parse", "--short=7", "HEAD", cwd=t) for t in (before, after))
        label = f"{b} measured twice (the measure's own noise)" if same else f"{b} -> {a}"
        pairs.append((label, before, after))

    work = args.work or Path(tempfile.mkdtemp(prefix="aiaas-cg-"))
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    try:
        lib = build_helper(work)
        artifact = build_artifact(work) if not (work / "tiny" / "artifact").exists() else work / "tiny" / "artifact"
        compared = []
        for label, before, after in pairs:
            sides = {}
            for name, tree in (("before", before), ("after", after)):
                log.info("%s: %s %s", label, name, tree)
                sides[name] = _measured(tree, work, lib, artifact, args.requests, args.warmup,
                                          "measured twice" in label and name == "after")
                log.info("  %s instructions/request", f"{sides[name]['instructions_per_request']:,}")
            c = compare_pair(label, sides["before"], sides["after"])
            log.info("%s: ratio %.4f (%+d instructions/request)", label, c["ratio"], c["delta_per_request"])
            compared.append(c)
        result = {
            "what": "instructions per POST /v1/deployments/{name}/predict (tiny BERT, ONNX fp32), in process "
            "through httpx.ASGITransport, counted by valgrind --tool=callgrind; the loop minus the same window "
            "with no request",
            "date": started.isoformat(timespec="seconds"),
            "requests_per_side": args.requests,
            "warmup_requests": args.warmup,
            "settings": QUIET,
            "valgrind": subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip(),
            "machine": {k: v for k, v in machine().items() if k in ("cpu_model", "cores", "versions")},
            "loadavg_1m_end": round(os.getloadavg()[0], 2),
            "pairs": compared,
        }
        text = json.dumps(result, indent=2)
        if args.no_write:
            print(text)
        else:
            data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            data[args.key] = result
            RESULTS.write_text(json.dumps(data, indent=2) + "\n")
            from bench import ab  # the section holds both runs; ab.readme_section adds this one's part

            replace_section(ab.README, ab.SECTION, ab.readme_section(data))
            log.info("written to %s and %s", RESULTS, ab.README)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        for path in made:
            _git("worktree", "remove", "--force", str(path))


if __name__ == "__main__":
    main()
