"""Cost curves (issue #18 item 5): how training, upload, serving and the model cache scale.

    python -m bench.curves                  # what `make bench-curves` runs (~45-60 min on 2 loaded cores)
    python -m bench.curves --quick          # 300/1k/3k tfidf-linear rows, 5 short serving windows (~7 min here);
                                            # writes under /tmp, not bench/results
    python -m bench.curves --points DIR     # keep each measured point (training jobs, serving sweep) in DIR
                                            # and reuse those already there

1. Training wall time vs. rows. Each point is a real fine-tuning job (bench.curves_training: upload and job
   through the API of `aiaas serve`, then the worker's run_job in a fresh process, phases prepare / train /
   export timed). tfidf-linear at 1k, 10k and 100k rows; the transformer (minilm-l6, 1 epoch) at 1k and 10k
   rows only: at ~10-20 samples/s on these 2 shared cores 100k rows is 1.5-3 hours, over this bench's budget.
   Linearity: ordinary least squares wall = a + b * rows over the points of one family; each point's residual
   relative to the line, |wall - line| / line; the target is every point within 15%. With two points the line
   passes through both, so the transformer series gets per-row figures and no linearity verdict.
2. Upload time and peak API RSS vs. file size: read from bench/results/upload.json (bench/upload.py, `make
   bench-upload`, owned and measured there), not re-measured.
3. Serving p50/p99 vs. concurrent clients 1 -> 256: bench.curves_serving against a real `aiaas serve`.
4. Model-cache hit rate vs. number of deployed models: read from bench/results/density.json
   (`hit_rate_vs_models`, bench/density.py) when it is there.

Writes bench/results/curves.json, bench/results/curves_*.png and the "## Cost curves" section of bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import curves_report
from bench.training.common import ROOT, loadavg, machine

RESULTS_DIR = ROOT / "bench" / "results"
README = ROOT / "bench" / "README.md"
LINEAR_TOLERANCE = 0.15
# (family, rows, epochs); epochs None: the platform's "auto".
TRAINING_PLAN = (
    ("tfidf-linear", 1_000, None),
    ("tfidf-linear", 10_000, None),
    ("tfidf-linear", 100_000, None),
    ("minilm-l6", 1_000, 1),
    ("minilm-l6", 10_000, 1),
)
QUICK_PLAN = (("tfidf-linear", 300, None), ("tfidf-linear", 1_000, None), ("tfidf-linear", 3_000, None))
UPLOAD_SOURCE = "bench/results/upload.json (bench/upload.py, `make bench-upload`)"
DENSITY_SOURCE = "bench/results/density.json, key hit_rate_vs_models (bench/density.py)"

log = logging.getLogger("bench.curves")


def _training_point(points: Path, family: str, rows: int, epochs: int | None, timeout_s: float) -> dict:
    """One job in a fresh process (bench.curves_training), or the point kept in `points` by an earlier run.
    A job still running after `timeout_s` is stopped and recorded as such, not as a point of the curve."""
    out = points / f"{family}-{rows}.json"
    if out.is_file():
        log.info("training %s %d rows: reusing %s", family, rows, out)
        return json.loads(out.read_text())
    cmd = [sys.executable, "-m", "bench.curves_training", str(out), "--rows", str(rows), "--model", family]
    cmd += ["--epochs", str(epochs)] if epochs is not None else []
    log.info("training %s %d rows: %s", family, rows, " ".join(cmd[1:]))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        log.warning("training %s %d rows: not finished in %.0f s, stopped", family, rows, timeout_s)
        return {"model": family, "rows": rows, "epochs": epochs, "not_finished_after_s": timeout_s}
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    point = json.loads(out.read_text())
    log.info("  wall %.1f s, phases %s", point["wall_s"], point["phases_s"])
    return point


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least squares y = a + b x, and each point's |y - line| / line."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    residuals = [abs(y - (a + b * x)) / (a + b * x) for x, y in zip(xs, ys, strict=True)]
    return {"intercept_s": round(a, 3), "s_per_1k_rows": round(1000 * b, 4),
            "relative_residuals": [round(r, 4) for r in residuals], "max_relative_residual": round(max(residuals), 4)}


def _series(points: list[dict], family: str) -> dict:
    mine = sorted((p for p in points if p["model"] == family and "wall_s" in p), key=lambda p: p["rows"])
    rows = [p["rows"] for p in mine]
    out: dict = {"rows": rows, "wall_s": [p["wall_s"] for p in mine], "cpu_s": [p["cpu_s"] for p in mine],
                 "phases_s": {ph: [p["phases_s"].get(ph) for p in mine] for ph in ("prepare", "train", "export")},
                 "ms_per_row": [round(1000 * p["wall_s"] / p["rows"], 3) for p in mine],
                 "train_ms_per_row": [round(1000 * p["phases_s"]["train"] / p["rows"], 3) for p in mine],
                 "validation_fits": [(p.get("search") or {}).get("validation_fits") for p in mine],
                 "loadavg_1m": [[p["loadavg"][0][0], p["loadavg"][1][0]] for p in mine],
                 "not_finished": [{"rows": p["rows"], "after_s": p["not_finished_after_s"]}
                                  for p in points if p["model"] == family and "not_finished_after_s" in p]}
    if len(mine) >= 3:
        out["fit_wall"] = linear_fit(rows, out["wall_s"])
        out["fit_cpu"] = linear_fit(rows, out["cpu_s"])
        out["fit_train_phase"] = linear_fit(rows, out["phases_s"]["train"])
    elif len(mine) == 2:
        (r0, r1), (w0, w1) = rows, out["wall_s"]
        out["marginal_ms_per_row"] = round(1000 * (w1 - w0) / (r1 - r0), 3)
        out["fixed_cost_s"] = round(w0 - (w1 - w0) / (r1 - r0) * r0, 2)
    return out


def training(points_dir: Path, plan: tuple, timeout_s: float) -> dict:
    points = [_training_point(points_dir, family, rows, epochs, timeout_s) for family, rows, epochs in plan]
    families = list(dict.fromkeys(family for family, _, _ in plan))
    return {"points": points, "series": {family: _series(points, family) for family in families}}


def upload_curve() -> dict | None:
    path = RESULTS_DIR / "upload.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    runs = [{k: r.get(k) for k in ("format", "mb", "upload_s", "upload_mb_s", "upload_peak_rss_mb")}
            for r in raw.get("runs", [])]
    return {"source": UPLOAD_SOURCE, "run_at": raw.get("run_at"), "machine": raw.get("machine"), "runs": runs,
            "targets": raw.get("targets", {})}


def density_curve() -> dict | None:
    """density.json's hit_rate_vs_models as [{models, hit_rate}], whichever of the plain shapes it has."""
    path = RESULTS_DIR / "density.json"
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    curve = raw.get("hit_rate_vs_models")
    return {"source": DENSITY_SOURCE, "machine": raw.get("machine"), "raw": curve,
            "points": curves_report.density_points(curve)}


