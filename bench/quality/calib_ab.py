"""Which validation rows should fit the transformer's temperature? (issue #17 item 5)

    python -m bench.quality.calib_ab collect --sets mr-sentences tweets --seeds 0 1 --epochs 3
    python -m bench.quality.calib_ab analyse
    python -m bench.quality.calib_ab charcnn --sets mr-sentences tweets --seeds 42 1

`collect` fine-tunes MiniLM-L6 once per (set, seed) on the bench split of run.py (same subsample,
same train / validation / test rows), for a fixed number of epochs (so load does not change what
is trained), and keeps every epoch's fp32 logits on the validation and test rows (read from the
epoch-end checkpoints). The training run does not depend on the validation rows (they only pick the
epoch kept; early stopping cannot end a 3-epoch run before its last epoch with patience 2), so every
rule below is applied to the same run, offline:

    now         the epoch picked on all validation rows, its temperature fit on the same rows
    slice       the epoch picked on the selection part of validation, the temperature fit on the
                calibration slice (calibration.split_indices, dealt with the run's seed as the
                platform deals it: aiaas.training.calibrate_transformer.split_for_calibration)
    crossfit    the epoch picked on all validation rows; the temperature is the geometric mean of
                T fit on half A with the epoch half B picked, and on B with the epoch A picked

`analyse` prints test accuracy, test ECE (15 bins) and its noise floor (score.ece_floor) per rule,
and, so that one validation split does not decide, redraws each run's pooled validation + test rows
200 times into validation splits of 250 / 500 / 1,000 rows (`redraw`); writes
bench/results/quality_calibration.json. `charcnn` trains char-cnn twice per set and seed (all
validation rows pick and fit; calibration.HOLD_OUT_SLICE on) and writes
bench/results/quality_calibration_charcnn.json. The findings, and why the platform keeps
HOLD_OUT_SLICE off: bench/README.md, "Which validation rows fit the temperature".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import score
from bench.quality.run import LIMITS, _Log, _split
from bench.training.common import ROOT, loadavg

log = logging.getLogger("bench.quality")
TASK = "single_label_classification"
LOGITS = ROOT / "bench" / "quality" / ".cache" / "calib_logits"
RESULTS = ROOT / "bench" / "results" / "quality_calibration.json"
# Temperatures tried for the lowest test ECE a single temperature can reach (a bound, not a fit).
T_GRID = np.exp(np.linspace(np.log(0.3), np.log(6.0), 120))


class _EpochKeeper(_Log):
    """Callbacks that copy each epoch-end checkpoint's weights aside before the loop prunes them."""

    def __init__(self, name: str, keep: Path) -> None:
        super().__init__(name)
        self.keep = keep
        self.epochs: list[Path] = []

    def checkpoint(self, step: int, path: Path, metrics: dict) -> None:
        if "accuracy" not in metrics:  # a periodic checkpoint inside an epoch
            return
        dest = self.keep / f"epoch-{len(self.epochs) + 1}"
        shutil.copytree(path, dest, ignore=shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "trainer_state.pt"))
        self.epochs.append(dest)


def collect(name: str, seed: int, epochs: int, work_root: Path) -> Path:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from aiaas.training import TrainConfig
    from aiaas.training.calibrate_transformer import validation_logits
    from aiaas.training.loop import train

    _, data, test_texts, labels, truth, _ = _split(name, LIMITS[name])
    keeper = _EpochKeeper(name, work_root / f"{name}-s{seed}-epochs")
    config = TrainConfig(base_model="minilm-l6", n_epochs=epochs, seed=seed)
    result = train(config, data, work_root / f"{name}-s{seed}", keeper)
    meta = json.loads((Path(result.model_dir) / "aiaas.json").read_text())
    val_texts = [ex.text for ex in data.validation]
    y_val = np.array([labels.index(str(ex.label)) for ex in data.validation])
    val, test = [], []
    for path in keeper.epochs:
        model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True).to("cpu").float()  # nosec B615 - a local directory this run wrote
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)  # nosec B615 - a local directory this run wrote
        val.append(validation_logits(model, tokenizer, val_texts, int(meta["max_length"])))
        test.append(validation_logits(model, tokenizer, test_texts, int(meta["max_length"])))
    LOGITS.mkdir(parents=True, exist_ok=True)
    out = LOGITS / f"{name}-s{seed}-e{epochs}.npz"
    np.savez(out, val=np.stack(val), test=np.stack(test), y_val=y_val, y_test=truth,
             best_step=int(meta["metrics"].get("best_step") or 0))  # fmt: skip
    shutil.rmtree(work_root / f"{name}-s{seed}-epochs", ignore_errors=True)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _pick(val: np.ndarray, y: np.ndarray, rows: np.ndarray, labels: list[str]) -> int:
    """The epoch the loop keeps when `rows` are its validation rows (its selection score, first best)."""
    from aiaas.training import metrics

    best, best_e = None, 0
    for e in range(len(val)):
        score_e = tuple(metrics.selection_score(TASK, metrics.single_label(val[e][rows], y[rows], labels)))
        if best is None or score_e > best:
            best, best_e = score_e, e
    return best_e


