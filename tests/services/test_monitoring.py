"""Monitoring per deployment: live traffic through the real inference service and model, compared with the
reference training stores (data report text profile, validation predictions in the model card) by PSI."""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlalchemy import select

from aiaas.services.inference import Caller
from aiaas.services.monitoring import RING, TrafficMonitor, build_reference, record_drift
from aiaas.data import profile as stats
from aiaas.serving.interface import ModelInfo, Outputs
from aiaas.serving.runtime import load_predictor
from aiaas.store import webhooks as wh_store
from aiaas.store.models import AuditLog, FineTuningJob, Model, WebhookDelivery
from aiaas.training import metrics
from tests.services.conftest import MODEL

WORDS = ["the", "a", "service", "great", "terrible", "slow", "fast", "delivery", "refund", "support", "order", "package", "arrived", "broken", "happy", "sad", "price", "quality", "thanks", "again", "never"]
RUSSIAN = ["привет", "мир", "как", "дела", "посылка", "пришла", "сломанной", "спасибо", "очень", "плохо", "хорошо"]
LABELS = ["negative", "positive"]


def english(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 30))) for _ in range(n)]


def russian(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(RUSSIAN) for _ in range(rng.randint(2, 30))) for _ in range(n)]


def store_training_reference(db, org_id: str, artifact, rng: random.Random, model_id: str = MODEL,
                             labels: list[str] = LABELS) -> None:
    """What a fine-tuning job stores: the data report's text profile (prepare.py) and the validation
    metrics with their top-score histogram (training/metrics.py), computed on the real model."""
    train, validation = english(rng, 400), english(rng, 200)
    probs = load_predictor(artifact / "onnx").predict(validation)
    scores = metrics.single_label(np.log(probs), np.array([rng.randint(0, 1) for _ in validation]), labels)
    report = {"n_train": 400, "text_length_chars": {}, "text_profile": stats.text_profile(train + validation)}
    with db.session() as s:
        model = s.scalar(select(Model).where(Model.id == model_id))
        model.card = {"labels": labels, "metrics": scores}
        s.add(FineTuningJob(id=model.job_id, org_id=org_id, model="tiny-bert", training_file="file-x",
                            status="succeeded", seed=0, created_at=1, data_report=report))


def endpoint(db, org_id: str) -> None:
    """An organisation endpoint for drift events (delivery itself is tested in tests/api/test_webhooks.py)."""
    with db.session() as s:
        wh_store.create_endpoint(s, org_id, endpoint_id="wh_test", url="http://127.0.0.1:9/hook",
                                 events=["deployment.drift"], description=None, sealed_secret=b"x")


def drift_events(db) -> tuple[int, int]:
    with db.session() as s:
        audits = len(list(s.scalars(select(AuditLog).where(AuditLog.action == "deployment.drift"))))
        deliveries = len(list(s.scalars(select(WebhookDelivery).where(
            WebhookDelivery.event_type == "deployment.drift"))))
    return audits, deliveries


@pytest.fixture
def monitored(world, db):
    monitor = TrafficMonitor(db, check_seconds=0, emit=lambda o, n, d: record_drift(db, o, n, d))
    world.service.monitor = monitor
    return monitor


def dep_id(db, org_id: str) -> str:
    from aiaas.store import deployments as dep_store

    with db.session() as s:
        return dep_store.get_deployment(s, org_id, "svc").id


async def test_in_distribution_traffic_has_no_flag_and_another_language_has(world, db, monitored,
                                                                             classifier_artifact):
    rng = random.Random(7)
    store_training_reference(db, world.org_id, classifier_artifact, rng)
    endpoint(db, world.org_id)
    caller = Caller(world.org_id, world.key_id, None, {})
    for _ in range(100):
        await world.service.classify(caller, "svc", english(rng, 3), deployment_only=True)
    await world.service.classify(caller, MODEL, english(rng, 3))  # by model id: not the deployment's traffic
    report = monitored.report(dep_id(db, world.org_id), "svc", MODEL)
    window = report["windows"]["last_1000_requests"]
    assert window["requests"] == 100 and window["texts"] == 300
    assert report["windows"]["last_hour"]["texts"] == report["windows"]["last_day"]["texts"] == 300
    assert all(report["reference"][f] is not None for f in ("text_length", "script", "predicted_label", "top_score"))
    assert all(v is not None and v < 0.2 for v in window["psi"].values()), window["psi"]
    assert report["drifted"] is False and report["drift"] == []
    assert window["unknown_token_rate"] is not None and window["unknown_token_rate"] < 0.2
    assert drift_events(db) == (0, 0)

    for _ in range(100):
        await world.service.classify(caller, "svc", russian(rng, 3), deployment_only=True)
    report = monitored.report(dep_id(db, world.org_id), "svc", MODEL)
    window = report["windows"]["last_1000_requests"]
    assert report["drifted"] is True and "script" in report["drift"]
    assert window["psi"]["script"] > 0.2 and window["distributions"]["script"] == {"Latin": 300, "Cyrillic": 300}
    assert window["unknown_token_rate"] > 0.3  # the tiny model's vocabulary has no Cyrillic
    assert drift_events(db) == (1, 1)  # an audit record and a deployment.drift webhook
    monitored.report(dep_id(db, world.org_id), "svc", MODEL)
    assert drift_events(db) == (1, 1)  # once per flag, not once per look


