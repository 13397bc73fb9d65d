"""The ONNX Runtime predictor against torch, on real exported tiny BERTs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from aiaas.core.errors import InvalidFile, InvalidRequest, Unavailable
from aiaas.serving.runtime import load_predictor, make_session, sigmoid, softmax
from tests.serving.artifacts import MAX_LENGTH, TEXTS, torch_reference, word_soup

REPO = Path(__file__).resolve().parents[2]


def test_single_label_probabilities_match_torch(single_label):
    model_dir, artifact = single_label
    predictor = load_predictor(artifact)
    ref = torch_reference(model_dir, TEXTS)
    probs = predictor.predict(TEXTS)
    assert probs.shape == (len(TEXTS), 3) and probs.dtype == np.float32
    expected = softmax(ref["logits"])
    # int8 (if the export chose it) moves probabilities a little; fp32 must be exact to float noise.
    tolerance = 1e-5 if predictor.precision == "fp32" else 2e-2
    np.testing.assert_allclose(probs, expected, atol=tolerance)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert predictor.task == "single_label_classification"
    assert predictor.labels == ["refund", "bug", "other"]
    assert predictor.max_length == MAX_LENGTH
    assert predictor.memory_bytes > 0


def test_fp32_embeddings_match_torch_and_are_normalised(single_label):
    model_dir, artifact = single_label
    predictor = load_predictor(artifact, precision="fp32")
    ref = torch_reference(model_dir, TEXTS)
    emb = predictor.embed(TEXTS)
    assert emb.shape == (len(TEXTS), 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(emb, ref["embeddings"], atol=1e-5)


def test_bucketing_keeps_order_and_padding_does_not_leak(single_label):
    """Many texts of mixed lengths (several buckets) answer exactly as each text alone."""
    predictor = load_predictor(single_label[1], precision="fp32")
    texts = word_soup(40, seed=3) + TEXTS
    together = predictor.infer(texts, probabilities=True, embeddings=True)
    alone = [predictor.infer([t], probabilities=True, embeddings=True) for t in texts]
    assert together.probabilities is not None and together.embeddings is not None
    np.testing.assert_allclose(
        together.probabilities, np.concatenate([a.probabilities for a in alone]), atol=1e-5
    )
    np.testing.assert_allclose(together.embeddings, np.concatenate([a.embeddings for a in alone]), atol=1e-5)
    assert together.token_counts == [a.token_counts[0] for a in alone]


def test_count_tokens_truncates_and_ignores_padding(single_label):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(single_label[0])
    predictor = load_predictor(single_label[1])
    texts = ["hi", "", TEXTS[4], TEXTS[0]]
    counts = predictor.count_tokens(texts)
    assert counts[1] == 2  # [CLS] [SEP]
    assert counts[2] == MAX_LENGTH
    assert counts == [len(hf(t, truncation=True, max_length=MAX_LENGTH)["input_ids"]) for t in texts]


def test_multi_label_is_sigmoid_and_exposes_thresholds(multi_label):
    model_dir, artifact = multi_label
    predictor = load_predictor(artifact)
    probs = predictor.predict(TEXTS)
    np.testing.assert_allclose(probs, sigmoid(torch_reference(model_dir, TEXTS)["logits"]), atol=1e-5)
    assert not np.allclose(probs.sum(axis=1), 1.0)
    assert predictor.thresholds == [0.5, 0.4, 0.6, 0.5]


def test_regression_returns_raw_values(regression):
    model_dir, artifact = regression
    predictor = load_predictor(artifact)
    values = predictor.predict(TEXTS)
    assert values.shape == (len(TEXTS), 1)
    np.testing.assert_allclose(values, torch_reference(model_dir, TEXTS)["logits"], atol=1e-5)


def test_embedding_only_model(embedding_only):
    model_dir, artifact = embedding_only
    predictor = load_predictor(artifact)
    assert predictor.task == "embedding"
    assert predictor.outputs == {"embeddings"}
    emb = predictor.embed(TEXTS)
    np.testing.assert_allclose(
        emb,
        torch_reference(model_dir, TEXTS, head=False)["embeddings"],
        atol=1e-5 if predictor.precision == "fp32" else 5e-2,
    )
    with pytest.raises(InvalidRequest, match="no classification head"):
        predictor.predict(["x"])


def test_empty_and_invalid_inputs(single_label):
    predictor = load_predictor(single_label[1])
    assert predictor.predict([]).shape == (0, 3)
    assert predictor.embed([]).shape == (0, 32)
    assert predictor.count_tokens([]) == []
    with pytest.raises(InvalidRequest) as err:
        predictor.predict(["ok", 3])  # type: ignore[list-item]
    assert err.value.param == "input" and "item 1" in err.value.message
    with pytest.raises(InvalidRequest):
        predictor.predict("not a list")  # type: ignore[arg-type]


def test_closed_predictor_says_unavailable(single_label):
    predictor = load_predictor(single_label[1])
    predictor.close()
    assert predictor.closed
    with pytest.raises(Unavailable):
        predictor.predict(["x"])


def test_concurrent_threads_share_one_predictor(single_label):
    predictor = load_predictor(single_label[1])
    texts = word_soup(24, seed=5)
    expected = predictor.predict(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda i: predictor.predict(texts[i:] + texts[:i]), range(8)))
    for i, got in enumerate(results):
        np.testing.assert_allclose(got, np.roll(expected, -i, axis=0), atol=1e-6)


def test_precision_override_and_unmet_cpu_requirement(single_label, tmp_path, caplog):
    """An artifact whose chosen precision needs an instruction this CPU lacks falls back to fp32."""
    artifact = tmp_path / "artifact"
    shutil.copytree(single_label[1], artifact)
    meta = json.loads((artifact / "aiaas.json").read_text())
    runtime = meta["runtime"]
    runtime["files"]["int8"] = runtime["files"]["fp32"]
    runtime["precision"], runtime["file"] = "int8", runtime["files"]["fp32"]
    runtime["requires"] = {"int8": ["an_instruction_no_cpu_has"]}
    (artifact / "aiaas.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="aiaas.serving.runtime"):
        predictor = load_predictor(artifact)
    assert predictor.precision == "fp32"
    assert "serving fp32 instead" in caplog.text
    with pytest.raises(InvalidRequest, match="no 'bf16' model"):
        load_predictor(artifact, precision="bf16")


def test_bad_artifacts(tmp_path, single_label):
    with pytest.raises(InvalidFile, match="no aiaas.json"):
        load_predictor(tmp_path)
    (tmp_path / "aiaas.json").write_text(json.dumps({"task": "single_label_classification", "max_length": 8}))
    with pytest.raises(InvalidFile, match="runtime"):
        load_predictor(tmp_path)
    (tmp_path / "aiaas.json").write_text("{not json")
    with pytest.raises(InvalidFile):
        load_predictor(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(single_label[1], broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(InvalidFile, match="tokenizer.json"):
        load_predictor(broken)


def test_session_options_are_validated(single_label):
    model = single_label[1] / "model.fp32.onnx"
    with pytest.raises(ValueError, match="intra_op_threads"):
        make_session(model, intra_op_threads=0)
    assert make_session(model, intra_op_threads=2).get_outputs()[0].name == "logits"


def _residual_layer_norm_graph(path: Path) -> None:
    """x + residual -> LayerNormalization: the pattern ORT's SkipLayerNormFusion rewrites."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def tensor(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq", 8])

    nodes = [
        helper.make_node("Add", ["x", "residual"], ["sum"]),
        helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12),
    ]
    weights = [
        numpy_helper.from_array(np.linspace(0.5, 1.5, 8, dtype=np.float32), "gamma"),
        numpy_helper.from_array(np.full(8, 0.1, dtype=np.float32), "beta"),
    ]
    graph = helper.make_graph(nodes, "residual_ln", [tensor("x"), tensor("residual")], [tensor("y")], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_session_skips_the_slow_skip_layer_norm_fusion(tmp_path):
    """make_session keeps Add + LayerNormalization apart (the fused kernel was 6x slower on
    int8 BERTs); ORT's defaults fuse them, which shows the graph does trigger the rewrite."""
    import onnx
    import onnxruntime as ort

    model = tmp_path / "residual_ln.onnx"
    _residual_layer_norm_graph(model)
    ours, default = tmp_path / "ours.onnx", tmp_path / "default.onnx"
    session = make_session(model, optimized_model_path=ours)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(default)
    options.log_severity_level = 3
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    assert [n.op_type for n in onnx.load(str(default)).graph.node] == ["SkipLayerNormalization"]
    assert [n.op_type for n in onnx.load(str(ours)).graph.node] == ["Add", "LayerNormalization"]
    # ... and the unfused graph computes the layer norm of the sum.
    rng = np.random.default_rng(0)
    x, residual = rng.normal(size=(2, 3, 8)).astype(np.float32), rng.normal(size=(2, 3, 8)).astype(np.float32)
    (y,) = session.run(None, {"x": x, "residual": residual})
    s = x + residual
    expected = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(y, expected * np.linspace(0.5, 1.5, 8) + 0.1, atol=1e-5)


def test_runtime_never_imports_torch_or_transformers(single_label):
    """Cold start matters for scale-to-zero: the serving path must not pull in torch/transformers."""
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from aiaas.serving.runtime import load_predictor
        from aiaas.serving import batcher, cache, machine, oip_codec, agreement  # the whole data plane
        p = load_predictor(Path({str(single_label[1])!r}))
        assert p.predict(["hello", "my card was charged twice"]).shape == (2, 3)
        assert p.embed(["hello"]).shape == (1, 32)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
        print("HEAVY", heavy)
        assert not heavy, heavy
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout


def test_loading_turns_the_tokenizer_pool_off_unless_the_operator_chose(single_label, monkeypatch):
    import os

    from aiaas.serving.runtime import load_tokenizer

    path = single_label[1] / "tokenizer.json"
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    tokenizer = load_tokenizer(path, max_length=MAX_LENGTH)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    load_tokenizer(path, max_length=MAX_LENGTH)
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"
    # The offset-free encoding the runtime uses gives the same ids as the ordinary one.
    from aiaas.serving.runtime import _encode

    assert [e.ids for e in _encode(tokenizer, TEXTS)] == [e.ids for e in tokenizer.encode_batch(TEXTS)]


def test_models_with_the_same_tokenizer_share_one_while_any_is_loaded(single_label, tmp_path):
    """Building a tokenizer holds the GIL for tens of ms (bench/README.md, "Density"): loads of models fine-tuned
    from one base reuse the tokenizer a loaded model already has, and it goes with the last of them."""
    import gc

    from aiaas.serving import runtime

    copy = tmp_path / "copy"
    shutil.copytree(single_label[1], copy)
    first, second = load_predictor(single_label[1]), load_predictor(copy)
    assert first._tokenizer is second._tokenizer
    assert np.array_equal(first.predict(TEXTS), second.predict(TEXTS))
    shorter = runtime.shared_tokenizer(copy / runtime.TOKENIZER_FILE, max_length=MAX_LENGTH // 2)
    assert shorter is not first._tokenizer  # truncation differs: a tokenizer of its own
    key = next(k for k, v in runtime._tokenizers.items() if v is first._tokenizer)
    first.close()
    second.close()
    del first, second, shorter
    gc.collect()
    assert key not in runtime._tokenizers
