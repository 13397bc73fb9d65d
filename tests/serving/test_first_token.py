"""The first-token logits graph: same logits as the full graph, last layer computed for one row."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from aiaas.serving import runtime as rt
from aiaas.serving import sessions
from aiaas.serving.first_token import first_token_graph
from tests.serving.artifacts import MAX_LENGTH, TEXTS, word_soup


def _batch(artifact: Path, texts: list[str]) -> dict[str, np.ndarray]:
    """One padded batch of mixed lengths (padding is where a wrong narrowing would show)."""
    tokenizer = rt.load_tokenizer(artifact / rt.TOKENIZER_FILE, max_length=MAX_LENGTH)
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(i) for i in ids)
    input_ids = np.zeros((len(ids), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, tokens in enumerate(ids):
        input_ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def _head_input(model) -> str:
    """The tensor the head's first-token Gather (axis 1, scalar index 0) reads."""
    scalars = {i.name for i in model.graph.initializer if len(i.dims) == 0}
    scalars |= {
        n.output[0] for n in model.graph.node if n.op_type == "Constant" and not n.attribute[0].t.dims
    }
    heads = [
        node.input[0]
        for node in model.graph.node
        if node.op_type == "Gather"
        and next((a.i for a in node.attribute if a.name == "axis"), 0) == 1
        and node.input[1] in scalars
    ]
    assert len(heads) == 1, heads
    return heads[0]


def _with_output(model, name: str):
    model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    return model


def _quantized(fp32_path: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32_path, out, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
    )
    return out


def test_fp32_logits_equal_the_full_graph_with_one_row_in_the_last_layer(single_label):
    artifact = single_label[1]
    full = onnx.load(str(artifact / "model.fp32.onnx"))
    rewritten = first_token_graph(full)
    assert rewritten is not None
    narrowed, count = rewritten
    assert count >= 10  # attention output, feed-forward, both LayerNorms, ... of the last layer
    assert [o.name for o in narrowed.graph.output] == ["logits"]
    assert "logits" in {o.name for o in full.graph.output} and len(full.graph.output) == 2  # input untouched

    feeds = _batch(artifact, word_soup(9, seed=5) + TEXTS)
    last_state = _head_input(narrowed)
    (want,) = rt.make_session(artifact / "model.fp32.onnx").run(["logits"], feeds)
    got, state = rt.make_session(_with_output(narrowed, last_state).SerializeToString()).run(
        ["logits", last_state], feeds
    )
    np.testing.assert_allclose(got, want, atol=1e-5)
    batch = feeds["input_ids"].shape[0]
    assert state.shape == (batch, 1, 32)  # the final layer produced the first token's row only
    assert np.abs(want).max() > 1e-3  # logits worth comparing


def test_int8_graph_narrows_and_stays_near_the_full_int8_graph(single_label, tmp_path):
    artifact = single_label[1]
    int8 = _quantized(artifact / "model.fp32.onnx", tmp_path / "model.int8.onnx")
    narrowed, count = first_token_graph(onnx.load(str(int8)))
    assert count >= 10
    assert any(
        n.op_type == "DynamicQuantizeLinear" and n.name.endswith("__first_token") for n in narrowed.graph.node
    )

    feeds = _batch(artifact, TEXTS)
    last_state = _head_input(narrowed)
    (fp32,) = rt.make_session(artifact / "model.fp32.onnx").run(["logits"], feeds)
    (full,) = rt.make_session(int8).run(["logits"], feeds)
    got, state = rt.make_session(_with_output(narrowed, last_state).SerializeToString()).run(
        ["logits", last_state], feeds
    )
    assert state.shape[1] == 1
    # Narrowed rows are quantised with their own scale: as far from fp32 as int8 itself, not further.
    int8_error = np.abs(full - fp32).max()
    assert np.abs(got - fp32).max() <= 3 * int8_error + 1e-4


