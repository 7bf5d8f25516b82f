"""Product pins reach Shaka Player (from npm, in headless Chromium, low-latency mode) on a live
stream: every pin, the current (still open) one too, as ``metadata`` events, on both paths.

DATERANGE path: Shaka's HLS parser reports one ``metadata`` event per range attribute (the
``ID`` one names the tag), type = the range's CLASS. emsg path: Shaka parses emsg boxes in HLS
only with ``mediaSource.dispatchAllEmsgBoxes``; ID3 ones (scheme https://aomedia.org/emsg/ID3)
come out as ``metadata`` events of type ``org.id3`` (our TXXX frame holds the tag as JSON).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM
from shopcast.web import SHAKA_JS

from .conftest import (
    API_TOKEN,
    Origin,
    ffmpeg_publish_args,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_every_daterange import on_air

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not SHAKA_JS.exists(), reason="Shaka Player not installed (npm install)"),
]
PINS = 3
SPACING = 2.0  # seconds between the pins' POSTs and between their frames
PAGE = "/shaka-test.html"  # served to the browser by the test (Playwright route)
#: A viewer app on Shaka, as a shop would write it: low latency, emsg boxes dispatched, every
#: ``metadata`` event logged with the playhead at the moment it fired.
SHAKA_PAGE = """<!doctype html>
<meta charset="utf-8">
<video id="video" muted autoplay playsinline width="180" height="320"></video>
<script src="/static/shaka-player.hls.js"></script>
<script>
  window.events = [];
  window.errors = [];
  shaka.polyfill.installAll();
  const video = document.getElementById("video");
  const player = new shaka.Player();
  player.configure({
    streaming: { lowLatencyMode: true },
    mediaSource: { dispatchAllEmsgBoxes: true },
  });
  player.addEventListener("metadata", (e) => {
    const p = e.payload || {};
    window.events.push({
      type: e.metadataType, start: e.startTime, end: e.endTime, key: p.key,
      description: p.description, data: typeof p.data === "string" ? p.data : null,
      playhead: video.currentTime,
    });
  });
  player.addEventListener("error", (e) => window.errors.push(`shaka ${e.detail.code}`));
  player.attach(video)
    .then(() => player.load("/hls/demo/master.m3u8"))
    .then(() => video.play())
    .catch((e) => window.errors.push(e && e.code ? `shaka ${e.code}` : String(e)));
</script>
"""


def pins_by_path(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """(tag id, event) in arrival order for each path: a DATERANGE's ID event, an emsg's TXXX."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {"daterange": [], "emsg": []}
    for e in events:
        if e["type"] == "com.shopcast.product" and e["key"] == "ID":
            out["daterange"].append((e["data"], e))
        elif e["type"] == "org.id3" and e["description"] == "com.shopcast.tag":
            out["emsg"].append((json.loads(e["data"])["id"], e))
    return out


async def test_every_pin_reaches_shaka_once_per_path(small_origin: Origin, browser: Any) -> None:
    origin = small_origin
    publisher = await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(await origin.key()), seconds=40, size="180x320", realtime=True
        )
    )
    page = await browser.new_page(viewport={"width": 360, "height": 640})
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_TOKEN}"}) as http:
            await on_air(http, origin, "demo")
            # Shaka 4.16 cannot start on a playlist whose only segment is still open (parts,
            # no EXTINF: its MIME guess reads the segment's URI, which it does not have yet).
            for _ in range(100):
                async with http.get(f"{origin.http}/hls/demo/180p/index.m3u8") as r:
                    if "#EXTINF" in await r.text():
                        break
                await asyncio.sleep(0.1)

            async def serve_page(route: Any) -> None:
                await route.fulfill(status=200, content_type="text/html", body=SHAKA_PAGE)

            await page.route(f"{origin.http}{PAGE}", serve_page)
            await page.goto(f"{origin.http}{PAGE}")
            await page.wait_for_function(
                "document.getElementById('video').currentTime > 0.3", timeout=60_000
            )
            session = origin.server.streams.sessions["demo"]
            ids: list[str] = []
            for i in range(PINS):
                assert session.stats.newest_pts_ms is not None
                body = {
                    "kind": "product",
                    "product_id": f"sku-{i}",
                    "data": {"title": f"Item {i}"},
                    "at": round(session.stats.newest_pts_ms + SPACING * 1000),
                }
                async with http.post(f"{origin.http}/api/v1/streams/demo/tags", json=body) as r:
                    created = await r.json()
                    assert r.status == 201, created
                ids.append(created["id"])
                if i < PINS - 1:
                    await asyncio.sleep(SPACING)
        # Every pin on both paths, the last one while it is still the current (open) pin.
        await page.wait_for_function(
            """(ids) => ids.every(id => window.events.some(e =>
                 e.type === "com.shopcast.product" && e.key === "ID" && e.data === id))
               && ids.every(id => window.events.some(e =>
                 e.type === "org.id3" && e.description === "com.shopcast.tag"
                 && JSON.parse(e.data).id === id))""",
            arg=ids,
            timeout=30_000,
        )
        await asyncio.sleep(1.5)  # a few more playlist reloads: no event comes twice
        events = await page.evaluate("window.events")
        errors = await page.evaluate("window.errors")
    finally:
        await page.close()
        await stop_ffmpeg(publisher)
    assert not errors, errors
    found = pins_by_path(events)
    for path, fired in found.items():
        print(
            path, [(tag_id, round(e["start"], 3), round(e["playhead"], 3)) for tag_id, e in fired]
        )
        counts = Counter(tag_id for tag_id, _ in fired)
        assert [tag_id for tag_id, _ in fired] == ids, (path, counts)  # each once, in order
        for _, e in fired:
            # Fired when the playhead reached the tagged frame (Shaka polls the playhead
            # every quarter second), not before and not a playlist reload later.
            assert e["start"] - 0.05 <= e["playhead"] <= e["start"] + 1.0, (path, e)
    # Both paths put the same tag at the same time (to a frame).
    for (_, dr), (_, em) in zip(found["daterange"], found["emsg"], strict=True):
        assert abs(dr["start"] - em["start"]) <= 1 / 30 + 0.002, (dr, em)
