"""Headless Chromium publishes its fake camera over WHIP from /publish/demo; HLS plays."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM_ARGS
from benchmarks.harness.whip_client import fetch_and_decode

from .test_whip import start_origin, until

playwright_api = pytest.importorskip("playwright.async_api")
CHROMIUM = shutil.which("chromium")
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
]
FAKE_MEDIA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + FAKE_MEDIA)
        yield b
        await b.close()


async def test_browser_goes_live_over_whip(tmp_path: Path, browser) -> None:
    origin = await start_origin(tmp_path)
    server = origin.server
    try:
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(f"{origin.http}/publish/demo")
        await page.fill("#key", "not-the-key")
        await page.click("#go")
        await page.wait_for_function("window.shopcastPublish.state === 'error'", timeout=15_000)
        assert "401" in await page.text_content("#state")

        await page.fill("#key", await origin.key())
        await page.click("#go")
        await page.wait_for_function("window.shopcastPublish.state === 'live'", timeout=20_000)
        codec = await page.evaluate("window.shopcastPublish.codec")
        assert codec in ("H264", "VP8")
        async with aiohttp.ClientSession() as http:
            decoded = await fetch_and_decode(http, origin.http, "demo", min_parts=4, timeout=30)
            assert decoded.video_frames >= 10 and decoded.audio_frames >= 5, decoded
            assert decoded.height > decoded.width  # portrait
        live = server.streams.sessions["demo"]
        assert live.publisher.protocol == "whip"
        assert live.stats.video_codec == codec.lower()

        await page.click("#stop")
        await page.wait_for_function("window.shopcastPublish.state === 'stopped'")
        await until(lambda: not server.whip.sessions and "demo" not in server.streams.sessions)
        assert errors == []
    finally:
        await server.close()
