"""Several sessions at once against one server: threads sharing one model, then real browsers.

First, without a browser: 8 threads run Grad-CAM, Integrated Gradients and feature-map capture on one shared
model at the same time (as 8 Streamlit sessions do on the Attention and Feature maps pages) and must get exactly
what one thread alone gets.

Then several browser sessions at once against one server (Debian chromium driven by playwright, async).

Five browser contexts (five Streamlit sessions) each visit three pages through the app's own
navigation, pick a different "Embedding" in the shared sidebar and a different "Pixels per filter"
on the Kernels page. Asserts: no ``stException`` anywhere, every session still shows its own
choices after all the others made theirs (no cross-talk of state), and the server's resident memory
stays bounded. Prints the figures (``pytest -s``).

Uses the small default workspace (a tiny untrained model, digits) to stay fast. Skips only when no
chromium exists; with ``SSL_VIZ_REQUIRE_BROWSER=1`` a missing browser fails instead.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SPINNER = '[data-testid="stSpinner"]'
IDLE_STATES = {"notRunning", "initial"}
PAGE_TIMEOUT_S = 90.0
# session -> the pages it visits (nav titles); every session ends on Kernels, where it sets its own slider value
PLANS = [
    ["Overview", "Pairs & negatives", "Kernels"],
    ["Pairs & negatives", "Feature maps", "Kernels"],
    ["Feature maps", "Overview", "Kernels"],
    ["Retrieval", "Overview", "Kernels"],
    ["Overview", "Retrieval", "Kernels"],
]
URL_PATHS = {"Overview": "", "Pairs & negatives": "pairs", "Feature maps": "feature_maps", "Retrieval": "retrieval", "Kernels": "kernels"}
EMBEDDINGS = ["backbone", "projector", "stage:block1", "stage:block2", "stage:block3"]  # one per session (tiny small-cnn)
MAX_RSS_MB = 2500  # the whole server: torch, plotly, the pages' libraries, five sessions on the tiny workspace
MAX_WAVE_GROWTH_MB = 300  # five more sessions once everything is imported and cached: a per-session leak shows here


# ----------------------------------------------------------------------------- threads sharing one model

N_THREADS = 8
ROUNDS = 3


def _model_views(model, x, reference):
    """What the Attention and Feature maps pages compute for one image, as numpy arrays."""
    from ssl_viz.analysis.attribution import explain_image
    from ssl_viz.analysis.feature_maps import capture_feature_maps

    out = {
        "gradcam view": explain_image(model, x, "view", "gradcam").maps["gradcam"],
        "gradcam image, block2": explain_image(model, x, "image", "gradcam", reference=reference,
                                               layer_name="body.block2.0").maps["gradcam"],
        "integrated gradients": explain_image(model, x, "image", "integrated_gradients", reference=reference, n_steps=8)
        .maps["integrated_gradients"],
    }
    maps = capture_feature_maps(model.encoder, x, ["body.block1", "body.block3"])
    out.update({f"feature map {k}": v.numpy() for k, v in maps.items()})
    return out


def test_attribution_and_feature_maps_are_safe_under_concurrency(tiny_model_dir):
    """8 threads x 3 rounds of Grad-CAM / Integrated Gradients / feature maps on one shared model: every result equals
    the single-threaded one (before: "The differentiated Tensor ... appears to not have been used in the graph")."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from ssl_viz.checkpoint import load_model
    from ssl_viz.data import load_dataset

    model = load_model(tiny_model_dir)
    ds = load_dataset("digits", "test")
    images = [ds.float_images(slice(i, i + 1)) for i in range(N_THREADS)]
    reference = ds.float_images(slice(100, 101))
    alone = [_model_views(model, x, reference) for x in images]
    start = threading.Barrier(N_THREADS)

    def session(i: int):
        start.wait()
        return [_model_views(model, images[i], reference) for _ in range(ROUNDS)]

    with ThreadPoolExecutor(N_THREADS) as pool:
        together = list(pool.map(session, range(N_THREADS)))
    for i, rounds in enumerate(together):
        for got in rounds:
            for name, want in alone[i].items():
                np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6, err_msg=f"thread {i}: {name}")
    assert not any(m._forward_hooks for m in model.encoder.modules())  # no hook outlives a call
    assert not model.encoder.training and not any(p.requires_grad for p in model.encoder.parameters())


