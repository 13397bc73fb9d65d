"""Model download: the `hf` archive loads offline in transformers, the `onnx` one in plain onnxruntime,
and both answer as the platform does (labels equal, fp32 scores within 1e-3). Audited; scope read."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile

import numpy as np
import pytest

from tests.helpers.deployed import export_tiny_classifier, register

MODEL = "ft:tiny-bert:org-a:support:ftjob-1"
TEXTS = ["great service", "terrible experience, never again", "ok"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return export_tiny_classifier(tmp_path_factory.mktemp("art"))


@pytest.fixture
def model_id(settings, db, org_a, artifact):
    register(settings, db, org_a.id, artifact, model_id=MODEL, task="single_label_classification",
             labels=["negative", "positive"])
    return MODEL


def _platform(results: list[dict]) -> tuple[list[str], np.ndarray]:
    labels = [r["label"] for r in results]
    scores = np.array([[s["score"] for s in sorted(r["scores"], key=lambda s: s["label"])] for r in results])
    return labels, scores


def _extract(content: bytes, archive: str, dest):
    if archive == "zip":
        zipfile.ZipFile(io.BytesIO(content)).extractall(dest)
    else:
        with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as t:
            t.extractall(dest, filter="data")
    (top,) = list(dest.iterdir())
    return top


@pytest.mark.parametrize("archive", ["tar.gz", "zip"])
async def test_hf_and_onnx_archives_answer_as_the_platform(client, org_a, org_b, model_id, tmp_path, archive):
    r = await client.post("/v1/classifications", headers=org_a.headers, json={"model": "support/1", "input": TEXTS})
    labels, scores = _platform(r.json()["data"])

    r = await client.get(f"/v1/models/{model_id}/content", headers=org_a.headers,
                         params={"format": "hf", "archive": archive})
    assert r.status_code == 200, r.text
    assert archive in r.headers["content-disposition"]
    hf = _extract(r.content, archive, tmp_path / "hf")
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= {p.name for p in hf.iterdir()}
    assert MODEL in (hf / "README.md").read_text()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(hf, local_files_only=True).eval()
    with torch.no_grad():
        logits = model(**tok(TEXTS, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    probs = torch.softmax(logits, -1).numpy()
    names = [model.config.id2label[i] for i in range(probs.shape[1])]
    assert [names[i] for i in probs.argmax(1)] == labels
    assert np.abs(probs[:, np.argsort(names)] - scores).max() < 1e-3

    r = await client.get("/v1/models/support@production/content", headers=org_a.headers)
    assert r.status_code == 404  # no such alias
    await client.put("/v1/registered_models/support/aliases/production", headers=org_a.headers, json={"version": 1})
    r = await client.get("/v1/models/support@production/content", headers=org_a.headers,
                         params={"format": "onnx", "archive": archive})
    assert r.status_code == 200, r.text
    ox = _extract(r.content, archive, tmp_path / "onnx")
    import onnxruntime as ort
    from tokenizers import Tokenizer

    meta = json.loads((ox / "aiaas.json").read_text())
    onnx_labels = json.loads((ox / "labels.json").read_text())
    assert onnx_labels == ["negative", "positive"] == meta["labels"]
    tk = Tokenizer.from_file(str(ox / "tokenizer.json"))
    tk.enable_truncation(max_length=meta["max_length"])
    # The archive is the served artifact: the model's graph, plus the narrowed first-token graph the export
    # stores for classification (named in aiaas.json), which serves the same answers.
    (graph,) = [p for p in ox.iterdir() if p.suffix == ".onnx" and not p.name.endswith(".first_token.onnx")]
    stored = {v["file"] for v in (meta.get("runtime", {}).get("first_token") or {}).values() if "file" in v}
    assert {p.name for p in ox.iterdir() if p.name.endswith(".first_token.onnx")} == stored
    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    probs = []
    for text in TEXTS:  # one at a time: no padding to agree on
        enc = tk.encode(text)
        feeds = {"input_ids": np.array([enc.ids], dtype=np.int64),
                 "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}
        if "token_type_ids" in {i.name for i in sess.get_inputs()}:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        logits = sess.run(["logits"], {k: v for k, v in feeds.items()
                                       if k in {i.name for i in sess.get_inputs()}})[0][0]
        e = np.exp(logits - logits.max())
        probs.append(e / e.sum())
    probs = np.array(probs)
    assert [onnx_labels[i] for i in probs.argmax(1)] == labels
    assert np.abs(probs[:, np.argsort(onnx_labels)] - scores).max() < 1e-3

    # audited, never another organisation's, read scope is enough
    logs = (await client.get("/v1/audit_logs", headers=org_a.headers,
                             params={"action": "model.downloaded"})).json()["data"]
    assert [x["details"]["format"] for x in logs] == ["onnx", "hf"] and logs[0]["target"]["id"] == MODEL
    r = await client.get(f"/v1/models/{model_id}/content", headers=org_b.headers)
    assert r.status_code == 404
    r = await client.get(f"/v1/models/{model_id}/content", headers=org_a.headers, params={"format": "pt"})
    assert r.status_code == 400
