"""A real browser visits every page of the running app (Debian chromium, driven by playwright).

Starts the app as ``make run`` does (``python -m ssl_viz.ui.serve``) on a free loopback port with the default
workspace, opens each page, waits for the run to finish and asserts no
``stException``. It skips only when no chromium exists; with
``SSL_VIZ_REQUIRE_BROWSER=1`` (CI) a missing browser fails instead.
Screenshots go to ``$SSL_VIZ_SCREENSHOTS`` when set (``docs/screenshots``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench.browser_render import FLAGS
from bench.browser_render import pages as page_paths

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.setdefault("SSL_VIZ_RUNS", str(tmp_path_factory.mktemp("runs")))
    log = open(tmp_path_factory.mktemp("log") / "streamlit.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ssl_viz.ui.serve", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy in 90 s")
    yield url
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


SPINNER = '[data-testid="stSpinner"]'
# elements a page must show once it is idle (page path -> data-testids)
PAGE_ELEMENTS = {
    "diagnose": ("stPlotlyChart", "stDataFrame", "stCode", "stImage"),  # dose-response, summary, recommended spec, strips
}
IDLE_STATES = {"notRunning", "initial"}


def wait_until_idle(page, quiet_s: float = 2.5, timeout_s: float = 300.0) -> None:
    """Wait until the script has stopped running (the app's ``data-test-script-state``) for ``quiet_s`` in a row.

    The status widget is hidden in the minimal toolbar mode and appears only some time after a run starts,
    so a single "detached" check can pass while a page is still computing.
    """
    deadline, quiet_since = time.time() + timeout_s, None
    while time.time() < deadline:
        state = page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if state not in IDLE_STATES or page.locator(SPINNER).count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= quiet_s:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"page still running after {timeout_s:.0f} s")


def require_chromium() -> None:
    """Skip without chromium; with ``SSL_VIZ_REQUIRE_BROWSER=1`` (CI) fail instead."""
    if CHROMIUM is None:
        if os.environ.get("SSL_VIZ_REQUIRE_BROWSER"):
            pytest.fail("no chromium found; install it: sudo apt-get install chromium")
        pytest.skip("no chromium found (sudo apt-get install chromium); the real-browser test did not run")


def test_every_page_renders_without_exception(server):
    require_chromium()
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("SSL_VIZ_SCREENSHOTS")
    timings = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800 if shots else 1000})
        for title, path in page_paths():
            start = time.perf_counter()
            page.goto(f"{server}/{path}", timeout=120_000)
            page.wait_for_selector('[data-testid="stApp"]', timeout=120_000)
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=300_000)  # every page starts with st.title
            wait_until_idle(page)
            timings[title] = time.perf_counter() - start
            errors = page.locator('[data-testid="stException"]')
            assert errors.count() == 0, f"{title}: {errors.first.inner_text()[:800]}"
            assert page.locator('[data-testid="stMain"]').inner_text().strip(), f"{title} is empty"
            for testid in PAGE_ELEMENTS.get(path, ()):
                assert page.locator(f'[data-testid="{testid}"]').count(), f"{title}: no {testid}"
            if shots:
                Path(shots).mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(800)
                page.screenshot(path=str(Path(shots) / f"{path or 'home'}.png"), full_page=True)
        browser.close()
    print("\npage render times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def _hover_until_tooltip_image(page, canvas, step: int = 12):
    """Move the mouse over the map's canvas on a grid until vega's tooltip shows an image; returns (x, y, src)."""
    box = canvas.bounding_box()
    tooltip_img = page.locator("#vg-tooltip-element img")
    for fy in range(step // 2, 100, 100 // step):
        for fx in range(step // 2, 100, 100 // step):
            x, y = box["x"] + box["width"] * fx / 100 * 0.8 + box["width"] * 0.05, box["y"] + box["height"] * fy / 100
            page.mouse.move(x, y)
            page.wait_for_timeout(60)
            if tooltip_img.count() and page.locator("#vg-tooltip-element.visible").count():
                return x, y, tooltip_img.first.get_attribute("src")
    raise AssertionError("no point of the map showed an image in its tooltip")


def test_embedding_explorer_in_the_browser(server):
    """A link restores the page's settings; hovering a point shows its image; clicking it shows its neighbours."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    shots = os.environ.get("SSL_VIZ_SCREENSHOTS")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(f"{server}/embeddings?emb_method=PCA&emb_n=1000&emb_knn=6&emb_color=label", timeout=120_000)
        page.wait_for_selector('[data-testid="stMain"] h1', timeout=300_000)
        wait_until_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        main = page.locator('[data-testid="stMain"]')
        # the link's settings are restored: PCA, 1,000 points (and they stay in the URL)
        text = main.inner_text()
        assert "PCA settings" in text and "Download the 1,000 embeddings" in text, text[:2000]
        assert "emb_method=PCA" in page.url and "emb_n=1000" in page.url
        canvas = main.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg.marks').first
        canvas.wait_for(timeout=60_000)
        x, y, src = _hover_until_tooltip_image(page, canvas)
        assert src.startswith("data:image/png;base64,")
        if shots:
            page.screenshot(path=str(Path(shots) / "embeddings_hover.png"))
        page.mouse.click(x, y)
        page.wait_for_timeout(500)
        wait_until_idle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        heading = main.locator("h3", has_text="nearest neighbours")
        heading.wait_for(timeout=60_000)
        assert "6 nearest neighbours" in heading.inner_text()
        strip = main.locator('[data-testid="stImage"]')
        assert strip.count() >= 7  # the focus and its 6 neighbours
        assert "emb_focus=" in page.url  # the focus is part of the link too
        if shots:
            heading.scroll_into_view_if_needed()
            page.screenshot(path=str(Path(shots) / "embeddings_neighbours.png"), full_page=True)
        # two encoders on one map, from a link: the supervised model beside the workspace's, the focus in both
        supervised = ROOT / "models" / "supervised-fashion-mnist"
        from ssl_viz.ui.workspace import fashion_mnist_available

        if supervised.exists() and fashion_mnist_available():  # the default workspace is the shipped SimCLR on Fashion-MNIST
            page.goto(f"{server}/embeddings?emb_method=PCA&emb_n=1000&emb_focus=5&emb_compare={supervised}", timeout=120_000)
            page.wait_for_selector('[data-testid="stMain"] h1', timeout=300_000)
            wait_until_idle(page)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert main.locator('[data-testid="stVegaLiteChart"]').count() == 2
            assert "shared" in main.inner_text()  # the focus's neighbours under both encoders, and how many they share
            if shots:
                page.screenshot(path=str(Path(shots) / "embeddings_two_encoders.png"), full_page=True)
        browser.close()
