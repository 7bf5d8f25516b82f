"""hls.js (low-latency mode) in headless Chromium plays what an ffmpeg RTMP publish becomes."""

from __future__ import annotations

import asyncio
import os

import pytest

from benchmarks.harness.browser import CHROMIUM
from shopcast.web import HLS_JS

from .conftest import Origin, ffmpeg_publish_args, requires_ffmpeg

playwright_api = pytest.importorskip("playwright.async_api")
SCREENSHOT = os.environ.get("SHOPCAST_E2E_SCREENSHOT")  # where to save a picture of the player
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)"),
]


async def start_publisher(origin: Origin, seconds: float) -> asyncio.subprocess.Process:
    args = ffmpeg_publish_args(
        origin.rtmp_url(await origin.key()), seconds=seconds, size="360x640", realtime=True
    )
    return await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )


async def current_time(page) -> float:
    return float(await page.evaluate("document.getElementById('video').currentTime"))


async def assert_advancing(page, seconds: float) -> None:
    """Playback moves forward for ``seconds`` with no fatal hls.js error."""
    start = await current_time(page)
    await asyncio.sleep(seconds)
    end = await current_time(page)
    assert end - start >= seconds * 0.6, f"playback stalled: {start:.2f} → {end:.2f}"
    fatal = await page.evaluate("window.shopcast.errors.filter(e => e.fatal)")
    assert fatal == [], fatal


async def test_hlsjs_plays_switches_and_survives_reconnect(origin: Origin, browser) -> None:
    publisher = await start_publisher(origin, 60)
    try:
        page = await browser.new_page()
        await page.goto(f"{origin.http}/demo/demo")
        await page.wait_for_function(
            "document.getElementById('video').currentTime > 0.5", timeout=30_000
        )
        levels = await page.evaluate("hls.levels.map(l => l.height)")
        assert sorted(levels) == [320, 640]
        await assert_advancing(page, 10)
        assert await page.evaluate("hls.lowLatencyMode") is True

        # A forced switch between the two renditions, without a stall.
        current = await page.evaluate("hls.currentLevel")
        target = 1 - current if current in (0, 1) else 0
        await page.evaluate(f"hls.currentLevel = {target}")
        await page.wait_for_function(
            f"window.shopcast.levelSwitches.includes({target})", timeout=15_000
        )
        await assert_advancing(page, 4)

        # The publisher drops and comes back: the same player keeps going, no reload.
        publisher.kill()
        await publisher.wait()
        await asyncio.sleep(1.5)
        publisher = await start_publisher(origin, 60)
        await asyncio.sleep(6)
        await assert_advancing(page, 5)
        if SCREENSHOT:
            await page.screenshot(path=SCREENSHOT)
        assert await page.evaluate("!!window.hls && window.hls.media !== null")
        playlist = await page.evaluate("fetch('/hls/demo/180p/index.m3u8').then(r => r.text())")
        assert "#EXT-X-DISCONTINUITY" in playlist
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
