"""Start the app: ``python -m ssl_viz.ui.serve [streamlit options]`` (what ``make run`` does).

Same as ``streamlit run app.py``, with one difference: Streamlit treats a folder
named ``pages/`` next to the entry script as a v1 multipage app until
``st.navigation`` has run once in the process, so the very first request of a
fresh server, if it is a deep link such as ``/kernels``, would run that page
without ``app.py`` (no workspace sidebar, file-name navigation). Clearing the
flag before the server starts, as ``st.navigation`` itself does, routes every
request through ``app.py`` (and so through its password form, when ``SSL_VIZ_PASSWORD`` is set).

The server process also loads UMAP in the background as it starts (:func:`preload_umap`: imports umap-learn and
runs a tiny map, reading the numba kernels that ``make run`` compiled), so the first visitor's map does not pay
for them.

Served beyond loopback (``make run HOST=0.0.0.0``, the Docker image), tracebacks are hidden from
clients (``--client.showErrorDetails=none``; the server logs them) and the log warns when no
password is set (:func:`ssl_viz.ui.access.serve_flags`).
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path

from ssl_viz.ui.access import serve_flags

APP = Path(__file__).resolve().parents[2] / "app.py"


def preload_umap() -> None:
    """Import umap-learn and run a 200-point map in this process (loads the cached numba kernels); errors are logged only."""
    try:
        import numpy as np

        from ssl_viz.analysis.projection import Projector

        Projector("umap").fit(np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32))
    except Exception as exc:  # noqa: BLE001 - a failed preload only means the first map pays for it
        logging.getLogger("ssl_viz.serve").warning("UMAP preload failed: %s", exc)


def main(argv: list[str] | None = None) -> None:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web import cli

    PagesManager.uses_pages_directory = False
    args = list(sys.argv[1:] if argv is None else argv)
    flags, warnings = serve_flags(args)
    for text in warnings:
        logging.getLogger("ssl_viz.serve").warning(text)
        print(f"WARNING: {text}", file=sys.stderr, flush=True)
    sys.argv = ["streamlit", "run", str(APP), *args, *flags]
    threading.Thread(target=preload_umap, name="umap-preload", daemon=True).start()
    sys.exit(cli.main())


if __name__ == "__main__":
    main()