def test_graphs_without_a_first_token_head_are_left_alone(embedding_only):
    headless = onnx.load(str(embedding_only[1] / "model.fp32.onnx"))
    assert first_token_graph(headless) is None  # no logits output
    assert first_token_graph(headless, output="embeddings") is None  # mean pooling reads every token

    # A head that reads every token (mean over the sequence) is not narrowed either.
    weights = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
        ],
        "mean-head",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])],
        [weights],
    )
    assert first_token_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])) is None


def test_export_judges_it_and_the_runtime_serves_logits_from_it(single_label):
    artifact = single_label[1]
    meta = json.loads((artifact / rt.META_FILE).read_text())
    chosen = meta["runtime"]["precision"]
    verdict = meta["runtime"]["first_token"][chosen]
    assert verdict["accepted"] is True and verdict["agreement"] >= 0.99
    assert set(verdict["throughput_seq_s"]) == {"full", "first_token"}

    predictor = rt.load_predictor(artifact)
    assert predictor.first_token_logits
    assert predictor.outputs == {"logits", "embeddings"}
    full = rt.Predictor(
        session=rt.make_session(artifact / meta["runtime"]["file"]),
        tokenizer=rt.load_tokenizer(artifact / rt.TOKENIZER_FILE, max_length=MAX_LENGTH),
        meta=meta,
        precision=chosen,
        model_file=meta["runtime"]["file"],
        artifact_dir=artifact,
        memory_bytes=1,
    )
    texts = word_soup(20, seed=11) + TEXTS
    tolerance = 1e-5 if chosen == "fp32" else 2e-2
    np.testing.assert_allclose(predictor.predict(texts), full.predict(texts), atol=tolerance)
    # Budgeted is what is open: the first-token session and the full graph's bytes, kept for its first use.
    graph_bytes = (artifact / meta["runtime"]["file"]).stat().st_size
    stored = artifact / verdict["file"]
    assert predictor.memory_bytes == sessions.session_memory(stored.stat().st_size) + graph_bytes
    at_load = predictor.memory_bytes
    # Embeddings need every token: they come from the full graph, opened on first use, and counted then.
    np.testing.assert_allclose(predictor.embed(texts), full.embed(texts), atol=tolerance)
    assert predictor.memory_bytes == at_load + sessions.session_memory(graph_bytes)
    both = predictor.infer(texts, probabilities=True, embeddings=True)
    assert both.probabilities is not None and both.embeddings is not None
    predictor.close()
    assert predictor.closed


def test_the_runtime_keeps_the_full_graph_unless_the_guard_passed_it(single_label, tmp_path):
    artifact = tmp_path / "artifact"
    shutil.copytree(single_label[1], artifact)
    meta = json.loads((artifact / rt.META_FILE).read_text())
    chosen = meta["runtime"]["precision"]
    meta["runtime"]["first_token"][chosen] = {"accepted": False, "reason": "agrees on 97.00% of texts"}
    (artifact / rt.META_FILE).write_text(json.dumps(meta))
    assert not rt.load_predictor(artifact).first_token_logits
    del meta["runtime"]["first_token"]  # artifacts exported before the first-token graph existed
    (artifact / rt.META_FILE).write_text(json.dumps(meta))
    assert not rt.load_predictor(artifact).first_token_logits


def _without_stored_graph(artifact: Path, dest: Path) -> Path:
    """A copy of `artifact` as exported before the first-token graph was stored in it."""
    shutil.copytree(artifact, dest)
    meta = json.loads((dest / rt.META_FILE).read_text())
    verdict = meta["runtime"]["first_token"][meta["runtime"]["precision"]]
    (dest / verdict.pop("file")).unlink()
    verdict.pop("onnxruntime")
    (dest / rt.META_FILE).write_text(json.dumps(meta))
    return dest


def _broken_rewrite(monkeypatch) -> None:
    from aiaas.serving import first_token

    def broken(model, **kwargs):
        raise ValueError("unexpected graph")

    monkeypatch.setattr(first_token, "first_token_graph", broken)


