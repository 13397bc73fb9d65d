"""Zero-downtime promotion and a canary split against a real server process (`aiaas serve`).

32 concurrent clients call a deployment while it is switched from support/1 to support/2: no request
fails, every answer names one of the two versions, and every request sent after the PATCH answered is
served by the new one. Then a 90/10 split over 2,000 requests lands within 3 points of its weights,
and a rollback returns to the split's revision."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import pytest

from aiaas.core.settings import Settings
from aiaas.services import authn
from aiaas.store.db import Database
from tests.e2e.server import base_env, init, start_server
from tests.helpers.deployed import export_tiny_classifier, register

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
V1 = "ft:tiny-bert:default:support:ftjob-1"
V2 = "ft:tiny-bert:default:support:ftjob-2"
V3 = "ft:tiny-bert:default:support:ftjob-3"
CLIENTS = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rollout")
    data = tmp / "data"
    # A limit of requests/min the 32 clients stay under (the default 3,000 would answer 429s).
    env = base_env(data, AIAAS_MODEL_IDLE_UNLOAD_S="3600", AIAAS_RATE_LIMIT_REQUESTS_PER_MINUTE="1000000")
    key = init(env)
    settings = Settings(data_dir=data)
    db = Database(settings.sqlalchemy_url)
    with db.session() as s:
        org_id = authn.authenticate(s, key).org_id
    artifact = export_tiny_classifier(tmp)
    for model_id in (V1, V2):
        register(settings, db, org_id, artifact, model_id=model_id, task="single_label_classification",
                 labels=["negative", "positive"])
    other = export_tiny_classifier(tmp / "v3", labels=("bad", "good"))  # tells version 3's answers apart
    register(settings, db, org_id, other, model_id=V3, task="single_label_classification", labels=["bad", "good"])
    db.dispose()
    srv = start_server(env, tmp)
    srv.key = key  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def _hammer(server, stop: threading.Event, results: list, *, per_client: int | None = None) -> list[threading.Thread]:
    """CLIENTS threads posting predict; each result: (sent_at, status, model in body, model header)."""
    def run() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {server.key}"}) as c:
            n = 0
            while not stop.is_set() and (per_client is None or n < per_client):
                sent = time.monotonic()
                try:
                    r = c.post("/v1/deployments/sup/predict", json={"inputs": ["great service"]})
                    body = r.json() if r.status_code == 200 else {}
                    results.append((sent, r.status_code, body.get("model"), r.headers.get("x-aiaas-model")))
                except httpx.HTTPError as exc:
                    results.append((sent, repr(exc), None, None))
                n += 1

    threads = [threading.Thread(target=run) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    return threads


def test_promotion_without_errors_then_canary_split_and_rollback(server):
    h = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.base_url, timeout=60, headers=h) as c:
        assert c.post("/v1/deployments", json={"name": "sup", "model": "support/1"}).status_code == 201

        stop, results = threading.Event(), []
        threads = _hammer(server, stop, results)
        time.sleep(1.5)
        r = c.patch("/v1/deployments/sup", json={"model": "support/2"})
        switched_at = time.monotonic()
        assert r.status_code == 200, r.text
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()

        errors = [x for x in results if x[1] != 200]
        before = Counter(x[2] for x in results if x[0] < switched_at)
        after = Counter(x[2] for x in results if x[0] >= switched_at)
        print(f"promotion: {len(results)} requests, {len(errors)} errors, before switch {dict(before)}, "
              f"sent after the switch answered {dict(after)}")
        assert not errors, errors[:5]
        assert {x[2] for x in results} <= {V1, V2} and all(x[2] == x[3] for x in results)
        assert before[V1] > 0 and set(after) == {V2} and after[V2] > 0

        # Canary: 90/10 over 2,000 requests.
        r = c.patch("/v1/deployments/sup", json={"traffic": [{"model": "support/1", "weight": 90},
                                                             {"model": "support/2", "weight": 10}]})
        assert r.status_code == 200, r.text
        results = []
        threads = _hammer(server, threading.Event(), results, per_client=2000 // CLIENTS + 1)
        for t in threads:
            t.join()
        results = results[:2000]
        split = Counter(x[2] for x in results)
        share = {m: 100 * n / len(results) for m, n in split.items()}
        print(f"canary 90/10 over {len(results)} requests: {share}")
        assert [x for x in results if x[1] != 200] == []
        assert abs(share[V1] - 90) <= 3 and abs(share[V2] - 10) <= 3

        # Rollback returns to the promotion's revision: all traffic to support/2.
        r = c.post("/v1/deployments/sup/rollback")
        assert r.status_code == 200 and r.json()["model"] == V2 and r.json()["revision"] == 4
        assert {c.post("/v1/deployments/sup/predict", json={"inputs": ["x"]}).json()["model"]
                for _ in range(20)} == {V2}


def test_tritonclient_reads_and_runs_versions(server):
    tritonclient = pytest.importorskip("tritonclient.http")
    import numpy as np

    auth = {"Authorization": f"Bearer {server.key}"}
    with tritonclient.InferenceServerClient(url=server.base_url.removeprefix("http://")) as client:
        assert client.get_model_metadata("support", headers=auth)["versions"] == ["3", "2", "1"]
        assert client.get_model_metadata("support", "1", headers=auth)["parameters"]["model"] == V1
        inp = tritonclient.InferInput("text", [2], "BYTES")
        inp.set_data_from_numpy(np.array([b"great service", b"awful"], dtype=object))
        for version, labels in (("3", {"bad", "good"}), ("1", {"negative", "positive"})):
            result = client.infer("support", [inp], model_version=version, headers=auth)
            assert {x.decode() for x in result.as_numpy("label")} <= labels
            assert result.get_response()["model_version"] == version
            assert client.is_model_ready("support", version, headers=auth)
        assert not client.is_model_ready("support", "7", headers=auth)
        with pytest.raises(Exception) as err:  # noqa: B017 - tritonclient raises its own InferenceServerException
            client.infer("support", [inp], model_version="7", headers=auth)
        assert "support/7" in str(err.value) or "7" in str(err.value)
