"""The numbers behind the deployment page's charts and the versions table: per-minute request counts and
latency percentiles (services/inference/traffic.py, read from the telemetry recorder), the same numbers
merged across two processes' recorders through a shared metrics directory, the SVG geometry, and metric
deltas."""

from __future__ import annotations

import numpy as np
import pytest

from aiaas.core.telemetry import Recorder, SharedDirectory, families
from aiaas.services.inference.traffic import MINUTES, DeploymentTraffic
from aiaas.ui.charts import metric_cells, metric_columns, traffic_charts


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def answered(recorder: Recorder, deployment_id: str, ms: float) -> None:
    """What InferenceService does for one request a deployment answered."""
    recorder.inference("name-of-" + deployment_id, "ft:m", ms / 1000, 1, 3, 0, deployment_id)


def traffic_with_clock() -> tuple[Recorder, Clock, DeploymentTraffic]:
    recorder, clock = Recorder(), Clock()
    return recorder, clock, DeploymentTraffic(recorder, clock)


def test_percentiles_per_minute_are_within_the_bucket_error():
    recorder, clock, traffic = traffic_with_clock()
    rng = np.random.default_rng(0)
    measured = rng.lognormal(mean=2.0, sigma=0.8, size=5000)  # ms, a long tail
    for ms in measured:
        answered(recorder, "dep-1", float(ms))
    s = traffic.series("dep-1")
    assert s["requests"][-1] == 5000 and sum(s["requests"]) == 5000
    for q, key in ((50, "p50_ms"), (99, "p99_ms")):
        true = float(np.percentile(measured, q))
        assert abs(s[key][-1] - true) / true < 0.13, (q, s[key][-1], true)
        assert s["total"][key] == s[key][-1]


def test_minutes_roll_over_and_an_hour_old_minute_is_gone():
    recorder, clock, traffic = traffic_with_clock()
    answered(recorder, "d", 5.0)
    clock.t += 60
    traffic.tick()  # the minute thread, at the boundary
    answered(recorder, "d", 7.0)
    answered(recorder, "d", 9.0)
    s = traffic.series("d")
    assert s["requests"][-2:] == [1, 2] and s["total"]["requests"] == 3
    assert s["p50_ms"][-3] is None  # a minute without requests has no percentile
    clock.t += 60 * (MINUTES - 1)  # the first minute is now an hour old
    s = traffic.series("d")
    assert s["total"]["requests"] == 2
    clock.t += 60 * MINUTES
    answered(recorder, "d", 1.0)  # only the new request: the old minutes are out of the ring
    assert traffic.series("d")["total"]["requests"] == 1
    assert traffic.series("other")["total"] == {"requests": 0, "p50_ms": None, "p99_ms": None}
    traffic.forget("d")
    assert traffic.series("d")["total"]["requests"] == 0


def test_a_missed_boundary_puts_the_minutes_since_under_the_last_of_them():
    recorder, clock, traffic = traffic_with_clock()
    answered(recorder, "d", 5.0)
    clock.t += 180  # three boundaries, no tick: the next read ticks
    assert traffic.series("d")["requests"][-4:] == [0, 0, 1, 0]
    answered(recorder, "d", 6.0)
    s = traffic.series("d")
    assert s["requests"][-4:] == [0, 0, 1, 1] and s["total"]["requests"] == 2


def test_two_processes_charts_are_merged_through_the_shared_directory(tmp_path):
    clock = Clock()
    first, second = Recorder(), Recorder()
    dir_a, dir_b = SharedDirectory(tmp_path), SharedDirectory(tmp_path)
    traffic_a = DeploymentTraffic(first, clock)
    traffic_a.share(dir_a)
    for _ in range(5):
        answered(first, "d", 4.0)
    for _ in range(3):
        answered(second, "d", 40.0)
    dir_b.write(second.snapshot())  # the other process's Publisher
    s = traffic_a.series("d")
    assert s["requests"][-1] == 8 and s["p50_ms"][-1] < 5 and s["p99_ms"][-1] > 35
    dir_a.write(first.snapshot())  # this process's own file is not counted besides its live numbers
    assert traffic_a.series("d")["requests"][-1] == 8
    clock.t += 60
    traffic_a.tick()
    answered(second, "d", 40.0)
    dir_b.write(second.snapshot())
    assert traffic_a.series("d")["requests"][-2:] == [8, 1]


def test_the_fine_histogram_stays_off_the_metrics_page():
    recorder = Recorder()
    answered(recorder, "d", 4.0)
    names = {f.name for f in families(recorder.snapshot())}
    assert "aiaas_deployment_request_duration_seconds" in names
    assert not any("fine" in n for n in names)


def test_chart_geometry_scales_to_the_busiest_minute():
    recorder, clock, traffic = traffic_with_clock()
    for _ in range(40):
        answered(recorder, "d", 20.0)
    clock.t += 60
    traffic.tick()
    clock.t += 60
    traffic.tick()
    for _ in range(10):
        answered(recorder, "d", 300.0)
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
