"""The numbers behind the deployment page's charts and the versions table: per-minute request counts and
latency percentiles (services/inference/traffic.py), the SVG geometry, and metric deltas."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.services.inference.traffic import MINUTES, DeploymentTraffic
from aiaas.ui.charts import metric_cells, metric_columns, traffic_charts


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def test_percentiles_per_minute_are_within_the_bucket_error():
    clock = Clock()
    traffic = DeploymentTraffic(clock)
    rng = np.random.default_rng(0)
    measured = rng.lognormal(mean=2.0, sigma=0.8, size=5000)  # ms, a long tail
    for ms in measured:
        traffic.record("dep-1", float(ms))
    s = traffic.series("dep-1")
    assert s["requests"][-1] == 5000 and sum(s["requests"]) == 5000
    for q, key in ((50, "p50_ms"), (99, "p99_ms")):
        true = float(np.percentile(measured, q))
        assert abs(s[key][-1] - true) / true < 0.13, (q, s[key][-1], true)
        assert s["total"][key] == s[key][-1]


def test_minutes_roll_over_and_an_hour_old_minute_is_gone():
    clock = Clock()
    traffic = DeploymentTraffic(clock)
    traffic.record("d", 5.0)
    clock.t += 60
    traffic.record("d", 7.0)
    traffic.record("d", 9.0)
    s = traffic.series("d")
    assert s["requests"][-2:] == [1, 2] and s["total"]["requests"] == 3
    assert s["p50_ms"][-3] is None  # a minute without requests has no percentile
    clock.t += 60 * (MINUTES - 1)  # the first minute is now an hour old
    s = traffic.series("d")
    assert s["total"]["requests"] == 2
    clock.t += 60 * MINUTES
    traffic.record("d", 1.0)  # the row of an old minute is reused, not added to
    assert traffic.series("d")["total"]["requests"] == 1
    assert traffic.series("other")["total"] == {"requests": 0, "p50_ms": None, "p99_ms": None}
    traffic.forget("d")
    assert traffic.series("d")["total"]["requests"] == 0


def test_chart_geometry_scales_to_the_busiest_minute():
    clock = Clock()
    traffic = DeploymentTraffic(clock)
    for _ in range(40):
        traffic.record("d", 20.0)
    clock.t += 120
    for _ in range(10):
        traffic.record("d", 300.0)
    charts = traffic_charts(traffic.series("d"))
    assert charts["top"] == 50  # 40 requests in the busiest minute: the axis ends at the next 1-2-5 step
    heights = [b["h"] for b in charts["bars"] if b["n"]]
    assert heights == [pytest.approx(charts["h"] * 40 / 50), pytest.approx(charts["h"] * 10 / 50)]
    assert charts["lat_top"] >= 300 and len(charts["dots"]) == 2  # two isolated minutes: dots, not lines
    assert all(len(p.split()) == 2 for p in charts["p99"])


def test_metric_deltas_know_which_way_is_better():
    versions = [{"version": 2, "metrics": {"accuracy": 0.9, "eval_loss": 0.3, "note": "x"},
                 "previous": {"version": 1, "metrics": {"accuracy": 0.8, "eval_loss": 0.2}}},
                {"version": 1, "metrics": {"accuracy": 0.8, "eval_loss": 0.2}, "previous": None}]
    columns = metric_columns(versions)
    assert columns == ["accuracy", "eval_loss"]  # the string metric stays out of the numeric columns
    cells = {c["name"]: c for c in metric_cells(versions[0], columns)}
    assert cells["accuracy"]["delta"] == pytest.approx(0.1) and cells["accuracy"]["better"] is True
    assert cells["eval_loss"]["delta"] == pytest.approx(0.1) and cells["eval_loss"]["better"] is False
    assert all(c["delta"] is None for c in metric_cells(versions[1], columns))