def _temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """calibrate_transformer's rule: the NLL fit, kept only where it does not raise ECE on its rows."""
    from aiaas.training.calibration import ece, fit_temperature

    t = fit_temperature(logits, y)
    before, after = ece(TASK, _softmax(logits), y), ece(TASK, _softmax(logits / t), y)
    return t if (before is None or after is None or after <= before) else 1.0


def rules(npz: Path) -> dict[str, dict[str, Any]]:
    """Every rule on one run's logits; the slice is dealt with the run's seed, as the platform deals it."""
    from aiaas.training.calibration import ece, split_indices

    seed = int(npz.stem.split("-s")[-1].split("-")[0])

    got = np.load(npz)
    val, test, y_val, y_test = got["val"], got["test"], got["y_val"], got["y_test"]
    labels = [str(i) for i in range(val.shape[2])]
    every = np.arange(len(y_val))
    out: dict[str, dict[str, Any]] = {}

    def record(rule: str, epoch: int, t: float, fit_rows: int, select_rows: int) -> None:
        probs = _softmax(test[epoch] / t)
        out[rule] = {
            "epoch": epoch + 1,
            "temperature": round(t, 4),
            "select_rows": select_rows,
            "fit_rows": fit_rows,
            "val_accuracy": round(float((val[epoch].argmax(1) == y_val).mean()), 4),
            "test_accuracy": round(float((probs.argmax(1) == y_test).mean()), 4),
            "test_ece": round(float(ece(TASK, probs, y_test) or 0.0), 4),
            "test_ece_uncalibrated": round(float(ece(TASK, _softmax(test[epoch]), y_test) or 0.0), 4),
            "test_nll": round(float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-12, 1)).mean()), 4),
            "floor": score.ece_floor(probs),
        }

    e = _pick(val, y_val, every, labels)
    record("now", e, _temperature(val[e], y_val), len(every), len(every))
    keys = [str(v) for v in y_val]
    select, calib = split_indices(keys, seed)
    e = _pick(val, y_val, select, labels)
    record("slice", e, _temperature(val[e][calib], y_val[calib]), len(calib), len(select))
    half_a, half_b = split_indices(keys, seed + 1, share=0.5)
    e_a, e_b = _pick(val, y_val, half_a, labels), _pick(val, y_val, half_b, labels)
    t_b = _temperature(val[e_a][half_b], y_val[half_b])
    t_a = _temperature(val[e_b][half_a], y_val[half_a])
    e = _pick(val, y_val, every, labels)
    record("crossfit", e, math.sqrt(t_a * t_b), len(every), len(every))
    out["epochs"] = {"val_accuracy": [round(float((v.argmax(1) == y_val).mean()), 4) for v in val],
                     "test_accuracy": [round(float((t.argmax(1) == y_test).mean()), 4) for t in test]}  # fmt: skip
    return out


