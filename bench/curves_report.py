"""bench.curves' outputs besides the JSON: one small PNG per curve and the "## Cost curves" README section."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.training.common import replace_section

TITLE = "Cost curves"


def density_points(curve: Any) -> list[dict]:
    """[{models, hit_rate}] from density.json's hit_rate_vs_models: a {models: rate} mapping, or a list of
    objects with a models-like and a hit-rate-like key. Anything else: no points (the raw value is kept)."""
    if isinstance(curve, dict):
        items = [(k, v) for k, v in curve.items() if isinstance(v, int | float)]
        try:
            return sorted(({"models": int(k), "hit_rate": float(v)} for k, v in items), key=lambda p: p["models"])
        except ValueError:
            return []
    if not isinstance(curve, list):
        return []
    out = []
    for item in curve:
        if not isinstance(item, dict):
            continue
        models = next((item[k] for k in item if "model" in k and isinstance(item[k], int | float)), None)
        rate = next((item[k] for k in item if "hit" in k and isinstance(item[k], int | float)), None)
        if models is not None and rate is not None:
            out.append({"models": models, "hit_rate": rate})
    return sorted(out, key=lambda p: p["models"])


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path.name


def _plot_training(plt: Any, train: dict, path: Path) -> str | None:
    if not train["series"]:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for family, s in train["series"].items():
        if not s["rows"]:
            continue
        line = ax.plot(s["rows"], s["wall_s"], "o-", label=f"{family} wall")[0]
        ax.plot(s["rows"], s["phases_s"]["train"], "x--", color=line.get_color(), label=f"{family} train phase")
        ax.plot(s["rows"], s["cpu_s"], "s:", color=line.get_color(), label=f"{family} CPU s")
    ax.set(xscale="log", yscale="log", xlabel="training rows", ylabel="seconds", title="Training time vs rows")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _plot_upload(plt: Any, upload: dict | None, path: Path) -> str | None:
    if not upload or not upload["runs"]:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
    for fmt in sorted({r["format"] for r in upload["runs"]}):
        runs = sorted((r for r in upload["runs"] if r["format"] == fmt), key=lambda r: r["mb"])
        left.plot([r["mb"] for r in runs], [r["upload_s"] for r in runs], "o-", label=fmt)
        right.plot([r["mb"] for r in runs], [r["upload_peak_rss_mb"] for r in runs], "o-", label=fmt)
    left.set(xscale="log", yscale="log", xlabel="file MB", ylabel="upload s", title="Upload time")
    right.set(xscale="log", xlabel="file MB", ylabel="API peak RSS MB", title="Peak memory")
    right.set_ylim(bottom=0)
    left.legend(fontsize=7)
    return _save(plt, fig, path)


def _plot_serving(plt: Any, serving: dict | None, path: Path) -> str | None:
    if not serving:
        return None
    pts = serving["points"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    xs = [p["clients"] for p in pts]
    ax.plot(xs, [p["p50_ms"] for p in pts], "o-", label="p50")
    ax.plot(xs, [p["p99_ms"] for p in pts], "s-", label="p99")
    ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency ms",
           title="Serving latency vs clients")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def _plot_density(plt: Any, density: dict | None, path: Path) -> str | None:
    if not density or len(density["points"]) < 2:
        return None
    pts = density["points"]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([p["models"] for p in pts], [p["hit_rate"] for p in pts], "o-")
    ax.set(xlabel="deployed models", ylabel="model-cache hit rate", title="Cache hit rate vs models")
    return _save(plt, fig, path)


def plots(result: dict, out_dir: Path) -> dict[str, str | None]:
    """{curve: PNG file name, or None where there is no curve}; no matplotlib: every value says so."""
    plt = _pyplot()
    if plt is None:
        return {k: "matplotlib not installed" for k in ("training", "upload", "serving", "density")}
    return {
        "training": _plot_training(plt, result["training"], out_dir / "curves_training.png"),
        "upload": _plot_upload(plt, result["upload"], out_dir / "curves_upload.png"),
        "serving": _plot_serving(plt, result["serving"], out_dir / "curves_serving.png"),
        "density": _plot_density(plt, result["density"], out_dir / "curves_density.png"),
    }


def _f(value: Any, spec: str = ".1f") -> str:
    return "–" if value is None else format(value, spec)


def _training_md(train: dict) -> list[str]:
    lines = ["| family | rows | wall s | prepare s | train s | export s | CPU s | wall ms/row | "
             "validation fits (transformer: evaluations) | load avg 1m | wall fit residual |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for family, s in train["series"].items():
        residuals = s.get("fit_wall", {}).get("relative_residuals", [None] * len(s["rows"]))
        for i, rows in enumerate(s["rows"]):
            ph = s["phases_s"]
            lines.append(f"| {family} | {rows:,} | {_f(s['wall_s'][i])} | {_f(ph['prepare'][i])} | "
                         f"{_f(ph['train'][i])} | {_f(ph['export'][i])} | {_f(s['cpu_s'][i])} | "
                         f"{_f(s['ms_per_row'][i], '.2f')} | {_f(s['validation_fits'][i], 'd')} | "
                         f"{'→'.join(format(x, '.1f') for x in s['loadavg_1m'][i])} | {_f(residuals[i], '.1%')} |")
        lines += [f"| {family} | {nf['rows']:,} | not finished in {nf['after_s']:.0f} s, stopped | | | | | | | | |"
                  for nf in s["not_finished"]]
    lines.append("")
    for family, s in train["series"].items():
        for kind in ("wall", "cpu"):
            fit = s.get(f"fit_{kind}")
            if fit:
                lines.append(f"- {family}, {kind} seconds = {fit['intercept_s']:.1f} + "
                             f"{fit['s_per_1k_rows']:.2f} × (rows / 1,000); residuals "
                             f"{', '.join(format(r, '.1%') for r in fit['relative_residuals'])}.")
        if "marginal_ms_per_row" in s:
            lines.append(f"- {family}: two sizes only, so no linearity verdict: {s['marginal_ms_per_row']:.2f} ms "
                         f"wall per extra row, {s['fixed_cost_s']:.1f} s fixed cost by the two points' line.")
    return lines


def _serving_md(serving: dict | None) -> list[str]:
    if not serving:
        return ["Serving curve not measured in this run."]
    lines = ["| clients | req/s | p50 ms | p99 ms | CPU ms/req | errors |", "|---:|---:|---:|---:|---:|---:|"]
    for p in serving["points"]:
        lines.append(f"| {p['clients']} | {_f(p['rps'])} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} | "
                     f"{_f(p['cpu_ms_per_request'], '.2f')} | {p['errors']} |")
    return lines


def _upload_md(upload: dict | None) -> list[str]:
    if not upload:
        return ["bench/results/upload.json is not there: no upload curve."]
    lines = [f"From {upload['source']}, run {upload['run_at']} (load average there: "
             f"{(upload.get('machine') or {}).get('load_average_start')}); not re-measured here.", "",
             "| format | MB | upload s | MB/s | API peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for r in upload["runs"]:
        lines.append(f"| {r['format']} | {_f(r['mb'], '.0f')} | {_f(r['upload_s'], '.2f')} | "
                     f"{_f(r['upload_mb_s'])} | {_f(r['upload_peak_rss_mb'])} |")
    return lines


def _density_md(density: dict | None) -> list[str]:
    if not density:
        return ["bench/results/density.json is not there yet (bench/density.py, another work package): "
                "no hit-rate curve in this run; a full run, or `python -m bench.curves --points DIR` on the "
                "points an earlier run kept in DIR (nothing re-measured), adds it once it is."]
    if not density["points"]:
        return [f"{density['source']}: present but not in a shape this reader knows; raw value kept in curves.json."]
    lines = [f"From {density['source']}.", "", "| deployed models | hit rate |", "|---:|---:|"]
    lines += [f"| {p['models']} | {_f(p['hit_rate'], '.3f')} |" for p in density["points"]]
    return lines


def _targets_md(targets: dict) -> list[str]:
    lines = ["| target | value | target | met |", "|---|---|---|---|"]
    for name, t in targets.items():
        lines.append(f"| {name} | {t['value']} | {t['target']} | {'yes' if t['met'] else '**no**'} |")
    return lines


def _png(plots: dict, key: str) -> list[str]:
    name = plots.get(key)
    return [f"![{key}](results/{name})"] if name and name.endswith(".png") else []


def markdown(result: dict) -> str:
    m = result["machine"]
    parts = [
        "`make bench-curves` (`python -m bench.curves`; `--quick` for a smoke run). Raw figures: "
        "`bench/results/curves.json`; the method is in bench/curves.py's docstring.",
        "",
        f"Written {result['date']} on {m['cores']} cores ({m['cpu_model']})"
        + (f", **{m['note']}**" if m.get("note") else "")
        + f": load average {m['loadavg_start']} when this run began, {m['loadavg_end']} when it ended. A point kept "
        "from an earlier run (`--points`) keeps its own load average: each training job's and each serving window's "
        "is in curves.json (and in the training table). Wall times are what a share of the cores achieved; CPU "
        "seconds are beside them.",
        "",
        "### Training wall time vs rows",
        "",
        *_training_md(result["training"]),
        "",
        *_png(result["plots"], "training"),
        "",
        "### Upload time and peak memory vs file size",
        "",
        *_upload_md(result["upload"]),
        "",
        *_png(result["plots"], "upload"),
        "",
        "### Serving latency vs concurrent clients",
        "",
        *_serving_md(result["serving"]),
        "",
        *_png(result["plots"], "serving"),
        "",
        "### Model-cache hit rate vs deployed models",
        "",
        *_density_md(result["density"]),
        "",
        *_png(result["plots"], "density"),
        "",
        "### Targets",
        "",
        *_targets_md(result["targets"]),
    ]
    return "\n".join(parts)


def write_readme(readme: Path, result: dict) -> None:
    replace_section(readme, TITLE, markdown(result))