def test_grad_cam_equals_captums_layer_grad_cam(tiny_model_dir):
    """The per-call-hook Grad-CAM gives captum's LayerGradCam numbers (same equation), with and without the ReLU."""
    import torch
    from captum.attr import LayerGradCam

    from ssl_viz.analysis.attribution import SimilarityTarget, grad_cam
    from ssl_viz.checkpoint import load_model
    from ssl_viz.data import load_dataset

    model = load_model(tiny_model_dir)
    ds = load_dataset("digits", "test")
    target = SimilarityTarget(model.encoder, model.encoder(ds.float_images(slice(5, 6)))[0].detach())
    x = ds.float_images(slice(0, 1)).requires_grad_(True)
    for name in ("body.block2.0", "body.block3.0"):
        layer = dict(model.encoder.named_modules())[name]
        for relu in (True, False):
            want = LayerGradCam(target, layer).attribute(x, relu_attributions=relu)
            torch.testing.assert_close(grad_cam(target, x, layer, relu=relu), want, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- browsers


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MB (psutil when installed, else /proc)."""
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``every`` seconds; ``peak`` is the largest seen."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self._stop_event = pid, every, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self._stop_event.wait(self.every)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(tiny_model_dir, tmp_path):
    """``python -m ssl_viz.ui.serve`` on a free loopback port with the tiny default workspace; yields (url, pid)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SSL_VIZ_DEFAULT_MODEL": str(tiny_model_dir), "SSL_VIZ_DEFAULT_DATASET": "digits",
           "SSL_VIZ_MODELS": str(tiny_model_dir.parent), "SSL_VIZ_RUNS": str(tmp_path / "runs"), "SSL_VIZ_CACHE": str(tmp_path / "cache")}
    log_path = tmp_path / "streamlit.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ssl_viz.ui.serve", "--server.port", str(port), "--server.address", "127.0.0.1",
                                 "--server.headless", "true"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                break
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"streamlit did not become healthy in 60 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.3)
    yield url, proc.pid
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_until_idle(page, quiet_s: float = 2.0, timeout_s: float = PAGE_TIMEOUT_S) -> None:
    """Wait for the page's title, then until the script has stopped (no spinner) for ``quiet_s`` in a row."""
    await page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_s * 1000)
    deadline, quiet_since = time.time() + timeout_s, None
    while time.time() < deadline:
        state = await page.locator('[data-testid="stApp"]').get_attribute("data-test-script-state")
        if state not in IDLE_STATES or await page.locator(SPINNER).count():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since >= quiet_s:
            return
        await page.wait_for_timeout(200)
    raise AssertionError(f"page still running after {timeout_s:.0f} s")


async def assert_no_exception(page, where: str) -> None:
    errors = page.locator('[data-testid="stException"]')
    if await errors.count():
        raise AssertionError(f"{where}: {(await errors.first.inner_text())[:800]}")


def sidebar_select(page, label: str):
    """The combobox input of a sidebar selectbox (its ``value`` is the current choice)."""
    return page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').filter(has_text=label).locator('input[role="combobox"]')


async def choose(page, label: str, option: str) -> None:
    await sidebar_select(page, label).click()
    await page.get_by_role("option", name=option, exact=True).click()


async def selected(page, label: str) -> str:
    return await sidebar_select(page, label).input_value()


def slider(page, label: str):
    """The range input of a slider (keyboard-operable; its ``value`` is the current value)."""
    return page.locator('[data-testid="stSlider"]').filter(has_text=label).locator('input[type="range"]')


async def slider_value(page, label: str) -> float:
    return float(await slider(page, label).input_value())


