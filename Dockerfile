# syntax=docker/dockerfile:1
# SonoNet batch image:
#   docker build -t sononet-batch:0.1.0 .
#   docker run --gpus all -v $PWD/work:/work sononet-batch:0.1.0                  # train-all, demo corpus
#   docker run --gpus all -v /srv/cremad:/data/cremad:ro -v $PWD/work:/work \
#     sononet-batch:0.1.0 train-all --set prepare.data=/data/cremad --set out=runs/cremad
#
# Base: python:3.11-slim rather than nvidia/cuda. PyPI's torch 2.9.1 wheel is the CUDA 12.8 build
# and carries the CUDA runtime, cuBLAS and cuDNN as nvidia-* wheels, so a CUDA base image would only
# add a second copy (~3 GB). The host needs the NVIDIA driver (>= 570 for CUDA 12.8) and the NVIDIA
# Container Toolkit; without a GPU the same image runs on the CPU.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# libsndfile: soundfile's decoder (WAV, FLAC, OGG/Opus, MP3); the distro copy gets codec fixes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml setup.py README.md LICENSE constraints.txt ./
COPY sononet ./sononet
COPY kernels ./kernels
COPY jobs ./jobs
# The README's install command, so the image runs exactly what a developer runs (tests included),
# at the exact versions CI tests (constraints.txt).
RUN PIP_CONSTRAINT=constraints.txt pip install -e '.[dev]'
COPY tests ./tests

# Non-root; uid 1000 matches the Kubernetes examples' securityContext in jobs/k8s/.
RUN useradd --create-home --uid 1000 --user-group sononet \
    && mkdir -p /data /work /cache/huggingface /cache/numba \
    && chown -R sononet:sononet /work /cache
ENV SONONET_WORKDIR=/work SONONET_JOBS_DIR=/app/jobs HF_HOME=/cache/huggingface \
    NUMBA_CACHE_DIR=/cache/numba MPLCONFIGDIR=/tmp/matplotlib
USER sononet
WORKDIR /work
VOLUME ["/data", "/work", "/cache/huggingface"]

ENTRYPOINT ["sononet-batch"]
CMD ["train-all"]
