"""Numbers for the console's server-drawn SVG charts (no inline styles, no script): a deployment's requests
per minute and its p50/p99 latency over the last hour, and a registered model's metric deltas."""

from __future__ import annotations

import math
import time
from typing import Any

CHART_W, CHART_H = 480, 110
LOWER_IS_BETTER = ("loss", "error", "ece", "mae", "mse", "rmse", "latency")
METRIC_ORDER = ("accuracy", "macro_f1", "f1", "micro_f1", "precision", "recall", "loss", "eval_loss")
MAX_METRIC_COLUMNS = 6


def _nice_top(v: float) -> float:
    """The y axis' top: 1, 2 or 5 times a power of ten, at least v."""
    if v <= 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(v))
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= v)


def _polylines(values: list[float | None], top: float, step: float) -> list[str]:
    """SVG `points` strings, one per run of minutes with a value (a gap where no request came)."""
    runs: list[list[str]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        y = CHART_H - CHART_H * min(v, top) / top
        runs[-1].append(f"{i * step + step / 2:.1f},{y:.1f}")
    return [" ".join(r) if len(r) > 1 else f"{r[0]} {r[0]}" for r in runs if r]


def traffic_charts(series: dict[str, Any]) -> dict[str, Any]:
    """series: DeploymentTraffic.series() -> bars for requests/minute, lines for p50 and p99."""
    n = len(series["minutes"]) or 1
    step = CHART_W / n
    counts = series["requests"]
    top = _nice_top(max(counts, default=0))
    bars = [{"x": round(i * step + 1, 1), "w": round(max(step - 2, 1), 1), "h": round(CHART_H * c / top, 1),
             "y": round(CHART_H - CHART_H * c / top, 1), "n": c,
             "at": time.strftime("%H:%M", time.gmtime(m * 60))}
            for i, (m, c) in enumerate(zip(series["minutes"], counts, strict=True))]
    p99 = series["p99_ms"]
    lat_top = _nice_top(max((v for v in p99 if v is not None), default=0))
    def y(v: float) -> float:
        return round(CHART_H - CHART_H * min(v, lat_top) / lat_top, 1)

    def alone(i: int) -> bool:  # a minute with requests between two without: a dot, not a line
        return all(j < 0 or j >= len(p99) or p99[j] is None for j in (i - 1, i + 1))

    dots = [{"x": round(i * step + step / 2, 1), "p50": y(v50), "p99": y(v99), "v50": v50, "v99": v99,
             "at": bars[i]["at"]}
            for i, (v50, v99) in enumerate(zip(series["p50_ms"], p99, strict=True))
            if v50 is not None and v99 is not None and alone(i)]
    return {"w": CHART_W, "h": CHART_H, "bars": bars, "top": top, "lat_top": lat_top, "dots": dots,
            "p50": _polylines(series["p50_ms"], lat_top, step), "p99": _polylines(p99, lat_top, step),
            "start": time.strftime("%H:%M", time.gmtime(series["minutes"][0] * 60)) if series["minutes"] else "",
            "total": series["total"]}


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def metric_columns(versions: list[dict[str, Any]]) -> list[str]:
    """The numeric metrics to compare side by side: the usual ones first, at most MAX_METRIC_COLUMNS."""
    seen: dict[str, int] = {}
    for v in versions:
        for k, x in (v.get("metrics") or {}).items():
            if _is_number(x):
                seen[k] = seen.get(k, 0) + 1
    ordered = [k for k in METRIC_ORDER if k in seen] + sorted(k for k in seen if k not in METRIC_ORDER)
    return ordered[:MAX_METRIC_COLUMNS]


def metric_cells(version: dict[str, Any], columns: list[str]) -> list[dict[str, Any]]:
    """Each column's value and its change from the previous version, with whether that is better."""
    metrics = version.get("metrics") or {}
    before = (version.get("previous") or {}).get("metrics") or {}
    cells = []
    for k in columns:
        v, p = metrics.get(k), before.get(k)
        delta = None
        if isinstance(v, int | float) and isinstance(p, int | float) and _is_number(v) and _is_number(p):
            delta = float(v) - float(p)
        better = None
        if delta:
            lower = any(word in k.lower() for word in LOWER_IS_BETTER)
            better = delta < 0 if lower else delta > 0
        cells.append({"name": k, "value": v, "delta": delta, "better": better})
    return cells