def _coverage(values: list[float], low: float, high: float) -> bool:
    return bool(values) and min(values) <= low and max(values) >= high


def targets(train: dict, serving: dict | None, upload: dict | None, density: dict | None) -> dict:
    out: dict = {}
    for family, series in train["series"].items():
        fit = series.get("fit_wall")
        if fit is not None:
            value = fit["max_relative_residual"]
            out[f"training_{family}_wall_linear_max_residual"] = {
                "value": value, "target": f"<= {LINEAR_TOLERANCE}", "met": value <= LINEAR_TOLERANCE}
            # The same fit on the job's CPU seconds: what the wall time would be without the other tenants.
            value = series["fit_cpu"]["max_relative_residual"]
            out[f"training_{family}_cpu_linear_max_residual"] = {
                "value": value, "target": f"<= {LINEAR_TOLERANCE}", "met": value <= LINEAR_TOLERANCE}
    if serving is not None:
        clients = [p["clients"] for p in serving["points"]]
        errors = sum(p["errors"] for p in serving["points"])
        out["serving_clients_covered"] = {"value": [min(clients), max(clients)], "target": "1 -> 256",
                                          "met": _coverage(clients, 1, 256)}
        out["serving_errors_1_to_256_clients"] = {"value": errors, "target": "== 0", "met": errors == 0}
    sizes = [r["mb"] for r in upload["runs"]] if upload else []
    out["upload_sizes_covered_mb"] = {"value": [min(sizes), max(sizes)] if sizes else None,
                                      "target": "10 -> 1024 (from upload.json)", "met": _coverage(sizes, 10, 1024)}
    n_points = len(density["points"]) if density else 0
    out["density_hit_rate_curve_points"] = {"value": n_points, "target": ">= 2 (from density.json)",
                                            "met": n_points >= 2}
    return out


