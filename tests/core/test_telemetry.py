"""Metrics recorded in memory, shared through files between processes, rendered for Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from aiaas.services.metrics import WorkQueueCollector
from aiaas.core.telemetry import Recorder, SharedDirectory, Snapshot, TelemetryCollector
from aiaas.store import migrate
from aiaas.store.db import Database
from aiaas.store.models import Batch, FineTuningJob, Organization


def _render(recorder: Recorder | None, shared: SharedDirectory | None) -> str:
    registry = CollectorRegistry()
    registry.register(TelemetryCollector(recorder, shared))
    return generate_latest(registry).decode()


def b(histogram: str, le: str, n: float) -> str:
    """A cumulative bucket line of a per-deployment histogram (labels come out sorted)."""
    return f'aiaas_deployment_request_{histogram}_bucket{{deployment="support",le="{le}",model="ft:m:1"}} {n}'


def test_one_process_counts_histograms_and_sources():
    r = Recorder()
    r.sources.append(lambda: [("aiaas_model_cache_hits", (), 7.0), ("aiaas_inference_queue_depth", (), 3.0)])
    for seconds in (0.004, 0.02, 3.0):
        r.inference("support", "ft:m:1", seconds, texts=5, tokens=40, unknown=2)
    r.http("POST", "/v1/deployments/{name}/predict", 200, 0.01)
    text = _render(r, None)
    labels = 'deployment="support",model="ft:m:1"'
    assert f"aiaas_deployment_requests_total{{{labels}}} 3.0" in text
    assert f"aiaas_deployment_texts_total{{{labels}}} 15.0" in text
    assert f"aiaas_deployment_tokens_total{{{labels}}} 120.0" in text
    assert f"aiaas_deployment_unknown_tokens_total{{{labels}}} 6.0" in text
    # cumulative buckets: 0.004 <= 0.005, 0.02 <= 0.025, 3.0 <= 5.0
    assert b("duration_seconds", "0.005", 1.0) in text
    assert b("duration_seconds", "0.025", 2.0) in text
    assert b("duration_seconds", "2.5", 2.0) in text
    assert b("duration_seconds", "+Inf", 3.0) in text
    assert f"aiaas_deployment_request_duration_seconds_count{{{labels}}} 3.0" in text
    assert b("texts", "4.0", 0.0) in text
    assert b("texts", "8.0", 3.0) in text
    assert 'aiaas_http_requests_total{method="POST",route="/v1/deployments/{name}/predict",status="200"} 1.0' in text
    assert "aiaas_model_cache_hits_total 7.0" in text and "aiaas_inference_queue_depth 3.0" in text
    assert "aiaas_api_processes 1.0" in text


def test_processes_share_a_directory_counters_sum_and_dead_processes_keep_only_counters(tmp_path):
    # Another process, now exited: its counters and histograms stay in the total, its gauges do not.
    child = (
        "import sys; from pathlib import Path; from aiaas.core.telemetry import Recorder, SharedDirectory;"
        "r = Recorder(); r.sources.append(lambda: [('aiaas_model_cache_resident_bytes', (), 1000.0)]);"
        "[r.inference('support', 'ft:m:1', 0.01, 2, 10, None) for _ in range(5)];"
        "SharedDirectory(Path(sys.argv[1])).write(r.snapshot())"
    )
    subprocess.run([sys.executable, "-c", child, str(tmp_path)], check=True, timeout=60)
    live = Recorder()
    live.sources.append(lambda: [("aiaas_model_cache_resident_bytes", (), 500.0)])
    for _ in range(3):
        live.inference("support", "ft:m:1", 0.01, 1, 4, None)
    text = _render(live, SharedDirectory(tmp_path))
    labels = 'deployment="support",model="ft:m:1"'
    assert f"aiaas_deployment_requests_total{{{labels}}} 8.0" in text
    assert f"aiaas_deployment_texts_total{{{labels}}} 13.0" in text
    assert f"aiaas_deployment_request_duration_seconds_count{{{labels}}} 8.0" in text
    assert "aiaas_model_cache_resident_bytes 500.0" in text  # the exited process's 1000 bytes are gone
    assert "aiaas_api_processes 1.0" in text
    # A reader with no recorder of its own (the separate metrics port) sees the same sums.
    assert f"aiaas_deployment_requests_total{{{labels}}} 8.0" in _render(None, SharedDirectory(tmp_path))


def test_drift_gauges_take_the_max_and_unknown_files_are_skipped(tmp_path):
    a, b = Snapshot(), Snapshot()
    key = ("aiaas_deployment_drift", ("svc", "m", "script"))
    a.gauges[key], b.gauges[key] = 0.0, 1.0
    total = Snapshot()
    total.add(a, gauges=True)
    total.add(b, gauges=True)
    assert total.gauges[key] == 1.0
    (tmp_path / "123-abc.json").write_text("{not json")
    data = {"counters": [["aiaas_not_a_metric", [], 5.0], ["aiaas_model_cache_misses", [], 2.0]]}
    (tmp_path / "1-x.json").write_text(json.dumps(data))
    merged = SharedDirectory(tmp_path).merged()
    assert merged.counters == {("aiaas_model_cache_misses", ()): 2.0}


def test_recording_is_thread_safe():
    r = Recorder()

    def hammer():
        for _ in range(5000):
            r.inference("d", "m", 0.001, 1, 1, None)
            r.observe("aiaas_inference_batch_size", ("scores",), 4)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snap = r.snapshot()
    assert snap.counters[("aiaas_deployment_requests", ("d", "m"))] == 20000
    assert sum(snap.histograms[("aiaas_inference_batch_size", ("scores",))][:-1]) == 20000


def _db(tmp_path) -> Database:
    db = Database(f"sqlite:///{tmp_path / 'w.db'}")
    migrate.upgrade(db.engine)
    return db


def test_work_queue_counts_jobs_batches_and_heartbeats(tmp_path):
    db = _db(tmp_path)
    now = time.time()
    with db.session() as s:
        s.add(Organization(id="org-1", name="acme", created_at=1))
        s.flush()
        for i, status in enumerate(("queued", "running", "succeeded")):
            s.add(FineTuningJob(id=f"ftjob-{i}", org_id="org-1", model="m", training_file="file-1", status=status, seed=0,
                                created_at=1, lease_owner="w-job" if status == "running" else None,
                                lease_expires_at=now + 25 if status == "running" else None))
        s.add(Batch(id="batch-1", org_id="org-1", endpoint="/v1/classifications", input_file_id="file-1",
                    completion_window="24h", status="in_progress", created_at=1, expires_at=int(now) + 3600,
                    lease_owner="w-batch", lease_expires_at=now - 5))
    work = WorkQueueCollector(db, lease_seconds=30.0, refresh_s=0.0)
    registry = CollectorRegistry()
    registry.register(work)
    generate_latest(registry)  # starts the count in the background
    deadline = time.monotonic() + 10
    while work._snapshot is None and time.monotonic() < deadline:
        time.sleep(0.05)
    text = generate_latest(registry).decode()
    work.close()
    assert work._thread is None
    db.dispose()
    assert 'aiaas_jobs{status="queued"} 1.0' in text and 'aiaas_jobs{status="running"} 1.0' in text
    assert 'aiaas_batches{status="in_progress"} 1.0' in text
    assert 'aiaas_job_leases{state="live"} 1.0' in text and 'aiaas_batch_leases{state="expired"} 1.0' in text
    beats = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line.startswith("aiaas_worker_heartbeat_timestamp_seconds{")}
    assert abs(beats['aiaas_worker_heartbeat_timestamp_seconds{kind="job",worker="w-job"}'] - (now - 5)) < 1
    assert abs(beats['aiaas_worker_heartbeat_timestamp_seconds{kind="batch",worker="w-batch"}'] - (now - 35)) < 1


def test_closing_waits_for_the_count_in_flight_and_starts_no_other(tmp_path):
    """The refresh thread holds a database connection: close() (at app shutdown) waits for it, so the
    engine is disposed with no connection left open (psycopg's 'deleted while still open' warning)."""
    db = _db(tmp_path)
    work = WorkQueueCollector(db, refresh_s=0.0)
    entered, release = threading.Event(), threading.Event()
    real = work.refresh

    def slow_refresh():
        entered.set()
        release.wait(5)
        real()

    work.refresh = slow_refresh
    list(work.collect())
    assert entered.wait(5)
    closer = threading.Thread(target=work.close)
    closer.start()
    time.sleep(0.2)
    assert closer.is_alive()  # still waiting for the count in flight
    release.set()
    closer.join(5)
    assert not closer.is_alive() and work._thread is None
    list(work.collect())  # closed: no new thread
    assert work._thread is None
    db.dispose()


def test_the_api_registry_counts_its_own_published_file_once(tmp_path):
    """/metrics on the API port with a shared directory: this process's file (already published) and its live
    recorder are one source, not two (a second SharedDirectory object over the same folder counted both)."""
    from aiaas.services.metrics import metrics_registry

    db = _db(tmp_path)
    live = Recorder()
    for _ in range(3):
        live.inference("support", "ft:m:1", 0.01, 1, 4, None)
    shared = SharedDirectory(tmp_path / "metrics")
    shared.directory.mkdir()
    shared.write(live.snapshot())  # what the Publisher does every flush
    work = WorkQueueCollector(db, lease_seconds=30.0, refresh_s=3600.0)
    try:
        text = generate_latest(metrics_registry(live, shared, work)).decode()
    finally:
        work.close()
    assert 'aiaas_deployment_requests_total{deployment="support",model="ft:m:1"} 3.0' in text
    assert "aiaas_api_processes 1.0" in text