async def session(browser, url: str, i: int, barrier: asyncio.Event, arrived: list, log: dict) -> None:
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    plan, visits = PLANS[i], []
    try:
        for step, title in enumerate(plan):
            start = time.perf_counter()
            if step == 0:
                await page.goto(f"{url}/{URL_PATHS[title]}", timeout=PAGE_TIMEOUT_S * 1000)
            else:  # the app's own navigation keeps the session (a reload would start a new one)
                await page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
            await wait_until_idle(page)
            await assert_no_exception(page, f"session {i}, {title}")
            assert (await page.locator('[data-testid="stMain"] h1').first.inner_text()).strip(), title
            if step == 0:  # a workspace choice in the shared sidebar: kept across pages, private to this session
                await choose(page, "Embedding", EMBEDDINGS[i])
                await wait_until_idle(page)
                await assert_no_exception(page, f"session {i}, {title} after choosing {EMBEDDINGS[i]}")
            assert await selected(page, "Embedding") == EMBEDDINGS[i], f"session {i} lost its embedding on {title}"
            visits.append((title, time.perf_counter() - start))
        thumb = slider(page, "Pixels per filter")
        assert await slider_value(page, "Pixels per filter") == 48  # the default, whatever the others did
        await thumb.focus()
        for _ in range(i + 1):
            await page.keyboard.press("ArrowRight")
        await page.wait_for_timeout(300)
        await wait_until_idle(page)
        await assert_no_exception(page, f"session {i}, Kernels after the slider")
        assert await slider_value(page, "Pixels per filter") == 48 + 4 * (i + 1)
        arrived.append(i)
        if len(arrived) == len(PLANS):
            barrier.set()
        await asyncio.wait_for(barrier.wait(), timeout=PAGE_TIMEOUT_S)
        # everyone has made their choices: each session still sees only its own
        await page.wait_for_timeout(500)
        assert await slider_value(page, "Pixels per filter") == 48 + 4 * (i + 1), f"session {i}: slider changed by another session"
        assert await selected(page, "Embedding") == EMBEDDINGS[i], f"session {i}: embedding changed by another session"
        await assert_no_exception(page, f"session {i}, end")
        log[i] = visits
    finally:
        await context.close()


async def fresh_session(browser, url: str, i: int) -> float:
    """A new session opens Kernels: it sees the defaults, not what the first wave chose."""
    context = await browser.new_context(viewport={"width": 1300, "height": 900})
    page = await context.new_page()
    try:
        start = time.perf_counter()
        await page.goto(f"{url}/kernels", timeout=PAGE_TIMEOUT_S * 1000)
        await wait_until_idle(page)
        await assert_no_exception(page, f"fresh session {i}")
        assert await slider_value(page, "Pixels per filter") == 48, f"fresh session {i} inherited a slider value"
        assert await selected(page, "Embedding") == "backbone", f"fresh session {i} inherited an embedding"
        return time.perf_counter() - start
    finally:
        await context.close()


async def drive(url: str, pid: int) -> dict:
    """Wave 1: the five planned sessions at once. Wave 2: five fresh sessions at once (defaults, memory)."""
    from playwright.async_api import async_playwright

    log: dict = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            barrier, arrived = asyncio.Event(), []
            results = await asyncio.gather(*(session(browser, url, i, barrier, arrived, log) for i in range(len(PLANS))),
                                           return_exceptions=True)
            barrier.set()
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            await asyncio.sleep(1.0)
            log["rss_after_wave1"] = rss_mb(pid)
            log["wave2"] = await asyncio.gather(*(fresh_session(browser, url, i) for i in range(len(PLANS))))
            await asyncio.sleep(1.0)
            log["rss_after_wave2"] = rss_mb(pid)
        finally:
            await browser.close()
    return log


def test_five_concurrent_sessions(server):
    if CHROMIUM is None:
        if os.environ.get("SSL_VIZ_REQUIRE_BROWSER"):
            pytest.fail("no chromium found; install it: sudo apt-get install chromium")
        pytest.skip("no chromium found (sudo apt-get install chromium); the concurrency test did not run")
    url, pid = server
    before = rss_mb(pid)
    sampler = RssSampler(pid)
    sampler.start()
    start = time.perf_counter()
    try:
        log = asyncio.run(asyncio.wait_for(drive(url, pid), timeout=150))
    finally:
        peak = sampler.stop()
    wall = time.perf_counter() - start
    wave1, wave2 = log["rss_after_wave1"], log["rss_after_wave2"]
    loads = [t for i in range(len(PLANS)) for _, t in log[i]]
    print(f"\nconcurrency: wave 1: {len(PLANS)} sessions at once, {len(loads)} page views over {len(URL_PATHS)} different pages, "
          f"each choosing its own embedding and slider value; wave 2: {len(log['wave2'])} fresh sessions at once (defaults seen); "
          f"wall {wall:.1f} s; page view median {sorted(loads)[len(loads) // 2]:.1f} s, max {max(loads + log['wave2']):.1f} s; "
          f"server RSS before {before:.0f} MB (nothing imported yet), after wave 1 {wave1:.0f} MB, after wave 2 {wave2:.0f} MB, "
          f"peak {peak:.0f} MB")
    assert peak < MAX_RSS_MB, f"server memory peaked at {peak:.0f} MB"
    assert wave2 - wave1 < MAX_WAVE_GROWTH_MB, f"five more sessions grew the server by {wave2 - wave1:.0f} MB"
