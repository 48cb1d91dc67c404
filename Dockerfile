# syntax=docker/dockerfile:1.7
# wva: one image for the three services (`wva watcher|fetcher|scaler`) and the tools (`wva tail|top|record`).
#
# Stage 1 builds wheels for wva and every dependency, pinned by constraints.txt.
# Stage 2 installs only those wheels (no index, no compiler, no test tools) and runs as a numeric non-root user.
#
#   docker build -t wva:0.1.0 --build-arg VERSION=0.1.0 .
#   docker run --rm wva:0.1.0 --help

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY shared/ shared/
COPY services/ services/
# Wheels for wva and its runtime dependencies only: `.[dev]` is never built here.
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels --constraint constraints.txt .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wva" \
      org.opencontainers.image.description="Event-driven autoscaler for LLM inference variants on Kubernetes, over NATS" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WVA_LOG_FORMAT=json \
    WVA_HTTP_ADDR=0.0.0.0:8080
# The wheels are bind-mounted from the builder, so they never become a layer of this image;
# pip itself is removed afterwards: nothing installs anything at run time.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels "wva==${VERSION}" \
    && python -m pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 65532 wva \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin wva
USER 65532:65532
WORKDIR /tmp
EXPOSE 8080
# Kubernetes uses its own probes (deploy/base); this one serves `docker run` and compose.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('WVA_HTTP_ADDR', ':8080').rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["wva"]
CMD ["--help"]
