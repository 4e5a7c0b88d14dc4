"""The web demo, end to end: the page served on localhost, driven by gradio_client and by a real browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client", reason="the app extra (gradio) is not installed")

from tests.app.server import FRAMES_INPUT, demo_request, free_port, start_app  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
APP_LOG = ARTIFACTS / "app.log"  # the server's output, read by the tests while it runs
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    ARTIFACTS.mkdir(exist_ok=True)
    proc = start_app(port, env, log=APP_LOG)
    url = f"http://127.0.0.1:{port}/"
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_concurrent_clients_each_get_their_own_result(app_url):
    client = gradio_client.Client(app_url, verbose=False)
    with ThreadPoolExecutor(2) as pool:
        futures = {seed: pool.submit(client.predict, *demo_request(seed), api_name="/generate") for seed in (11, 12)}
        results = {seed: f.result(timeout=600) for seed, f in futures.items()}
    for seed, (status, dense, sparse, markdown, _bars, layout, numbers) in results.items():
        assert numbers["seed"] == seed and numbers["frames"] == 9 and numbers["size"] == "128x128"
        assert "Speedup" in markdown and numbers["speedup"] > 0 and 0 < numbers["density"] <= 1
        for video in (dense, sparse):
            path = video["video"] if isinstance(video, dict) else video
            assert Path(path).is_file() and Path(path).stat().st_size > 0
    a, b = (Path(results[s][1]["video"] if isinstance(results[s][1], dict) else results[s][1]).read_bytes()
            for s in (11, 12))
    assert a != b  # different seeds, different dense videos: no mixed-up results


def test_out_of_range_input_is_a_readable_message(app_url):
    client = gradio_client.Client(app_url, verbose=False)
    bad = demo_request(1)
    bad[FRAMES_INPUT] = 10  # frames must be 4k+1
    with pytest.raises(Exception, match="4k\\+1"):
        client.predict(*bad, api_name="/generate")


def _set_number(page, label: str, value: int) -> None:
    box = page.get_by_label(f"number input for {label}")
    box.fill(str(value))
    box.press("Enter")


# records the label of every progress bar the page shows (one may come and go between two polls)
RECORD_PROGRESS = """() => { window.progressSeen = new Set();
  new MutationObserver(() => document.querySelectorAll('[role=progressbar]').forEach(
      bar => window.progressSeen.add(bar.getAttribute('aria-label'))))
    .observe(document.body, {subtree: true, childList: true, attributes: true}); }"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_browser_on_a_laptop_screen(app_url):
    """At 1366x768: the legend and only the chosen method's knobs; a tab closed mid-generation frees the model
    at its next step; Generate brings the labelled progress and then both videos and the metrics into view; an
    input mistake clears the old result and logs no traceback."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    laptop = {"width": 1366, "height": 768}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport=laptop)
            page.goto(app_url, wait_until="networkidle")
            assert page.get_by_text("Legend", exact=True).is_visible()
            assert page.get_by_text("skipped block").is_visible() and page.get_by_text("computed block").is_visible()
            assert page.get_by_text("radial: decay factor").is_visible()
            assert not page.get_by_text("grat: mode").is_visible()
            page.get_by_label("Method").click()
            page.get_by_role("option", name="grat").click()
            page.get_by_text("grat: mode").wait_for(timeout=10_000)
            assert not page.get_by_text("radial: decay factor").is_visible()
            page.get_by_label("Method").click()
            page.get_by_role("option", name="radial").click()

            # the page's largest request, abandoned as soon as it runs: it must not hold the model
            leaver = browser.new_page(viewport=laptop)
            leaver.goto(app_url, wait_until="networkidle")
            for label, value in (("Frames", 33), ("Steps", 30), ("Height", 256), ("Width", 256)):
                _set_number(leaver, label, value)
            leaver.get_by_role("button", name="Generate").click()
            leaver.get_by_role("progressbar", name="dense (stock attention)").wait_for(timeout=120_000)
            leaver.close()

            page.evaluate(RECORD_PROGRESS)
            _set_number(page, "Steps", 8)
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("PSNR vs dense").wait_for(timeout=300_000)
            page.locator("video").nth(1).wait_for(timeout=60_000)
            seen = set(page.evaluate("[...window.progressSeen]"))
            assert {"dense (stock attention)", "sparse (radial)"} <= seen, seen
            page.screenshot(path=str(ARTIFACTS / "app.png"))
            for result in (page.locator("video").nth(0), page.locator("video").nth(1),
                           page.get_by_text("Speedup", exact=True), page.get_by_text("Entropy scaling", exact=True)):
                box = result.bounding_box()
                assert box is not None and 0 <= box["y"] and box["y"] + box["height"] <= laptop["height"], box
            assert page.get_by_text("17 frames, 128x128, 8 steps, seed 0").is_visible()
            # why the speedup is what it is: attention dense -> sparse, its share, the bound, and the time bars
            assert page.get_by_text("Attention", exact=True).is_visible()
            assert page.get_by_text(re.compile(r"s → .* s \(\d+\.\d\dx\), \d+% of the dense run")).is_visible()
            assert page.get_by_text("with a perfect kernel at this density").is_visible()
            bars = page.locator(".time-bars")
            assert bars.is_visible() and bars.locator("span[title^='attention']").count() == 2

            page.get_by_label("Seed (a whole number from 0 to 2⁶⁴−1)").fill("12abc")
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("seed must be a whole number from 0 to 2**64 - 1, got '12abc'").first.wait_for(
                timeout=60_000)
            assert page.get_by_text("PSNR vs dense").count() == 0 and page.locator("video").count() == 0
        finally:
            browser.close()
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000
    log = APP_LOG.read_text()
    assert re.search(r"fastdit app: stopped dense at step \d+ of 30: its client left", log), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
