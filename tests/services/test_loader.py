"""The in-process runtime's loader decrypts only what loading a model reads (bench/README.md, "Density")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from aiaas.serving.sessions import onnxruntime_version, stored_first_token_file
from aiaas.services.inference.loader import ArtifactLoader
from aiaas.store import tenancy
from aiaas.store.blob_factory import create_blob_store
from aiaas.store.encrypted import encrypted


class Spy:
    """A blob store that records what is opened."""

    def __init__(self, inner) -> None:
        self.inner, self.opened = inner, []

    def open_local(self, uri: str):
        self.opened.append(uri.rsplit("/onnx", 1)[-1])
        return self.inner.open_local(uri)


def _stored(settings, db, artifact: Path, tmp_path: Path, runtime_patch: dict) -> tuple[Spy, str]:
    """The artifact with a decoy graph next to the real one (as an export keeps its fp32 fallback)."""
    root = tmp_path / "artifact"
    shutil.copytree(artifact, root)
    meta_path = root / "onnx" / "aiaas.json"
    meta = json.loads(meta_path.read_text())
    meta["runtime"]["files"]["int8"] = "model.decoy.onnx"
    meta["runtime"].update(runtime_patch)
    meta_path.write_text(json.dumps(meta))
    (root / "onnx" / "model.decoy.onnx").write_bytes(b"not a graph")
    with db.session() as s:
        org, _, _ = tenancy.create_organization(s, "loader")
        org_id = org.id
    blobs = encrypted(create_blob_store(settings.blobs_url), db, settings.master_secret())
    return Spy(blobs), blobs.put_dir(f"{org_id}/models/ftjob-loader", root)


def test_only_the_chosen_graph_is_decrypted(settings, db, classifier_artifact, tmp_path):
    spy, uri = _stored(settings, db, classifier_artifact, tmp_path, {})
    model = ArtifactLoader(settings, spy)(uri)  # type: ignore[arg-type]
    assert model.predict(["great service"]).shape == (1, 2)
    assert model.precision == "fp32"
    assert "/model.decoy.onnx" not in spy.opened and "" not in spy.opened  # neither the decoy nor the whole dir
    # ... and the first-token graph the export stored for fp32, where its guard accepted one (it opens that)
    first_token = stored_first_token_file(json.loads((classifier_artifact / "onnx/aiaas.json").read_text())["runtime"],
                                          "fp32")
    assert sorted(spy.opened[1:]) == sorted(["/aiaas.json", "/model.fp32.onnx", "/tokenizer.json"]
                                            + ([f"/{first_token}"] if first_token else []))
    assert model.first_token_logits is (first_token is not None)


def test_the_stored_first_token_graph_is_decrypted_with_the_graph_it_narrows(settings, db, classifier_artifact,
                                                                             tmp_path):
    patch = {"first_token": {"int8": {"accepted": True, "file": "model.ft.onnx",
                                      "onnxruntime": onnxruntime_version()}},
             "precision": "int8", "requires": {}}
    spy, uri = _stored(settings, db, classifier_artifact, tmp_path, patch)
    loader = ArtifactLoader(settings, spy)  # type: ignore[arg-type]
    assert loader._needed_files(uri + "/onnx") == (["aiaas.json", "tokenizer.json", "model.decoy.onnx", "model.ft.onnx"],
                                                   "model.decoy.onnx")


def test_the_fp32_fallback_comes_too_where_the_chosen_graph_needs_what_this_machine_lacks(
        settings, db, classifier_artifact, tmp_path):
    patch = {"precision": "int8", "requires": {"int8": ["an_instruction_set_from_the_future"]}}
    spy, uri = _stored(settings, db, classifier_artifact, tmp_path, patch)
    model = ArtifactLoader(settings, spy)(uri)  # type: ignore[arg-type]
    assert model.precision == "fp32"  # the runtime fell back, and its file was there
    assert {"/model.decoy.onnx", "/model.fp32.onnx"} <= set(spy.opened)


def test_an_artifact_without_a_runtime_section_is_decrypted_whole(settings, db, classifier_artifact, tmp_path):
    spy, uri = _stored(settings, db, classifier_artifact, tmp_path, {})
    loader = ArtifactLoader(settings, spy)  # type: ignore[arg-type]
    loader._needed_files = lambda onnx: None  # type: ignore[method-assign]
    assert loader(uri).predict(["fine"]).shape == (1, 2)
    assert spy.opened == [""]  # the whole onnx/ directory, as before


def test_a_first_token_model_reads_its_full_graph_again_when_an_embeddings_request_opens_it(
        settings, db, classifier_artifact, tmp_path):
    """A loaded model does not keep its full graph's bytes in memory for an embeddings request that may never come:
    that request decrypts the graph again (bench/README.md, "Density"), and answers what the artifact answers."""
    from aiaas.serving.runtime import load_predictor
    from aiaas.serving.sessions import session_memory

    source = tmp_path / "source"
    shutil.copytree(classifier_artifact, source)
    meta = json.loads((source / "onnx/aiaas.json").read_text())
    runtime = meta["runtime"]
    precision = runtime["precision"]
    if stored_first_token_file(runtime, precision) is None:
        from aiaas.registry.export.guard import store_first_token_graph

        store_first_token_graph(source / "onnx")
        runtime = json.loads((source / "onnx/aiaas.json").read_text())["runtime"]
    first_token = stored_first_token_file(runtime, precision)
    assert first_token is not None  # the tiny classifier's first-token graph is accepted and stored
    spy, uri = _stored(settings, db, source, tmp_path, {"files": runtime["files"]})  # no decoy: the real graph
    model = ArtifactLoader(settings, spy)(uri)  # type: ignore[arg-type]
    graph = "/" + runtime["files"][precision]
    assert model.first_token_logits and spy.opened.count(graph) == 1
    assert model.memory_bytes == session_memory((source / "onnx" / first_token).stat().st_size)  # no bytes kept
    assert model.predict(["great service"]).shape == (1, 2) and spy.opened.count(graph) == 1
    embeddings = model.embed(["great service", "it broke"])
    assert spy.opened.count(graph) == 2  # decrypted again, for the full graph only
    assert model.memory_bytes > session_memory((source / "onnx" / first_token).stat().st_size)
    np.testing.assert_allclose(embeddings, load_predictor(source / "onnx").embed(["great service", "it broke"]),
                               atol=1e-5)