def redraw(npz: Path, sizes: tuple[int, ...] = (250, 500, 1000), draws: int = 200) -> dict[str, Any]:
    """The same run's validation and test rows pooled and redrawn `draws` times into a validation split of
    each size (stratified) and a test split of the rest: each rule's mean test accuracy and ECE over the
    draws, and the mean of (slice - now), so one lucky validation split does not decide between the rules."""
    from aiaas.training.calibration import ece, split_indices

    got = np.load(npz)
    logits = np.concatenate([got["val"], got["test"]], axis=1)
    y = np.concatenate([got["y_val"], got["y_test"]])
    labels = [str(i) for i in range(logits.shape[2])]
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for n in sizes:
        per: dict[str, list[tuple[float, float]]] = {"now": [], "slice": []}
        best_t: list[float] = []  # the lowest test ECE any single temperature reaches (the epoch "now" keeps)
        for d in range(draws):
            order = rng.permutation(len(y))
            val, test = np.sort(order[:n]), np.sort(order[n:])
            keys = [str(v) for v in y[val]]
            select, fit = split_indices(keys, d)
            every = np.arange(n)
            for rule, pick_rows, fit_rows in (("now", every, every), ("slice", select, fit)):
                e = _pick(logits[:, val], y[val], pick_rows, labels)
                t = _temperature(logits[e][val][fit_rows], y[val][fit_rows])
                probs = _softmax(logits[e][test] / t)
                per[rule].append((float((probs.argmax(1) == y[test]).mean()), float(ece(TASK, probs, y[test]) or 0.0)))
                if rule == "now" and n == sizes[0]:
                    best_t.append(min(float(ece(TASK, _softmax(logits[e][test] / g), y[test]) or 0.0) for g in T_GRID))
        now, sl = np.array(per["now"]), np.array(per["slice"])
        out[str(n)] = {
            "draws": draws, "test_rows": int(len(y) - n),
            "now": {"accuracy": round(float(now[:, 0].mean()), 4), "ece": round(float(now[:, 1].mean()), 4),
                    **({"ece_best_single_t_on_test": round(float(np.mean(best_t)), 4)} if best_t else {})},
            "slice": {"accuracy": round(float(sl[:, 0].mean()), 4), "ece": round(float(sl[:, 1].mean()), 4)},
            "slice_minus_now": {"accuracy_points": round(100 * float((sl[:, 0] - now[:, 0]).mean()), 2),
                                "ece": round(float((sl[:, 1] - now[:, 1]).mean()), 4),
                                "ece_lower_in": round(float((sl[:, 1] < now[:, 1]).mean()), 3)},
        }  # fmt: skip
    return out


def charcnn_rules(name: str, seed: int, work_root: Path, max_epochs: int = 12) -> dict[str, Any]:
    """char-cnn on the same split, trained twice (no deadline, at most `max_epochs`, so load does not change
    what is trained): epoch picked and calibration fit on all validation rows (the old rule), and picked on
    one half, fit on the held-out other half (the rule now). Test accuracy and ECE of each."""
    from aiaas.training import TrainConfig, calibration, charcnn_train

    _, data, test_texts, labels, truth, _ = _split(name, LIMITS[name])
    out: dict[str, Any] = {}
    real_switch, real_max = calibration.HOLD_OUT_SLICE, charcnn_train.MAX_EPOCHS
    charcnn_train.MAX_EPOCHS = max_epochs
    try:
        for rule in ("now", "slice"):
            calibration.HOLD_OUT_SLICE = rule == "slice"
            config = TrainConfig(base_model="char-cnn", seed=seed)
            result = charcnn_train.train_charcnn(config, data, work_root / f"cnn-{name}-{seed}-{rule}", _Log(name))
            got, _ = score.family_scores("char-cnn", result.model_dir, test_texts, truth, len(labels))
            hp = result.hyperparameters
            out[rule] = {"best_epoch": hp["best_epoch"], "temperature": hp.get("temperature"),
                         "fit_rows": hp.get("fit_rows"), "val_accuracy": round(result.metrics["accuracy"], 4),
                         **{k: got[k] for k in ("accuracy", "ece", "ece_floor", "ece_uncalibrated") if k in got}}  # fmt: skip
    finally:
        calibration.HOLD_OUT_SLICE, charcnn_train.MAX_EPOCHS = real_switch, real_max
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("collect", "analyse", "charcnn"))
    parser.add_argument("--sets", nargs="+", default=["mr-sentences", "tweets"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.stage == "collect":
        with tempfile.TemporaryDirectory(prefix="bench-calib-") as tmp:
            for seed in args.seeds:
                for name in args.sets:
                    log.info("%s seed %d: %s (load %s)", name, seed, collect(name, seed, args.epochs, Path(tmp)),
                             loadavg())  # fmt: skip
        return
    if args.stage == "charcnn":
        with tempfile.TemporaryDirectory(prefix="bench-calib-cnn-") as tmp:
            cnn = {f"{n}-s{s}": charcnn_rules(n, s, Path(tmp)) for s in args.seeds for n in args.sets}
        (RESULTS.parent / "quality_calibration_charcnn.json").write_text(json.dumps(cnn, indent=2) + "\n")
        print(json.dumps(cnn, indent=1))
        return
    report: dict[str, Any] = {"epochs": args.epochs, "runs": {}}
    for npz in sorted(LOGITS.glob(f"*-e{args.epochs}.npz")):
        report["runs"][npz.stem] = rules(npz)
        report["runs"][npz.stem]["redrawn"] = redraw(npz)
        for rule, r in report["runs"][npz.stem].items():
            print(npz.stem, rule, json.dumps(r))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
