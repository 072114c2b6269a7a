# ssl-viz: CPU image by default; for CUDA build with
#   docker build --build-arg BASE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SSL_VIZ_CACHE=/home/app/.cache/ssl_viz SSL_VIZ_RUNS=/home/app/runs

# Fashion-MNIST from Debian, curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist curl \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 app
WORKDIR /app
COPY requirements.txt requirements-nodeps.txt ./
RUN pip install -r requirements.txt && pip install --no-deps -r requirements-nodeps.txt
COPY --chown=app:app . .

USER app
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s CMD curl -fsS http://127.0.0.1:8501/_stcore/health || exit 1
# Inside a container the server must listen on all interfaces for -p 8501:8501 to reach it.
CMD ["python", "-m", "ssl_viz.ui.serve", "--server.address=0.0.0.0", "--server.port=8501"]