def test_export_stores_the_first_token_graph_and_a_load_only_opens_it(single_label, tmp_path, monkeypatch):
    artifact = single_label[1]
    runtime = json.loads((artifact / rt.META_FILE).read_text())["runtime"]
    verdict = runtime["first_token"][runtime["precision"]]
    assert verdict["file"] == sessions.first_token_file_name(runtime["file"])
    assert verdict["onnxruntime"] == sessions.onnxruntime_version()
    stored = onnx.load(str(artifact / verdict["file"]))
    assert [o.name for o in stored.graph.output] == ["logits"]
    assert any(n.domain == "com.microsoft" for n in stored.graph.node)  # pre-optimised: ORT's fused operators
    old = _without_stored_graph(artifact, tmp_path / "old")
    texts = word_soup(20, seed=5) + TEXTS
    before = rt.load_predictor(old)  # rewrites at load, as before
    _broken_rewrite(monkeypatch)  # from here a rewrite would fail: the stored graph must be what is opened
    predictor = rt.load_predictor(artifact)
    assert predictor.first_token_logits
    np.testing.assert_allclose(predictor.predict(texts), before.predict(texts), atol=1e-6)


def test_an_old_artifact_or_another_onnxruntime_rewrites_at_load(single_label, tmp_path):
    texts = word_soup(10, seed=7) + TEXTS
    want = rt.load_predictor(single_label[1]).predict(texts)
    old = _without_stored_graph(single_label[1], tmp_path / "old")
    loaded = rt.load_predictor(old)
    assert loaded.first_token_logits
    np.testing.assert_allclose(loaded.predict(texts), want, atol=1e-6)

    other = tmp_path / "other"
    shutil.copytree(single_label[1], other)
    meta = json.loads((other / rt.META_FILE).read_text())
    meta["runtime"]["first_token"][meta["runtime"]["precision"]]["onnxruntime"] = "0.0.1"
    (other / rt.META_FILE).write_text(json.dumps(meta))
    assert sessions.stored_first_token_file(meta["runtime"], meta["runtime"]["precision"]) is None
    loaded = rt.load_predictor(other)
    assert loaded.first_token_logits
    np.testing.assert_allclose(loaded.predict(texts), want, atol=1e-6)


def test_an_old_artifact_can_be_given_its_first_token_graph(single_label, tmp_path, monkeypatch):
    from aiaas.registry.export.guard import store_first_token_graph

    old = _without_stored_graph(single_label[1], tmp_path / "old")
    texts = word_soup(10, seed=3) + TEXTS
    want = rt.load_predictor(old).predict(texts)
    name = store_first_token_graph(old)
    assert name is not None and (old / name).is_file()
    assert store_first_token_graph(old) is None  # already there
    _broken_rewrite(monkeypatch)
    loaded = rt.load_predictor(old)
    assert loaded.first_token_logits
    np.testing.assert_allclose(loaded.predict(texts), want, atol=1e-6)


def test_a_rewrite_that_fails_at_load_falls_back_to_the_full_graph(single_label, tmp_path, monkeypatch, caplog):
    _broken_rewrite(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="aiaas.serving.sessions"):
        predictor = rt.load_predictor(_without_stored_graph(single_label[1], tmp_path / "old"))
    assert not predictor.first_token_logits
    assert "first-token graph unavailable (unexpected graph)" in caplog.text
    assert predictor.predict(TEXTS).shape == (len(TEXTS), 3)


def test_headless_exports_record_no_first_token_verdict(embedding_only):
    meta = json.loads((embedding_only[1] / rt.META_FILE).read_text())
    assert "first_token" not in meta["runtime"]
    assert not rt.load_predictor(embedding_only[1]).first_token_logits


@pytest.mark.parametrize("bad", [{"first_token": {"fp32": "yes"}}, {"first_token": []}, {}])
def test_malformed_verdicts_count_as_not_accepted(bad):
    assert not rt.first_token_accepted(bad, "fp32")
