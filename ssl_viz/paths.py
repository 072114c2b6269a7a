"""Where things live on disk; each can be moved by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """Shipped models (``$SSL_VIZ_MODELS``, default ``models/`` in the repository)."""
    return Path(os.environ.get("SSL_VIZ_MODELS", REPO_ROOT / "models"))


def runs_dir() -> Path:
    """Training runs (``$SSL_VIZ_RUNS``, default ``runs/`` in the repository)."""
    return Path(os.environ.get("SSL_VIZ_RUNS", REPO_ROOT / "runs"))


def cache_dir() -> Path:
    """Derived data: embeddings, projections (``$SSL_VIZ_CACHE``, default ``~/.cache/ssl_viz``)."""
    return Path(os.environ.get("SSL_VIZ_CACHE", Path.home() / ".cache" / "ssl_viz"))


def uploads_dir() -> Path:
    """Uploaded files (``$SSL_VIZ_UPLOADS``, default ``<cache>/uploads``)."""
    return Path(os.environ.get("SSL_VIZ_UPLOADS", cache_dir() / "uploads"))
