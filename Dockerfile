# syntax=docker/dockerfile:1
# The workgate operator image: `docker build -t workgate:0.1.0 .`
# Two stages: build the wheel and a venv with pinned dependencies, then copy only the venv
# into a clean base. Reproducible inputs: the base by exact tag, every Python package by
# exact version (deploy/docker/*.txt), nothing installed from unpinned sources.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first: this layer is reused until the pins change.
COPY deploy/docker/requirements.txt deploy/docker/build-requirements.txt /src/deploy/docker/
RUN python -m venv /opt/workgate \
    && /opt/workgate/bin/pip install --no-cache-dir --no-deps \
        -r /src/deploy/docker/requirements.txt \
    && python -m pip install --no-cache-dir -r /src/deploy/docker/build-requirements.txt
COPY pyproject.toml /src/
COPY src /src/src
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels . \
    && /opt/workgate/bin/pip install --no-cache-dir --no-deps /wheels/workgate-*.whl \
    && /opt/workgate/bin/python -m compileall -q /opt/workgate

FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="workgate" \
      org.opencontainers.image.description="Kubernetes operator: a durable work queue with human approval gates" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/workgate /opt/workgate
# Bytecode was compiled at build time; the root filesystem is read-only at run time.
ENV PATH=/opt/workgate/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
# health (/healthz), metrics (/metrics), admission webhook (TLS)
EXPOSE 8080 9090 9443
ENTRYPOINT ["workgate", "run"]
