"""auto keeps the ensemble when it wins on validation, and every inference route serves it as one model.

End to end through the jobs API: upload, an auto job trained by a real worker (the tiny BERT and
tfidf-linear, then their ensemble), export, register, deploy, and the same labels from the native
predict route, /v1/classifications and OIP v2, right on both halves of the data (each member alone
reads only one half).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from aiaas.training import readability
from tests.api.test_families import _csv, deploy_and_call, events, tiny_base, tiny_source, train  # noqa: F401
from tests.training.test_classical import chinese_data
from tests.training.test_families import word_order_data

TINY = "tiny-bert"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the store is not what this test is about, and the training is the slow part."""
    return f"sqlite:///{tmp_path / 'aiaas.db'}"


def mixed_rows() -> list[tuple[str, str]]:
    """English word order (only the transformer reads it: every n-gram is as frequent in both classes)
    and Chinese words (only the character n-grams read them: the tiny BERT has no Chinese)."""
    english = word_order_data(n_train=150, n_val=0, seed=1)
    chinese = chinese_data(n_train=150, n_val=0, seed=1)
    rename = {"refund_first": "positive", "crash_first": "negative"}
    return [(ex.text, rename[ex.label]) for ex in english.train] + [(ex.text, ex.label) for ex in chinese.train]


PROBES = {
    "the refund my crashes card": "positive",
    "app crashes please refund today": "negative",
    "质量很好，这本书，非常满意，价格": "positive",
    "很失望，包装，退货麻烦，客服": "negative",
}


@pytest.mark.slow
async def test_auto_keeps_and_serves_the_ensemble(client, org_a, settings, tiny_base, monkeypatch):  # noqa: F811
    monkeypatch.setattr(readability, "UNK_SKIP", 1.0)  # half the text is unreadable to the tiny BERT on purpose
    # One training thread: the same weights on every run (a parallel reduction's order can change the last bits,
    # and with them which fold's transformer is best and the ensemble's weight), whatever else the cores do.
    settings = settings.model_copy(update={"training_threads": 1})
    job = await train(client, org_a, settings, _csv(mixed_rows()), model=f"auto:{TINY}", time_budget_s=600,
                      hyperparameters={"n_epochs": 8, "learning_rate_multiplier": 15}, validation_fraction=0.3,
                      suffix="mix")
    selection = job["hyperparameters"]["model_selection"]
    assert selection["chosen"] == job["hyperparameters"]["family"] == "ensemble", selection["reason"]
    both = selection["candidates"]
    best_member = max(both["transformer"]["macro_f1"], both["tfidf-linear"]["macro_f1"])
    assert selection["ensemble"]["macro_f1"] > best_member
    model_id = job["fine_tuned_model"]
    assert model_id.startswith("ft:ensemble:org-a:mix:")
    card = (await client.get(f"/v1/models/{model_id}", headers=org_a.headers)).json()["card"]
    assert card["family"] == "ensemble" and card["model_selection"]["chosen"] == "ensemble"
    assert any((e["data"] or {}).get("model_selection", {}).get("chosen") == "ensemble"
               for e in await events(client, org_a, job["id"]))

    # One model through the three wire shapes, the same label from each (deploy_and_call checks that).
    await deploy_and_call(client, org_a, model_id, "mix", "single_label_classification")
    texts = list(PROBES)
    native = await client.post("/v1/deployments/mix/predict", headers=org_a.headers, json={"inputs": texts})
    assert native.status_code == 200, native.text
    openai_style = await client.post("/v1/classifications", headers=org_a.headers,
                                     json={"model": "mix", "input": texts})
    assert openai_style.status_code == 200, openai_style.text
    labels = [row["label"] for row in native.json()["data"]]
    assert labels == [row["label"] for row in openai_style.json()["data"]]
    # Right on both halves: neither member alone is (word order for one, Chinese for the other).
    assert labels == list(PROBES.values())
    assert native.json()["usage"]["prompt_tokens"] > 0
