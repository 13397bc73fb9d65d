"""compose.yaml and the Dockerfile against the code: services, healthchecks, settings names, commands.

Building and running the images needs a container engine (make image); tests/packaging/test_roles.py
runs the Dockerfile's install steps (same files, same pip commands) in a fresh venv.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from aiaas.core.settings import Settings
from tests.packaging.imports import ROOT

SETTINGS_ENV = {f"AIAAS_{name.upper()}" for name in Settings.model_fields}
OTHER_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}  # boto3's own


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return dict(env) if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def test_services_and_their_dependencies(compose):
    services = compose["services"]
    assert {"postgres", "redis", "minio", "api", "worker"} <= set(services)
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
    assert services["worker"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_api_healthcheck_is_readyz(compose, dockerfile):
    test = " ".join(compose["services"]["api"]["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/readyz" in test
    assert re.search(r"HEALTHCHECK .*\n?.*127\.0\.0\.1:8000/readyz", dockerfile)
    assert "/readyz" in (ROOT / "aiaas" / "api" / "routes" / "health.py").read_text()


def test_every_aiaas_variable_is_a_setting(compose, dockerfile):
    used = set()
    for name, svc in compose["services"].items():
        for key in _env(svc):
            if key.startswith("AIAAS_"):
                used.add(key)
                assert key in SETTINGS_ENV, f"{name}: {key} is not a setting (aiaas/core/settings.py)"
            elif name in ("api", "worker", "init"):
                assert key in OTHER_ENV, f"{name}: unexpected variable {key}"
    for key in re.findall(r"\b(AIAAS_[A-Z_]+)=", dockerfile):
        used.add(key)
        assert key in SETTINGS_ENV, f"Dockerfile: {key} is not a setting"
    # The ones that make it a multi-node installation are all set.
    assert {"AIAAS_DATABASE_URL", "AIAAS_SECRET_KEY", "AIAAS_BLOB_STORE_URL", "AIAAS_S3_ENDPOINT_URL",
            "AIAAS_RATE_LIMIT_URL", "AIAAS_TRUSTED_PROXIES", "AIAAS_JOB_WORKERS", "AIAAS_DATA_DIR"} <= used


def test_settings_from_compose_are_valid(compose, monkeypatch, tmp_path):
    # The api service's environment, with its ${...} placeholders filled, loads into Settings.
    env = _env(compose["services"]["api"])
    filled = {k: re.sub(r"\$\{[^}]+\}", "x" * 40, str(v)) for k, v in env.items()}
    for k, v in filled.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AIAAS_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.sqlalchemy_url.startswith("postgresql+psycopg://aiaas:")
    assert s.blobs_url == "s3://aiaas/blobs" and s.job_workers == 0
    assert s.trusted_proxies == compose["services"]["proxy"]["networks"]["default"]["ipv4_address"]


def test_secrets_must_be_given(compose):
    text = (ROOT / "compose.yaml").read_text()
    for var in ("AIAAS_SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD"):
        assert re.search(r"\$\{" + var + r":\?", text), f"{var} needs a ${{{var}:?...}} (no default secret)"
        assert not re.search(r"\$\{" + var + r":-", text), f"{var} must not have a default"


def test_images_come_from_the_dockerfile_targets(compose, dockerfile):
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, re.MULTILINE))
    assert {"build", "build-worker", "api", "worker"} <= stages
    for name, target in (("api", "api"), ("worker", "worker"), ("init", "api")):
        assert compose["services"][name]["build"]["target"] == target
    # The API image installs no torch (the build fails if it does); the worker's adds the train extra.
    api_stage = dockerfile.split("AS build\n", 1)[1].split("AS build-worker", 1)[0]
    assert "[train" not in api_stage and '! /opt/aiaas/bin/python -c "import torch"' in api_stage
    worker_stage = dockerfile.split("AS build-worker", 1)[1].split("\nFROM ", 1)[0]
    assert "[train,postgres,redis,s3]" in worker_stage
    # The CPU torch build, pinned with its local label (PyPI's same version is the CUDA build), and checked.
    assert "ARG TORCH_REQUIREMENT=torch==2.13.0+cpu" in worker_stage and "torch.version.cuda" in worker_stage
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image:", makefile, re.MULTILINE) and "--target api" in makefile and "--target worker" in makefile


@pytest.mark.parametrize("command", ["serve", "worker", "init"])
def test_container_commands_exist(compose, dockerfile, command):
    commands = [svc.get("command") for svc in compose["services"].values()]
    commands += [[c.strip('" ') for c in m.split(",")] for m in re.findall(r'^CMD \[(.+)\]$', dockerfile, re.MULTILINE)]
    assert ["aiaas", command] in commands
    out = subprocess.run([sys.executable, "-m", "aiaas.cli.main", command, "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr


def test_dockerignore_keeps_the_context_to_what_the_build_copies(dockerfile):
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copied = set()
    for m in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        copied |= {p.rstrip("/") for p in m.split()}
    assert copied == allowed
