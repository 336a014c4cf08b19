# SonoNet batch image (docs/container.md):
#   docker build -t sononet-batch:0.1.0 .
#   docker run --gpus all -v $PWD/work:/work sononet-batch:0.1.0                  # train-all, demo corpus
#   docker run --gpus all --user $(id -u):$(id -g) -v /srv/cremad:/data/cremad:ro -v $PWD/work:/work \
#     sononet-batch:0.1.0 train-all --set prepare.data=/data/cremad --set out=runs/cremad
#   docker build --target test -t sononet-batch:0.1.0-test . && docker run --rm sononet-batch:0.1.0-test
#
# Base: python:3.11-slim rather than nvidia/cuda. PyPI's torch wheel is the CUDA 12.8 build and
# carries the CUDA runtime, cuBLAS and cuDNN as nvidia-* wheels, so a CUDA base image would only
# add a second copy (~3 GB). The host needs the NVIDIA driver (>= 570 for CUDA 12.8) and the NVIDIA
# Container Toolkit; without a GPU the same image runs on the CPU. BASE= builds on another image
# with Python 3.11 at /usr/local (docker/standin-base.sh makes a stand-in where no registry is reachable).
ARG BASE=python:3.11-slim-bookworm

# --- wheel: the package built once from the source tree; only the wheel leaves this stage ---------
FROM ${BASE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The whole build context (.dockerignore keeps runs, data and results out): whatever pyproject.toml
# needs to build the package is here before the build, whichever files that is.
COPY . .
# requirements.txt: the wheel's own dependencies, so the runtime installs them in a layer of their
# own that a source change does not invalidate; constraints.txt pins them where the repo has one.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python docker/requirements.py /wheels/sononet-*.whl > /wheels/requirements.txt \
    && if [ -f constraints.txt ]; then cp constraints.txt /wheels/; else : > /wheels/constraints.txt; fi

# --- runtime: what `docker run sononet-batch` runs ---------------------------------------------------
FROM ${BASE} AS runtime
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# libsndfile: soundfile's decoder (WAV, FLAC, OGG/Opus, MP3); the distro copy gets codec fixes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first (the heavy layer, torch with its CUDA libraries), then the package itself:
# a wheel, not an editable install of a source tree, and no dev extra (docs/container.md: size).
# COPY, not a bind mount: its cache key is the files' content, so a changed wheel is installed.
# triton is torch.compile's code generator (0.6 GB); SonoNet never compiles, and torch imports without it.
COPY --from=wheel /wheels/requirements.txt /wheels/constraints.txt /wheels/deps/
RUN pip install -r /wheels/deps/requirements.txt -c /wheels/deps/constraints.txt \
    && pip uninstall -y triton
COPY --from=wheel /wheels/sononet-*.whl /wheels/
RUN pip install --no-deps /wheels/sononet-*.whl

# Any uid may run the image (--user $(id -u), Kubernetes runAsUser): /work and the caches are
# world-writable (sticky, like /tmp). Caches live under the /cache volume, so --read-only works
# and a named volume keeps them between runs; matplotlib's font list is built here, once.
RUN useradd --create-home --uid 1000 --user-group sononet \
    && mkdir -p /data /work /cache/huggingface /cache/numba /cache/matplotlib \
    && chmod 1777 /work /cache /cache/huggingface /cache/numba /cache/matplotlib \
    && MPLCONFIGDIR=/cache/matplotlib python -c "import matplotlib.font_manager" \
    && chmod -R a+rX /cache/matplotlib
ENV SONONET_WORKDIR=/work HF_HOME=/cache/huggingface NUMBA_CACHE_DIR=/cache/numba \
    MPLCONFIGDIR=/cache/matplotlib XDG_CACHE_HOME=/cache
USER sononet
WORKDIR /work
VOLUME ["/data", "/work", "/cache"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["sononet-batch"]
CMD ["train-all"]

# --- test: the runtime plus the dev extra and the tests that run against an installed package -------
FROM runtime AS test
USER root
RUN pip install -c /wheels/deps/constraints.txt "$(ls /wheels/sononet-*.whl)[dev]" && pip uninstall -y triton
WORKDIR /app
COPY pyproject.toml ./
COPY tests ./tests
USER sononet
# No .pytest_cache: /app is not the user's to write. Tests that read the repository checkout skip.
ENTRYPOINT ["python", "-m", "pytest", "-p", "no:cacheprovider"]
CMD ["-q", "tests"]

# --- the default target: the runtime image ---------------------------------------------------------
FROM runtime
