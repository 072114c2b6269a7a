"""A classroom on one server: N browser sessions navigating every page at once for several minutes.

    python -m bench.classroom [--sessions 20] [--minutes 4] [--dataset fashion-mnist]

Starts the app as ``make run`` does (the shipped model, the default dataset) on a free loopback port
with a fresh cache, then opens ``--sessions`` headless chromium contexts (one Streamlit session each)
that walk through every page in a different order, over and over, until the time is up. Each page
visit waits until the app's script state stays idle, then counts ``stException`` elements.

Prints (markdown): page visits, exceptions, p50 / p95 / max seconds per page, the server's resident
memory over time, and whether the Embeddings map was computed once for everybody: the number of
projection entries in the server's cache after the first Embeddings visit and at the end (equal
means every later session got the shared, cached map).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.browser_render import FLAGS, pages  # noqa: E402

IDLE = {"notRunning", "initial"}


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def projection_entries(cache: Path) -> int:
    """How many projections the server has computed into its on-disk cache."""
    folder = cache / "projections"
    return len(list(folder.glob("*.npz"))) if folder.is_dir() else 0


async def wait_idle(page, quiet_s: float = 1.0, timeout_s: float = 600.0) -> float:
    """Seconds until the script state has been idle for ``quiet_s`` (the quiet period excluded)."""
    start, quiet_since = time.perf_counter(), None
    while time.perf_counter() - start < timeout_s:
        state = await page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        busy = state not in IDLE or await page.locator('[data-testid="stSpinner"]').count()
        now = time.perf_counter()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= quiet_s:
            return quiet_since - start
        await asyncio.sleep(0.2)
    return float("nan")


async def session(browser, url: str, order: list[tuple[str, str]], deadline: float, log: list, first_embeddings: dict, cache: Path) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    try:
        while time.time() < deadline:
            for title, path in order:
                if time.time() >= deadline:
                    break
                t0 = time.perf_counter()
                try:
                    await page.goto(f"{url}/{path}", timeout=600_000)
                    await page.wait_for_selector('[data-testid="stMain"] h1', timeout=600_000)
                    seconds = time.perf_counter() - t0 + await wait_idle(page)
                    errors = await page.locator('[data-testid="stException"]').count()
                except Exception as exc:  # noqa: BLE001 - a timeout is a figure too
                    seconds, errors = float("nan"), 1
                    print(f"  {title}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
                log.append((title, seconds, errors, time.time()))
                if title == "Embeddings" and "entries" not in first_embeddings:
                    first_embeddings["entries"] = projection_entries(cache)
    finally:
        await context.close()


async def run(sessions: int, minutes: float, url: str, server_pid: int, cache: Path) -> dict:
    from playwright.async_api import async_playwright

    all_pages = pages()
    log: list = []
    memory: list[tuple[float, float]] = []
    first_embeddings: dict = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        start = time.time()
        deadline = start + minutes * 60
        orders = [all_pages[i % len(all_pages):] + all_pages[:i % len(all_pages)] for i in range(sessions)]

        async def sample_memory():
            while time.time() < deadline + 5:
                memory.append((time.time() - start, rss_mb(server_pid)))
                await asyncio.sleep(5)

        sampler = asyncio.create_task(sample_memory())
        await asyncio.gather(*(session(browser, url, o, deadline, log, first_embeddings, cache) for o in orders))
        sampler.cancel()
        await browser.close()
    return {"log": log, "memory": memory, "first_embeddings": first_embeddings.get("entries"), "final_entries": projection_entries(cache)}


def report(result: dict, sessions: int, minutes: float) -> str:
    log = result["log"]
    lines = [f"{sessions} sessions for {minutes:g} min: {len(log)} page visits, "
             f"{sum(e for _, _, e, _ in log)} with an exception or a timeout.", "",
             "| page | visits | p50 (s) | p95 (s) | max (s) |", "| --- | ---: | ---: | ---: | ---: |"]
    for title in dict.fromkeys(t for t, *_ in log):
        times = sorted(s for t, s, _, _ in log if t == title and s == s)
        if not times:
            continue
        p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
        lines.append(f"| {title} | {len(times)} | {statistics.median(times):.1f} | {p95:.1f} | {times[-1]:.1f} |")
    mem = result["memory"]
    if mem:
        marks = [mem[int(i * (len(mem) - 1) / 5)] for i in range(6)]
        lines += ["", "Server resident memory: " + ", ".join(f"{t:.0f} s: {m:.0f} MiB" for t, m in marks)
                  + f" (peak {max(m for _, m in mem):.0f} MiB)."]
    lines += ["", f"Projection cache entries after the first Embeddings visit: {result['first_embeddings']}; at the end: "
              f"{result['final_entries']} (equal: every later session's map came from the shared cache)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--dataset", default=None, help="workspace dataset (default: the app's default)")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = Path(tempfile.mkdtemp(prefix="ssl-viz-classroom-"))
    env = dict(os.environ, SSL_VIZ_CACHE=str(cache))
    if args.dataset:
        env["SSL_VIZ_DEFAULT_DATASET"] = args.dataset
    server = subprocess.Popen([sys.executable, "-m", "ssl_viz.ui.serve", "--server.port", str(port), "--server.headless", "true"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        result = asyncio.run(run(args.sessions, args.minutes, url, server.pid, cache))
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(report(result, args.sessions, args.minutes))


if __name__ == "__main__":
    main()
