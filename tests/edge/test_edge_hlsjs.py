"""hls.js (low-latency mode) in headless Chromium plays through `shopcast edge`."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shopcast.web import HLS_JS
from tests.e2e.conftest import requires_ffmpeg, stop_ffmpeg
from tests.edge.conftest import edge_process, get_text, logged_origin, publish, wait_live

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)"),
]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    from benchmarks.harness.browser import CHROMIUM_ARGS

    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def test_hlsjs_plays_through_the_edge_at_low_latency(tmp_path: Path, browser) -> None:
    async with logged_origin(tmp_path) as origin:
        publisher = await publish(origin, 60, size="180x320")
        try:
            await wait_live(origin.http)
            async with edge_process([origin.http]) as edge:
                page = await browser.new_page()
                await page.goto(f"{edge}/demo/demo")
                await page.wait_for_function(
                    "document.getElementById('video').currentTime > 0.5", timeout=30_000
                )
                start = await page.evaluate("document.getElementById('video').currentTime")
                await asyncio.sleep(8)
                end = await page.evaluate("document.getElementById('video').currentTime")
                assert end - start >= 8 * 0.6, f"playback stalled: {start:.2f} → {end:.2f}"
                fatal = await page.evaluate("window.shopcast.errors.filter(e => e.fatal)")
                assert fatal == [], fatal
                assert await page.evaluate("hls.lowLatencyMode") is True
                latency = await page.evaluate("hls.latency")
                assert 0 < latency < 3.0, latency  # PART-HOLD-BACK is 1 s; catch-up is on
                metrics = await get_text(f"{edge}/metrics")
        finally:
            await stop_ffmpeg(publisher)
    # The player only ever talked to the edge; the edge asked the origin for each part once.
    browser_agents = {a.user_agent for a in origin.log.entries} - {"test-poll"}
    assert all(agent.startswith("shopcast-edge") for agent in browser_agents), browser_agents
    parts = [n for k, n in origin.log.counts().items() if k.endswith(".m4s")]
    assert parts and set(parts) == {1}
    assert "shopcast_edge_cache_hits_total" in metrics
