# syntax=docker/dockerfile:1
#
# The Trainyard image. The Helm chart (helm/trainyard) runs it in all of these:
#   - the server:             python -m trainyard.api --host 0.0.0.0 --port 8000
#   - MLflow:                 mlflow server ... (PostgreSQL through psycopg, S3 through boto3)
#   - every Ray node:         KubeRay's own `bash -c 'ulimit -n ...; ray start ...'`, its
#                             `ray health-check` init container, its `ray kuberay-autoscaling`
#                             sidecar and its `bash -c 'wget ... | grep success'` probes
# so that what submits, trains and tracks runs the same versions: constraints.txt pins them.
#
#   CPU (the default):
#     docker build -t ghcr.io/trainyard/trainyard:0.1.0 .
#   GPU (CUDA torch wheels; pick a CUDA variant that torch's pinned version is published for
#   and that the GPU nodes' driver supports):
#     docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       -t ghcr.io/trainyard/trainyard:0.1.0-cu128 .
#
# Needs BuildKit (Docker's default builder since 23.0) for RUN --mount.
# The image has no secrets: the chart mounts tokens, database URLs and S3 keys at run time.
# tests/unit/test_dockerfile.py checks this file against pyproject.toml, constraints.txt and
# the commands of the rendered chart.

# Python 3.11: the version the pins in constraints.txt were tested with.
ARG BASE_IMAGE=python:3.11-slim-bookworm
# Where torch comes from: the CPU wheels by default, a CUDA index for the GPU image. The version
# is constraints.txt's either way (==2.13.0 matches 2.13.0+cpu and 2.13.0+cu128).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Everything else, torch's own dependencies included (pinned by constraints.txt); a mirror works too.
ARG PYPI_INDEX_URL=https://pypi.org/simple

# The Trainyard wheel, built apart so that the final image holds no source tree.
FROM ${BASE_IMAGE} AS build
ARG PYPI_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY platform/ platform/
COPY workloads/ workloads/
RUN pip wheel --no-deps --index-url "${PYPI_INDEX_URL}" --wheel-dir /dist .

FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL
ARG PYPI_INDEX_URL

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# bash and grep come with the base image; KubeRay's exec probes also call wget.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/*

# uid 1000: the runAsUser of the chart's server and MLflow pods; the Ray pods set none and run
# as this user. Numeric in USER, so that runAsNonRoot can verify it.
RUN groupadd --gid 1000 trainyard \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/trainyard --shell /bin/bash trainyard

# Everything goes into the system Python (/usr/local), not a venv: KubeRay starts Ray through
# `bash -lc`, and a login shell resets PATH to what /etc/profile says, which keeps
# /usr/local/bin but would drop a venv's bin.
COPY constraints.txt /opt/trainyard/constraints.txt

# torch first, from its own index (CPU or CUDA); its dependencies come from PyPI under the pins.
RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url "${PYPI_INDEX_URL}" \
        -c /opt/trainyard/constraints.txt torch

# The heavy, rarely changing dependencies in a layer of their own, so that a change to
# Trainyard's code rebuilds only the last layer. ray[default] is the dashboard and its agent:
# the Jobs and Serve REST APIs and KubeRay's health checks. boto3 is for MLflow's S3 artifact
# store (nothing else of the runtime depends on it). psycopg is for both PostgreSQL databases.
RUN pip install --index-url "${PYPI_INDEX_URL}" -c /opt/trainyard/constraints.txt \
        "ray[default,train,tune,serve]" deepspeed mlflow s3fs boto3 "psycopg[binary]"

# Trainyard itself, with the runtime extras the chart needs (not dev). DeepSpeed gets a torch
# optimizer from the runner, so no DeepSpeed op is compiled at run time and no compiler is needed.
RUN --mount=type=bind,from=build,source=/dist,target=/tmp/dist \
    pip install --index-url "${PYPI_INDEX_URL}" -c /opt/trainyard/constraints.txt \
        "$(ls /tmp/dist/trainyard-*.whl)[postgres]" \
    && pip check \
    && python -c "import trainyard, workloads, trainyard.api, trainyard.runner, ray, mlflow, s3fs, boto3, psycopg" \
    && for c in trainyard ray mlflow wget bash grep; do command -v "$c" >/dev/null || { echo "no $c in the image" >&2; exit 1; }; done

LABEL org.opencontainers.image.title="trainyard" \
      org.opencontainers.image.source="https://github.com/trainyard/trainyard" \
      org.opencontainers.image.licenses="Apache-2.0"

USER 1000:1000
ENV HOME=/home/trainyard
WORKDIR /home/trainyard

# No ENTRYPOINT: the chart and KubeRay set each container's command. Run bare, it is the server.
CMD ["python", "-m", "trainyard.api", "--host", "0.0.0.0", "--port", "8000"]
