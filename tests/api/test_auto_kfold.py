"""auto on small data through the jobs API and a real worker: the choice is made by k-fold CV (the job's
events and the model card show the k fold scores), the refit model is what gets deployed, and it
answers predict with the labels it learned; with the threshold below the job's rows, the single split."""

from __future__ import annotations

import pytest

from tests.api.test_families import TINY, events, run_worker, tiny_base, tiny_source, train  # noqa: F401
from tests.helpers.datasets import toy_csv, toy_rows

FAST = {"n_epochs": 1}


@pytest.mark.slow
async def test_auto_chooses_by_k_folds_and_serves_the_refit(client, org_a, settings, tiny_base):  # noqa: F811
    job = await train(client, org_a, settings, toy_csv(15), model=f"auto:{TINY}", time_budget_s=300,
                      hyperparameters=FAST, suffix="kf")  # fmt: skip
    selection = job["hyperparameters"]["model_selection"]
    cv = selection["cv"]
    assert cv["status"] == "done" and cv["k"] == 5 and cv["rows"] == 30 and cv["max_rows"] == 1000
    metric = selection["metric"]
    chosen = selection["chosen"]
    for name, candidate in selection["candidates"].items():
        folds = candidate["cv"]["folds"]
        assert len(folds) == 5 and candidate[metric] == candidate["cv"]["mean"][metric], name
    assert f"over {cv['k']} folds" in selection["reason"]

    # The job's events show each fold's score, per family.
    messages = [e["message"] for e in await events(client, org_a, job["id"])]
    for name in selection["candidates"]:
        assert sum(f"auto: {name} fold " in m for m in messages) == 5, name

    # The model card: the k fold scores, their mean ± std, and why the family won.
    model_id = job["fine_tuned_model"]
    card = (await client.get(f"/v1/models/{model_id}", headers=org_a.headers)).json()["card"]
    assert card["model_selection"]["cv"] == cv and card["model_selection"]["candidates"] == selection["candidates"]
    assert "mean ± std over 5 folds" in card["description"]
    if chosen == "tfidf-linear":
        assert card["hyperparameters"]["refit"]["rows"] == 30  # all rows, validation's included

    # Deployed and called: the refit model gives back the labels it was trained on.
    r = await client.post("/v1/deployments", headers=org_a.headers, json={"name": "kf", "model": model_id})
    assert r.status_code == 201, r.text
    rows = toy_rows(15)
    answer = await client.post("/v1/deployments/kf/predict", headers=org_a.headers,
                               json={"inputs": [t for t, _ in rows]})  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert [d["label"] for d in answer.json()["data"]] == [label for _, label in rows]


@pytest.mark.slow
async def test_auto_over_the_threshold_keeps_the_single_split(client, org_a, settings, tiny_base):  # noqa: F811
    settings = settings.model_copy(update={"auto_kfold_max_rows": 30})
    job = await train(client, org_a, settings, toy_csv(15), model=f"auto:{TINY}", time_budget_s=300,
                      hyperparameters=FAST, suffix="kf")  # fmt: skip
    selection = job["hyperparameters"]["model_selection"]
    assert selection["cv"]["status"] == "off" and "auto_kfold_max_rows 30" in selection["cv"]["reason"]
    assert selection["scored_on"] == "validation split"
    messages = [e["message"] for e in await events(client, org_a, job["id"])]
    assert not any(" fold " in m for m in messages)
