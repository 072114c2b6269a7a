"""What the standard-format readers (:mod:`~ssl_viz.data.cifar`, :mod:`~ssl_viz.data.stl10`) share.

A standard dataset is named ``NAME`` (looked for in the default places) or ``NAME:PATH``, where
PATH is the dataset's own folder (``cifar-10-batches-py``, ``cifar-100-python``, ``stl10_binary``,
under any name) or a folder holding it, as torchvision lays them out. The default places, in order:
``$SSL_VIZ_DATA``, the cache (``$SSL_VIZ_CACHE``, default ``~/.cache/ssl_viz``), ``~/.cache/ssl_viz``.

A folder that lacks what is expected is one sentence (:class:`~ssl_viz.data.base.DatasetError`)
naming the files expected and where. torchvision's downloader is used only where the network
answers (a 3-second connection test first), so an offline machine fails fast instead of hanging.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from ssl_viz.data.base import DatasetError
from ssl_viz.paths import cache_dir


def default_roots() -> list[Path]:
    """Folders searched for a dataset's own folder when no PATH is named (duplicates removed, in order)."""
    roots = [Path(os.environ["SSL_VIZ_DATA"]).expanduser()] if os.environ.get("SSL_VIZ_DATA") else []
    roots += [cache_dir().expanduser(), Path.home() / ".cache" / "ssl_viz"]
    return list(dict.fromkeys(roots))


def _holds(folder: Path, files: list[str]) -> bool:
    return folder.is_dir() and all((folder / f).is_file() for f in files)


def locate(name: str, path: str | Path | None, base_folder: str, files: list[str]) -> Path | None:
    """The folder holding every one of ``files``: PATH itself or ``PATH/base_folder``.

    Args:
        name: the dataset's registry name, for the message (``"cifar10"``).
        path: the PATH of ``NAME:PATH``; None searches :func:`default_roots` for ``base_folder``.
        base_folder: the folder's name as torchvision lays it out (``"cifar-10-batches-py"``).
        files: file names that must all be in the folder.

    Returns:
        The folder, or None when ``path`` is None and no default place holds it.

    Raises:
        DatasetError: ``path`` is given and neither it nor ``path/base_folder`` holds the files
            (the message names the first file missing and where it was looked for).
    """
    if path is None:
        return next((r / base_folder for r in default_roots() if _holds(r / base_folder, files)), None)
    path = Path(path).expanduser()
    for folder in (path, path / base_folder):
        if _holds(folder, files):
            return folder
    if not path.exists():
        raise DatasetError(f"{name}:{path}: no such folder; expected {base_folder} ({', '.join(files)}) there or inside it")
    folder = path / base_folder if (path / base_folder).is_dir() else path
    missing = next(f for f in files if not (folder / f).is_file())
    raise DatasetError(f"{name}:{path}: {folder} has no {missing}; expected the folder {base_folder} "
                       f"({', '.join(files)}) at {path} or inside it")


def network_allows(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds (False offline)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def try_download(host: str, fetch: Callable[[], object], timeout: float = 20.0, port: int = 443) -> bool:
    """Run ``fetch`` (a torchvision ``download=True`` constructor) only if ``host:port`` answers; True on success.

    Every socket gets ``timeout`` seconds meanwhile, so a network that drops mid-way fails instead of hanging.
    """
    if not network_allows(host, port):
        return False
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        fetch()
        return True
    except Exception:  # noqa: BLE001 - any network / IO / checksum failure means "not available"
        return False
    finally:
        socket.setdefaulttimeout(previous)