def outputs(rows: np.ndarray) -> Outputs:
    return Outputs(rows.astype(np.float32), 10 * len(rows), ModelInfo(task="single_label_classification",
                                                                       labels=tuple(LABELS)))


def rows_with(rng: np.random.Generator, n: int, share_negative: float, confident: bool) -> np.ndarray:
    neg = rng.random(n) < share_negative
    top = rng.uniform(0.9, 1.0, n) if confident else rng.uniform(0.55, 0.75, n)
    p_neg = np.where(neg, top, 1 - top)
    return np.stack([p_neg, 1 - p_neg], axis=1)


def test_another_label_mix_and_overconfidence_are_flagged(db):
    """The predicted-label and top-score features alone (texts stay in distribution)."""
    gen = np.random.default_rng(0)
    validation = rows_with(gen, 400, 0.5, confident=False)
    scores = metrics.single_label(np.log(validation), gen.integers(0, 2, 400), LABELS)
    reference = build_reference({"labels": LABELS, "metrics": scores},
                                {"text_profile": stats.text_profile(english(random.Random(1), 400))})
    monitor = TrafficMonitor(db, check_seconds=0)
    monitor._references[("dep_1", "m1")] = reference
    monitor._references[("dep_2", "m1")] = reference
    texts = english(random.Random(2), 1000)
    for i in range(0, 300, 3):
        monitor.observe("dep_1", "org", "a", "m1", tuple(LABELS), texts[i:i + 3],
                        outputs(rows_with(gen, 3, 0.5, confident=False)))
    report = monitor.report("dep_1", "a", "m1")
    assert report["drifted"] is False, report["windows"]["last_1000_requests"]["psi"]
    for i in range(0, 300, 3):
        monitor.observe("dep_2", "org", "b", "m1", tuple(LABELS), texts[i:i + 3],
                        outputs(rows_with(gen, 3, 0.9, confident=True)))
    report = monitor.report("dep_2", "b", "m1")
    assert set(report["drift"]) == {"predicted_label", "top_score"}
    assert report["windows"]["last_1000_requests"]["psi"]["text_length"] < 0.2


def test_windows_roll_by_time_and_by_request_count(db):
    now = [100_000.0]
    monitor = TrafficMonitor(db, check_seconds=0, clock=lambda: now[0])
    monitor._references[("d", "m")] = build_reference({}, {})
    gen = np.random.default_rng(1)
    for _ in range(10):
        monitor.observe("d", "org", "n", "m", tuple(LABELS), ["hello there"], outputs(rows_with(gen, 1, .5, False)))
    now[0] += 2 * 3600  # two hours later: out of the last hour, still in the last day
    for _ in range(RING + 5):
        monitor.observe("d", "org", "n", "m", tuple(LABELS), ["hi"], outputs(rows_with(gen, 1, .5, False)))
    windows = monitor.report("d", "n", "m")["windows"]
    assert windows["last_1000_requests"]["requests"] == RING and windows["last_1000_requests"]["texts"] == RING
    assert windows["last_1000_requests"]["distributions"]["text_length"] == {"0-15": RING}
    assert windows["last_hour"]["texts"] == RING + 5
    assert windows["last_day"]["texts"] == RING + 15
    now[0] += 86_400  # a day later nothing is left in the time windows
    windows = monitor.report("d", "n", "m")["windows"]
    assert windows["last_hour"]["texts"] == windows["last_day"]["texts"] == 0


def test_too_few_samples_never_flag(db):
    monitor = TrafficMonitor(db, check_seconds=0, min_samples=100)
    monitor._references[("d", "m")] = build_reference(
        {"labels": LABELS}, {"text_profile": stats.text_profile(english(random.Random(1), 100))})
    gen = np.random.default_rng(2)
    for _ in range(30):
        monitor.observe("d", "org", "n", "m", tuple(LABELS), ["привет мир"], outputs(rows_with(gen, 1, .5, False)))
    report = monitor.report("d", "n", "m")
    assert report["windows"]["last_1000_requests"]["psi"]["script"] > 0.2 and report["drifted"] is False


def test_reference_of_an_older_model_is_approximate_or_absent():
    """Models trained before text profiles and top-score histograms were stored: lengths from the report's
    percentiles, labels from training label counts, no script or top-score reference."""
    ref = build_reference({"labels": LABELS, "training_data": {"label_counts": {"train": {"negative": 5,
                                                                                          "positive": 15}}}},
                          {"text_length_chars": {"count": 20, "min": 3, "p50": 20, "p90": 60, "p99": 90,
                                                 "max": 100}})
    assert ref["script"] is None and ref["top_score"] is None
    assert ref["predicted_label"]["distribution"] == {"negative": 5, "positive": 15}
    assert "approximate" in ref["text_length"]["source"]
    assert abs(sum(ref["text_length"]["distribution"].values()) - 20) < 0.01


def test_script_buckets_and_psi():
    assert [stats.SCRIPTS[stats.script_of(t)] for t in
            ("hello", "Привет", "你好世界", "مرحبا", "Γειά", "こんにちは", "안녕하세요", "1234 !!", "café")] == \
        ["Latin", "Cyrillic", "Han", "Arabic", "Greek", "Kana", "Hangul", "None", "Latin"]
    assert stats.psi([50, 50], [50, 50]) == 0.0
    assert stats.psi([50, 50], [90, 10]) > 0.2 > stats.psi([50, 50], [55, 45])
