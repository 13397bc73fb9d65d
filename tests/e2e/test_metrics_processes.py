"""`aiaas serve --workers 2` with AIAAS_METRICS_PORT: both API processes answer predictions, and the
metrics port sums what each counted (requests, texts, latency histogram counts, model cache misses),
while the API port no longer serves /metrics. The console's request-rate chart, read from either
process, counts the requests of both."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pytest

from aiaas.core.settings import Settings
from aiaas.services import authn
from aiaas.store.db import Database
from tests.e2e.server import base_env, free_port, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register
from tests.services.test_monitoring import english, store_training_reference
from tests.ui.conftest import CSRF_RE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "ft:tiny-bert:default:procs:ftjob-procs"
LABELS = ["neg", "pos"]


def _per_process(data: Path) -> list[float]:
    """Requests to the deployment each API process has written to its metrics file."""
    counts = []
    for path in data.glob("run/metrics-*/*.json"):
        try:
            counters = json.loads(path.read_text())["counters"]
        except (OSError, ValueError):
            continue
        counts.append(sum(v for name, labels, v in counters
                          if name == "aiaas_deployment_requests" and labels == ["procs", MODEL]))
    return counts


def _value(text: str, line_start: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _console_charts(base_url: str, key: str, sent: int) -> list[str]:
    """The deployment page's chart fragment, signed in to the console, until it counts `sent` requests
    (each process reads the other's file, written every 0.2 s); then four more reads on new connections,
    so that both processes draw it."""
    with httpx.Client(base_url=base_url, timeout=30) as ui:
        csrf = CSRF_RE.search(ui.get("/ui/signin").text)
        assert csrf is not None
        assert ui.post("/ui/signin", data={"api_key": key, "csrf": csrf[1]}).status_code == 303
        cookies = ui.cookies
        deadline = time.monotonic() + 15
        while True:
            first = ui.get("/ui/deployments/procs/charts").text
            if f'id="rate-hour">{sent}<' in first or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    more = []
    for _ in range(4):
        with httpx.Client(base_url=base_url, timeout=30, cookies=cookies) as fresh:
            more.append(fresh.get("/ui/deployments/procs/charts").text)
    return [first, *more]


def test_two_api_processes_are_summed_on_the_metrics_port(tmp_path):
    data = tmp_path / "data"
    metrics_port = free_port()
    env = base_env(data, AIAAS_METRICS_PORT=str(metrics_port), AIAAS_METRICS_FLUSH_SECONDS="0.2")
    key = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, key).org_id
    artifact = export_tiny_classifier(tmp_path, labels=tuple(LABELS))
    register(settings, db, org_id, artifact, model_id=MODEL, task="single_label_classification", labels=LABELS)
    store_training_reference(db, org_id, artifact, random.Random(5), model_id=MODEL, labels=LABELS)
    db.dispose()
    server = start_server(env, tmp_path, workers=2)
    sent = texts = 0
    try:
        h = {"Authorization": f"Bearer {key}"}
        rng = random.Random(3)
        with httpx.Client(base_url=server.base_url, headers=h, timeout=30) as c:
            assert c.post("/v1/deployments", json={"name": "procs", "model": MODEL}).status_code == 201
            assert c.get("/metrics").status_code == 404  # served on the metrics port instead
        # A new connection per request, so the kernel hands them to both processes; go on until each
        # process has counted some (at most 300 requests).
        while sent < 300:
            batch = english(rng, rng.randint(1, 4))
            with httpx.Client(base_url=server.base_url, headers=h, timeout=30) as c:
                c.post("/v1/deployments/procs/predict", json={"inputs": batch}).raise_for_status()
            sent, texts = sent + 1, texts + len(batch)
            if sent % 10 == 0:
                time.sleep(0.5)  # each process writes its file every 0.2 s
                per_process = _per_process(data)
                if len(per_process) == 2 and min(per_process) > 0:
                    break
        per_process = _per_process(data)
        assert len(per_process) == 2 and min(per_process) > 0, per_process
        charts = _console_charts(server.base_url, key, sent)
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        labels = f'deployment="procs",model="{MODEL}"'
        deadline = time.monotonic() + 15
        while True:
            text = httpx.get(url, timeout=10).text
            total = _value(text, f"aiaas_deployment_requests_total{{{labels}}}")
            if (total == sent and _value(text, 'aiaas_jobs{status="succeeded"}') is not None) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.3)
    finally:
        server.stop()

    assert total == sent, (total, sent, per_process)
    assert all(f'id="rate-hour">{sent}<' in c for c in charts), (sent, per_process, charts[-1][:300])
    assert _value(text, f"aiaas_deployment_texts_total{{{labels}}}") == texts
    assert _value(text, f"aiaas_deployment_request_duration_seconds_count{{{labels}}}") == sent
    assert _value(text, f"aiaas_deployment_request_texts_count{{{labels}}}") == sent
    assert _value(text, "aiaas_api_processes") == 2
    assert _value(text, "aiaas_model_cache_misses_total") == 2  # each process loaded the model once
    assert _value(text, "aiaas_model_cache_resident_bytes") > 0
    assert _value(text, 'aiaas_inference_batch_size_count{kind="scores"}') >= 1
    route = 'method="POST",route="/v1/deployments/{name}/predict",status="200"'
    assert _value(text, f"aiaas_http_requests_total{{{route}}}") == sent
    assert _value(text, 'aiaas_jobs{status="succeeded"}') == 1  # from the database, not summed
    assert not list(data.glob("run/metrics-*")), "the shared metrics directory outlived the server"
