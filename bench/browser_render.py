"""Render time of every page in a real browser: a cold pass on a fresh server, then a warm pass.

    python -m bench.browser_render [--passes 2]

Starts the app as ``make run`` does on a free loopback port with the default workspace,
opens each page in headless Debian chromium and prints, per pass, the seconds from
navigation until the script has finished (the app's ``data-test-script-state`` is idle).
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pages() -> list[tuple[str, str]]:
    text = (ROOT / "app.py").read_text()
    found = re.findall(r'st\.Page\("pages/(\w+)\.py", title="([^"]+)"(.*?)\)', text)
    return [(title, "" if "default=True" in rest else name) for name, title, rest in found]


def wait_idle(page, quiet_s: float = 1.0, timeout_s: float = 300.0) -> float:
    """Seconds until the script state is idle for ``quiet_s`` (returned time excludes the quiet period)."""
    start, quiet_since = time.perf_counter(), None
    while time.perf_counter() - start < timeout_s:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        busy = state not in ("notRunning", "initial") or page.locator('[data-testid="stSpinner"]').count()
        now = time.perf_counter()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return quiet_since - start
        page.wait_for_timeout(100)
    return float("nan")


def measure(passes: int = 2) -> dict[str, list[float]]:
    """Seconds to render each page (title -> one time per pass) on one server; the first pass is cold."""
    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "ssl_viz.ui.serve", "--server.port", str(port), "--server.headless", "true"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rows: dict[str, list[float]] = {}
    try:
        for _ in range(180):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            for _ in range(passes):
                for title, path in pages():
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    page.wait_for_selector('[data-testid="stMain"] h1', timeout=300_000)
                    first = time.perf_counter() - t0
                    rows.setdefault(title, []).append(first + wait_idle(page))
                    page.close()
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passes", type=int, default=2)
    args = parser.parse_args()
    rows = measure(args.passes)
    header = "| page | " + " | ".join(["cold (s)"] + [f"warm {i} (s)" for i in range(1, args.passes)]) + " |"
    print(header)
    print("|" + "---|" * (args.passes + 1))
    for title, times in rows.items():
        print(f"| {title} | " + " | ".join(f"{t:.1f}" for t in times) + " |")


if __name__ == "__main__":
    main()
