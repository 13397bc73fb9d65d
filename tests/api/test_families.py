"""Model families through the jobs API: create over HTTP, train in a real worker, deploy, predict.

Every task (single-label, multi-label, regression) x every family (the tiny BERT as a
transformer, tfidf-linear, auto) is trained, deployed and called through the three
inference wire shapes; auto must pick tfidf-linear on text the tiny BERT reads as [UNK];
a tfidf-linear model has no embeddings; bad family names and options are clear 400s.
"""

from __future__ import annotations

import asyncio
import csv
import io
import random

import numpy as np
import pytest

from aiaas.jobs.worker import Worker
from tests.helpers.datasets import NEGATIVE, POSITIVE, toy_csv
from tests.helpers.tiny_bert import CORPUS, build_tiny_bert

TINY = "tiny-bert"
FAST = {"n_epochs": 2}  # the transformer half; tfidf-linear takes no hyperparameters
TOPICS = {
    "billing": ["my card was charged twice", "refund my money"],
    "delivery": ["where is my package", "the parcel is late"],
    "app": ["the app crashes", "login fails with an error"],
}


def _csv(rows: list[tuple[str, str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("text", "label"))
    writer.writerows(rows)
    return buf.getvalue().encode()


def multi_label_csv(n: int = 36, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topics = sorted(rng.sample(sorted(TOPICS), rng.choice((1, 2))))
        text = " and ".join(rng.choice(TOPICS[t]) for t in topics)
        rows.append((f"{text} {rng.choice(CORPUS)} {i}", "|".join(topics)))
    return _csv(rows)


def regression_csv(n: int = 30, seed: int = 0) -> bytes:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        text = rng.choice(POSITIVE if good else NEGATIVE)
        rows.append((f"{text} {i}", f"{(4.0 if good else 1.0) + rng.uniform(-0.3, 0.3):.2f}"))
    return _csv(rows)


def unk_marker_csv(n: int = 80, seed: int = 0) -> bytes:
    """The label is which of two Chinese phrases a text holds, between English words drawn alike for
    both classes. The tiny BERT's vocabulary has no Chinese, so both phrases read as four [UNK]s:
    only character n-grams can tell the classes apart."""
    rng = random.Random(seed)
    words = sorted({w for line in CORPUS for w in line.split()})
    rows = []
    for i in range(n):
        label = ("positive", "negative")[i % 2]
        marker = "好评如潮" if label == "positive" else "差强人意"
        a, b = rng.sample(words, 2)
        rows.append((f"{a} {marker} {b}", label))
    return _csv(rows)


DATA = {
    "single_label_classification": lambda: toy_csv(15),
    "multi_label_classification": multi_label_csv,
    "regression": regression_csv,
}
PROBES = ["great service thank you", "my card was charged twice and the parcel is late"]


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory):
    return build_tiny_bert(tmp_path_factory.mktemp("tiny") / TINY)


@pytest.fixture
def tiny_base(settings, tiny_source):
    """The module's tiny BERT, installed as base model 'tiny-bert' (a link: built once per module)."""
    settings.base_models_dir.mkdir(parents=True, exist_ok=True)
    link = settings.base_models_dir / TINY
    link.symlink_to(tiny_source, target_is_directory=True)
    return link


async def upload(client, org, content: bytes) -> str:
    r = await client.post("/v1/files", headers=org.headers, files={"file": ("train.csv", content)},
                          data={"purpose": "fine-tune"})
    assert r.status_code == 200, r.text
    return r.json()["id"]


async def create(client, org, content: bytes, **fields) -> dict:
    body = {"training_file": await upload(client, org, content), "seed": 1, **fields}
    r = await client.post("/v1/fine_tuning/jobs", headers=org.headers, json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def run_worker(settings) -> str | None:
    def once() -> str | None:
        with Worker(settings) as worker:
            return worker.run_once()

    return await asyncio.to_thread(once)


async def train(client, org, settings, content: bytes, **fields) -> dict:
    job = await create(client, org, content, **fields)
    assert await run_worker(settings) == "succeeded"
    r = await client.get(f"/v1/fine_tuning/jobs/{job['id']}", headers=org.headers)
    done = r.json()
    assert done["status"] == "succeeded", done["error"]
    return done


async def events(client, org, job_id: str) -> list[dict]:
    r = await client.get(f"/v1/fine_tuning/jobs/{job_id}/events", headers=org.headers,
                         params={"limit": 1000, "order": "asc"})
    return r.json()["data"]


def check_rows(task: str, rows: list[dict], labels: list[str]) -> None:
    for row in rows:
        if task == "regression":
            assert isinstance(row["value"], float) and np.isfinite(row["value"])
        elif task == "multi_label_classification":
            assert set(row["labels"]) <= set(labels) and len(row["scores"]) == len(labels)
        else:
            assert row["label"] in labels and 0.0 <= row["score"] <= 1.0


async def deploy_and_call(client, org, model_id: str, name: str, task: str) -> None:
    """The same model through the native route, /v1/classifications and OIP v2: one answer."""
    r = await client.post("/v1/deployments", headers=org.headers, json={"name": name, "model": model_id})
    assert r.status_code == 201, r.text
    labels = (await client.get(f"/v1/models/{model_id}", headers=org.headers)).json()["labels"] or []

    native = await client.post(f"/v1/deployments/{name}/predict", headers=org.headers,
                               json={"inputs": PROBES})
    assert native.status_code == 200, native.text
    assert native.json()["model"] == model_id and native.json()["usage"]["prompt_tokens"] > 0
    check_rows(task, native.json()["data"], labels)

    openai_style = await client.post("/v1/classifications", headers=org.headers,
                                     json={"model": name, "input": PROBES})
    assert openai_style.status_code == 200, openai_style.text
    check_rows(task, openai_style.json()["data"], labels)

    tensor = {"name": "text", "shape": [2], "datatype": "BYTES", "data": PROBES}
    oip = await client.post(f"/v2/models/{name}/infer", headers=org.headers, json={"inputs": [tensor]})
    assert oip.status_code == 200, oip.text
    out = {o["name"]: o for o in oip.json()["outputs"]}
    for i, row in enumerate(native.json()["data"]):
        assert openai_style.json()["data"][i].get("label") == row.get("label")
        if task == "regression":
            assert out["value"]["data"][i] == pytest.approx(row["value"], rel=1e-4, abs=1e-4)
        elif task == "multi_label_classification":
            assert sorted(filter(None, out["label"]["data"][i].split("|"))) == sorted(row["labels"])
        else:
            assert out["label"]["data"][i] == row["label"]
            scores = np.array(out["scores"]["data"]).reshape(out["scores"]["shape"])[i]
            assert scores.max() == pytest.approx(row["score"], abs=1e-5)


# -- the matrix: every family x every task, through the API and a worker -------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("task", list(DATA))
@pytest.mark.parametrize(
    ("model", "family"),
    [(TINY, "transformer"), ("tfidf-linear", "tfidf-linear"), (f"auto:{TINY}", "auto")],
)
async def test_family_trains_deploys_and_predicts(client, org_a, settings, tiny_base, model, family, task):
    fields = {"model": model, "task": task, "suffix": "fam"}
    if family != "tfidf-linear":
        fields["hyperparameters"] = FAST
    if family == "auto":
        fields["time_budget_s"] = 300
    job = await train(client, org_a, settings, DATA[task](), **fields)
    assert job["model"] == model and job["family"] == family and job["task"] == task

    chosen = job["hyperparameters"]["family"]
    if family == "auto":
        selection = job["hyperparameters"]["model_selection"]
        assert chosen == selection["chosen"]
        assert selection["candidates"].keys() == {"tfidf-linear", "transformer"}
        metric = selection["metric"]
        assert all(c["status"] == "trained" and metric in c for c in selection["candidates"].values())
        # Both candidates were trained, so both count as trained tokens.
        assert job["trained_tokens"] == sum(c["trained_tokens"] for c in selection["candidates"].values())
    else:
        assert chosen == family
    assert job["trained_tokens"] > 0
    base = TINY if chosen == "transformer" else "tfidf-linear"
    assert job["fine_tuned_model"].startswith(f"ft:{base}:org-a:fam:ftjob-")

    model_row = (await client.get(f"/v1/models/{job['fine_tuned_model']}", headers=org_a.headers)).json()
    assert model_row["family"] == chosen and model_row["base_model"] == base and model_row["task"] == task
    card = model_row["card"]
    assert card["family"] == chosen and card["hyperparameters"]["family"] == chosen
    assert ("model_selection" in card) is (family == "auto")

    await deploy_and_call(client, org_a, job["fine_tuned_model"], f"{family}-{task.split('_')[0]}", task)

    # The attempt's usage is metered like any job's: trained tokens and CPU seconds under the job's model.
    usage = (await client.get("/v1/usage", headers=org_a.headers, params={"group_by": "model"})).json()
    bucket = next(b for b in usage["data"] if b["model"] == model)
    assert bucket["trained_tokens"] == job["trained_tokens"] and bucket["cpu_seconds"] > 0


# -- auto picks the family that can read the data -------------------------------------------------------
@pytest.mark.slow
async def test_auto_keeps_tfidf_linear_when_the_transformer_reads_unk(client, org_a, settings, tiny_base):
    job = await train(client, org_a, settings, unk_marker_csv(), model=f"auto:{TINY}", time_budget_s=300,
                      hyperparameters=FAST, validation_fraction=0.3, suffix="unk")
    selection = job["hyperparameters"]["model_selection"]
    both = selection["candidates"]
    assert selection["chosen"] == job["hyperparameters"]["family"] == "tfidf-linear", selection["reason"]
    # The tiny BERT reads the Chinese markers as [UNK]: auto measures that and skips it (training/readability.py).
    assert both["tfidf-linear"]["status"] == "trained" and both["transformer"]["status"] == "skipped"
    assert "[UNK]" in both["transformer"]["reason"]
    assert both["tfidf-linear"]["macro_f1"] == pytest.approx(1.0)
    assert both["transformer"]["base_model"] == TINY
    assert job["fine_tuned_model"].startswith("ft:tfidf-linear:org-a:unk:")

    # The model card records the family, both scores, the choice and why.
    card = (await client.get(f"/v1/models/{job['fine_tuned_model']}", headers=org_a.headers)).json()["card"]
    assert card["family"] == "tfidf-linear" and card["model_selection"] == selection
    assert "Chosen by auto" in card["description"] and selection["reason"] in card["description"]

    # The job's events tell the story: the plan, each candidate's scores, the selection.
    evs = await events(client, org_a, job["id"])
    plan = [e for e in evs if "auto_plan" in (e["data"] or {})]
    assert plan and plan[0]["message"].startswith("auto: ")
    assert any(e["type"] == "metrics" and e["message"].startswith("tfidf-linear C") for e in evs)
    assert not any(e["type"] == "metrics" and "step" in (e["data"] or {}) and "total_steps" in (e["data"] or {})
                   for e in evs)  # no transformer training steps: it was skipped
    assert "[UNK]" in plan[0]["message"]
    picked = [e for e in evs if (e["data"] or {}).get("model_selection")]
    assert picked and picked[-1]["data"]["model_selection"] == selection

    await client.post("/v1/deployments", headers=org_a.headers,
                      json={"name": "reviews", "model": job["fine_tuned_model"]})
    r = await client.post("/v1/deployments/reviews/predict", headers=org_a.headers,
                          json={"inputs": ["crashes 好评如潮 service", "cancel 差强人意 today"]})
    assert [row["label"] for row in r.json()["data"]] == ["positive", "negative"]

    # A tfidf-linear model has no embeddings: a clear 400, not a 500.
    r = await client.post("/v1/embeddings", headers=org_a.headers,
                          json={"model": job["fine_tuned_model"], "input": ["hello"]})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_request" and err["param"] == "model"
    assert "transformer" in err["message"] and "tfidf-linear" in err["message"]


# -- what the API refuses, and what it lists ------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "status", "code", "param", "fragment"),
    [
        ({"model": "xgboost"}, 400, "base_model_unavailable", "model", "tfidf-linear"),
        ({"model": "auto:"}, 400, "invalid_request", "model", "auto:minilm-l6"),
        ({"model": "auto:tfidf-linear"}, 400, "invalid_request", "model", "transformer base model"),
        ({"model": "auto:nobody-here"}, 400, "base_model_unavailable", "model", "nobody-here"),
        ({"model": "tfidf-linear", "time_budget_s": 60}, 400, "invalid_request", "time_budget_s", "auto"),
        ({"model": TINY, "time_budget_s": 60}, 400, "invalid_request", "time_budget_s", "auto"),
        ({"model": "auto:tiny-bert", "time_budget_s": -5}, 400, "validation_error", "time_budget_s", ""),
        ({"model": "tfidf-linear", "hyperparameters": {"n_epochs": 3}}, 400, "invalid_request",
         "hyperparameters.n_epochs", "tfidf-linear"),
        ({"model": "tfidf-linear", "method": {"type": "supervised", "supervised": {
            "hyperparameters": {"batch_size": 8}}}}, 400, "invalid_request",
         "method.supervised.hyperparameters.batch_size", "regularisation"),
    ],
)
async def test_bad_family_requests_are_clear_400s(client, org_a, tiny_base, fields, status, code, param,
                                                  fragment):
    body = {"training_file": await upload(client, org_a, toy_csv(5)), **fields}
    r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["param"] == param and fragment in err["message"]
    assert (await client.get("/v1/fine_tuning/jobs", headers=org_a.headers)).json()["data"] == []


async def test_family_names_are_accepted_and_canonical(client, org_a, tiny_base):
    file_id = await upload(client, org_a, toy_csv(5))
    for model, stored, family in (("tfidf-linear", "tfidf-linear", "tfidf-linear"),
                                  ("TFIDF-Linear", "tfidf-linear", "tfidf-linear"),
                                  (f"auto:{TINY}", f"auto:{TINY}", "auto"),
                                  (TINY, TINY, "transformer")):
        r = await client.post("/v1/fine_tuning/jobs", headers=org_a.headers,
                              json={"model": model, "training_file": file_id})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == stored and r.json()["family"] == family
        await client.post(f"/v1/fine_tuning/jobs/{r.json()['id']}/cancel", headers=org_a.headers)


async def test_models_list_shows_the_families(client, org_a, tiny_base):
    listed = {m["id"]: m for m in (await client.get("/v1/models", headers=org_a.headers)).json()["data"]}
    assert listed["tfidf-linear"]["family"] == "tfidf-linear" and listed["auto"]["family"] == "auto"
    assert "n-gram" in listed["tfidf-linear"]["details"]["description"]
    assert listed[TINY]["family"] == "transformer"
    assert (await client.get("/v1/models/auto", headers=org_a.headers)).json()["id"] == "auto"
    r = await client.delete("/v1/models/tfidf-linear", headers=org_a.headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"


def test_cli_creates_a_tfidf_linear_job(app, org_a, tiny_base, monkeypatch):
    """`aiaas jobs create --model tfidf-linear` through the real CLI, SDK and app (in process)."""
    from starlette.testclient import TestClient
    from typer.testing import CliRunner

    from aiaas.cli import workflow
    from aiaas.cli.main import app as cli
    from aiaas.sdk import Client

    def client(*_args: object) -> Client:  # each closes its http client when done
        http = TestClient(app, base_url="http://test")
        return Client("http://test", org_a.key, http_client=http, max_retries=0)

    monkeypatch.setattr(workflow, "sdk_client", client)
    with client() as c:
        file_id = c.files.create(io.BytesIO(toy_csv(5)), filename="train.csv")["id"]
    result = CliRunner().invoke(cli, ["jobs", "create", file_id, "--model", "tfidf-linear",
                                      "--task", "regression"])
    assert result.exit_code == 0, result.output
    job_id = result.output.split()[1]
    with client() as c:
        job = c.fine_tuning.jobs.retrieve(job_id)
        assert job["model"] == job["family"] == "tfidf-linear" and job["task"] == "regression"
        ids = [m["id"] for m in c.models.list()["data"]]
        assert "tfidf-linear" in ids and "auto" in ids
    result = CliRunner().invoke(cli, ["jobs", "create", file_id, "--model", "tfidf-linear", "--epochs", "3"])
    assert result.exit_code == 1 and "hyperparameters.n_epochs" in result.output
