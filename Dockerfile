# tnas for a Ray cluster: one image for the Ray head, the Ray workers, the search runner and
# optuna-dashboard (docker-compose.yml starts each with its own command; docs/deploy.md).
#
#   docker build -t tnas:cpu .                                   # CPU torch (the default)
#   docker build -t tnas:gpu --build-arg TORCH_INDEX= .          # CUDA torch from PyPI
#
# TORCH_PIN is the Makefile's TORCH_PIN (a test keeps the two equal). TORCH_INDEX is the index
# torch comes from: PyTorch's CPU index by default; empty means PyPI, whose Linux wheel is the
# CUDA build and carries its own CUDA runtime, so the GPU image needs only the host's NVIDIA
# driver and container toolkit, not a CUDA base image. RAY_VERSION is pinned because every
# node of a cluster, and every laptop that joins one, must run the same Ray (and Python 3.11).
# No secrets are baked in: the database password and any Ray token arrive as environment
# variables when a container starts.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_PIN=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG RAY_VERSION=2.60.0

ENV VIRTUAL_ENV=/opt/tnas \
    PATH=/opt/tnas/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/tnas \
    && pip install --upgrade pip \
    && pip install ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} "$TORCH_PIN"

RUN useradd --create-home --uid 1000 --shell /bin/bash tnas \
    && mkdir /checkpoints && chown tnas /checkpoints

COPY pyproject.toml README.md /tmp/tnas-src/
COPY tnas /tmp/tnas-src/tnas
# ray[default] adds the Ray dashboard and the Ray Client server that the head node serves.
RUN pip install "/tmp/tnas-src[postgres]" "ray[default]==${RAY_VERSION}" \
    && rm -rf /tmp/tnas-src

# The code and the environment belong to root; the containers run as an unprivileged user
# whose home holds whatever a run writes.
USER tnas
WORKDIR /home/tnas

# No entrypoint: a container runs `ray start ...`, `tnas ...` or `optuna-dashboard ...` as its
# command (docker-compose.yml); on its own the image prints the CLI's help.
CMD ["tnas", "--help"]
