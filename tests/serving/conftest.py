"""Exported tiny-BERT artifacts, built once per test session (each export takes well under a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.serving.artifacts import make_model_dir


@pytest.fixture(scope="session")
def single_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model_dir, artifact_dir) for a 3-class classifier."""
    from aiaas.registry.export import export_model

    root = tmp_path_factory.mktemp("single")
    model_dir = make_model_dir(root / "model", "single_label_classification", ["refund", "bug", "other"])
    export_model(model_dir, root / "artifact")
    return model_dir, root / "artifact"


@pytest.fixture(scope="session")
def multi_label(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from aiaas.registry.export import export_model

    root = tmp_path_factory.mktemp("multi")
    model_dir = make_model_dir(
        root / "model", "multi_label_classification", ["a", "b", "c", "d"], thresholds=[0.5, 0.4, 0.6, 0.5]
    )
    export_model(model_dir, root / "artifact", precision="fp32")
    return model_dir, root / "artifact"


@pytest.fixture(scope="session")
def regression(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from aiaas.registry.export import export_model

    root = tmp_path_factory.mktemp("regression")
    model_dir = make_model_dir(root / "model", "regression", [])
    export_model(model_dir, root / "artifact", precision="fp32")
    return model_dir, root / "artifact"


@pytest.fixture(scope="session")
def embedding_only(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from aiaas.registry.export import export_base_model

    root = tmp_path_factory.mktemp("base")
    model_dir = make_model_dir(root / "model", "single_label_classification", ["x", "y"])
    export_base_model(model_dir, root / "artifact", max_length=32)
    return model_dir, root / "artifact"
