"""The web demo, end to end: the page served on localhost, driven by gradio_client and by a real browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client", reason="the app extra (gradio) is not installed")

from tests.app.server import demo_request, free_port, start_app  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = start_app(port, env)
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
    for seed, (status, dense, sparse, markdown, layout, numbers) in results.items():
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
    bad[9] = 10  # frames must be 4k+1
    with pytest.raises(Exception, match="4k\\+1"):
        client.predict(*bad, api_name="/generate")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_a_browser_generates_and_sees_both_videos_and_the_metrics(app_url):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright for Python is not installed")
    ARTIFACTS.mkdir(exist_ok=True)
    args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(app_url, wait_until="networkidle")
            prompt = page.get_by_role("textbox", name="Prompt", exact=True)
            prompt.fill("a red ball bouncing in a white room")
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("PSNR vs dense").wait_for(timeout=300_000)
            page.locator("video").nth(1).wait_for(timeout=60_000)
            assert page.locator("video").count() >= 2
            assert page.get_by_text("Speedup", exact=True).first.is_visible()
            page.screenshot(path=str(ARTIFACTS / "app.png"), full_page=True)
        finally:
            browser.close()
    assert (ARTIFACTS / "app.png").stat().st_size > 10_000