def _serving(points_dir: Path, *, quick: bool) -> dict:
    """The serving sweep, or the one kept in `points_dir` by an earlier run."""
    kept = points_dir / "serving.json"
    if kept.is_file():
        log.info("serving: reusing %s", kept)
        return json.loads(kept.read_text())
    from bench import curves_serving

    serving = curves_serving.measure(quick=quick)
    kept.write_text(json.dumps(serving, indent=1))
    return serving


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows; writes under /tmp")
    parser.add_argument("--points", type=Path, default=None, help="keep/reuse training points here")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--skip-serving", action="store_true")
    parser.add_argument("--refresh", action="store_true",
                        help="measure nothing: keep curves.json's training and serving curves, re-read "
                             "upload.json and density.json, redraw and rewrite the README section")
    parser.add_argument("--note", default="",
                        help="what was unusual about this run's machine (e.g. other work sharing the cores)")
    parser.add_argument("--point-timeout", type=float, default=4 * 3600,
                        help="seconds one training job may take before it is stopped and recorded as unfinished")
    return parser.parse_args()


def refresh() -> None:
    """curves.json again from what it measured and the other benches' current files."""
    result = json.loads((RESULTS_DIR / "curves.json").read_text())
    upload, density = upload_curve(), density_curve()
    result |= {"upload": upload, "density": density, "refreshed": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "targets": targets(result["training"], result["serving"], upload, density)}
    result["plots"] = curves_report.plots(result, RESULTS_DIR)
    (RESULTS_DIR / "curves.json").write_text(json.dumps(result, indent=1) + "\n")
    curves_report.write_readme(README, result)


def main() -> None:
    args = _parse()
    if args.refresh:
        refresh()
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    started = time.perf_counter()
    facts = machine()
    out_dir = Path(tempfile.mkdtemp(prefix="bench-curves-quick-")) if args.quick else RESULTS_DIR
    points_dir = args.points or Path(tempfile.mkdtemp(prefix="bench-curves-points-"))
    points_dir.mkdir(parents=True, exist_ok=True)
    try:
        train = {"points": [], "series": {}} if args.skip_training else training(
            points_dir, QUICK_PLAN if args.quick else TRAINING_PLAN, args.point_timeout)
        serving = None if args.skip_serving else _serving(points_dir, quick=args.quick)
    finally:
        if args.points is None:  # a directory of our own: the points are in curves.json
            shutil.rmtree(points_dir, ignore_errors=True)
    upload, density = upload_curve(), density_curve()
    result = {
        "benchmark": "curves",
        "issue": "#18 item 5",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": facts | {"loadavg_end": loadavg(),
                            "note": args.note},
        "linearity": "OLS wall = a + b*rows per family; each point's |wall - line| / line <= 0.15",
        "training": train,
        "serving": serving,
        "upload": upload,
        "density": density,
        "targets": targets(train, serving, upload, density),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    result["plots"] = curves_report.plots(result, out_dir)
    (out_dir / "curves.json").write_text(json.dumps(result, indent=1) + "\n")
    if not args.quick:
        curves_report.write_readme(README, result)
    log.info("wrote %s; targets %s", out_dir / "curves.json", json.dumps(result["targets"]))
    log.info("load average now %s (cores %s)", os.getloadavg(), facts["cores"])


if __name__ == "__main__":
    main()
