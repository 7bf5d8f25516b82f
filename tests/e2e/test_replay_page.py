"""The replay shop page: a real ffmpeg show with product tags, recorded, then played back as VOD by
hls.js in headless Chromium on ``/replay/<recording_id>``.

The published frames carry their number as a barcode (tests/e2e/barcode.py). On the replay the
cards must light on the tagged frames exactly as they did live (the probe reads the frame on
screen in the same video frame callback as the fire, see test_shop_sync.py), each chapter must
seek to its product's frame, and buy clicks must be counted as ``replay`` (``live`` on the live
page) in the store, the tags API and the metrics.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.harness.browser import CHROMIUM
from packager import access
from shopcast.api import PUBLIC_TAG_FIELDS
from shopcast.config import PackagerSection, PlaybackSection
from shopcast.server import ShopcastServer
from shopcast.web import HLS_JS
from transcode.policy import LadderConfig

from . import barcode
from .conftest import API_TOKEN, Origin, make_config, requires_ffmpeg
from .test_replay import flv, publish, wait_recording
from .test_shop_sync import Fire, analyse, open_shop

pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not installed (npm install)"),
]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SECONDS = 12  # of published video
#: Seconds after the newest ingested frame (when the tags are posted) of each product's frame.
AHEAD = (1.5, 3.5, 5.5)
#: Smoke size: one 180×320 rung (the barcode reads at 180p, see barcode.py).
LADDER = LadderConfig.from_mapping({"rungs": ["180p:200k"]})
#: A title that would be markup if the page ever put tag text into innerHTML.
MARKUP = '<b class="x">Item</b> <img src=x onerror="window.pwned=1">'


@asynccontextmanager
async def replay_origin(tmp_path: Path, playback_secret: str = "") -> AsyncIterator[Origin]:
    # A short reconnect window: the show (and its recording) ends soon after ffmpeg stops.
    config = replace(
        make_config(tmp_path, LADDER),
        packager=PackagerSection(reconnect_window=1.0),
        playback=PlaybackSection(secret=playback_secret),
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


async def wait_on_air(http: aiohttp.ClientSession, base: str) -> None:
    for _ in range(300):
        async with http.get(f"{base}/hls/demo/180p/index.m3u8") as r:
            if r.status == 200 and (await r.text()).count("#EXT-X-PART:") >= 3:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the show did not go on air")


def shown_frame(rec: dict[str, Any]) -> int | None:
    """The barcode of the presented frame (the probe's reading moved back by its skew)."""
    drawn, read = rec.get("drawnTime"), rec.get("frame")
    skew = 0 if drawn is None else round((drawn - rec["mediaTime"]) * barcode.FPS)
    return read - skew if isinstance(read, int) else None


async def clicks_metric(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """``shopcast_tag_clicks_total`` of the demo stream by source, as scraped."""
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    return {
        sample.labels["source"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "shopcast_tag_clicks_total" and sample.labels["stream"] == "demo"
    }


async def test_replay_page_cards_chapters_and_clicks(tmp_path: Path, browser: Any) -> None:
    show, frames = await flv(tmp_path, SECONDS)
    async with replay_origin(tmp_path) as origin, aiohttp.ClientSession(headers=AUTH) as http:
        base = origin.http
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        try:
            await wait_on_air(http, base)
            live = await open_shop(browser, f"{base}/demo/demo")
            # Three products on frames still ahead of the newest ingested one.
            session = origin.server.streams.sessions["demo"]
            assert session.stats.newest_pts_ms is not None
            newest = round(session.stats.newest_pts_ms * barcode.FPS / 1000)
            expected: dict[str, tuple[str, int]] = {}
            titles: dict[str, str] = {}
            for n, ahead in enumerate(AHEAD):
                frame = newest + round(ahead * barcode.FPS)
                title = MARKUP if n == 1 else f"Item {n}"
                body = {
                    "kind": "product",
                    "product_id": f"sku-{n}",
                    "data": {"title": title, "price": f"{10 + n}.00", "currency": "EUR"},
                    "at": barcode.pts_ms(frame),
                }
                async with http.post(f"{base}/api/v1/streams/demo/tags", json=body) as r:
                    tag = await r.json()
                    assert r.status == 201, tag
                assert not tag["late"], tag
                expected[tag["id"]] = ("product", frame)
                titles[tag["id"]] = title
            assert max(f for _, f in expected.values()) < frames - barcode.FPS  # well in the show

            # "Buy" on the live page counts as live.
            await live.wait_for_selector("#pin:not([hidden]) .buy", timeout=20_000)
            live_tag = await live.get_attribute("#pin", "data-tag")
            await live.click("#pin .buy")
            await live.wait_for_selector("#pin .buy.done", timeout=5_000)
            await live.close()
            await asyncio.wait_for(publisher.wait(), SECONDS + 30)
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()

        recording = await wait_recording(http, base, ("ready",))
        rid = recording["id"]
        assert recording["tags"] == len(expected)

        # The page's data: the show's tags, only what the playlists already carry publicly.
        async with aiohttp.ClientSession() as viewer:
            async with viewer.get(f"{base}/replay/{rid}/data.json") as r:
                assert r.status == 200
                data = await r.json()
            for missing in (f"/replay/{'A' * 22}", f"/replay/{'A' * 22}/data.json", "/replay/x"):
                async with viewer.get(base + missing) as r:
                    assert r.status == 404, missing
        assert data["recording_id"] == rid and data["stream_id"] == "demo"
        assert [t["id"] for t in data["tags"]] == list(expected)
        for t in data["tags"]:
            # What the VOD playlist's DATERANGE already says, and the tag's thumbnail.
            assert set(t) == set(PUBLIC_TAG_FIELDS), t
            async with http.get(t["thumbnail_url"]) as r:
                assert r.status == 200 and r.content_type == "image/jpeg", t["thumbnail_url"]

        # The replay, played to the end from the start.
        requests: list[str] = []
        page = await open_shop(browser, f"{base}/replay/{rid}", requests)
        await page.wait_for_function(
            "window.shopcast.chapters && window.shopcast.chapters.length === 3 && "
            "window.shopcast.chapters.every(c => c.time !== null)",
            timeout=20_000,
        )
        await page.wait_for_function(
            "document.getElementById('video').ended", timeout=(SECONDS + 30) * 1000
        )
        fires: list[Fire] = []
        seen: set[tuple[str, str]] = set()
        for rec in await page.evaluate("window.shopcast.fired"):
            key = (rec["id"], rec["path"])
            if rec["id"] in expected and key not in seen:  # the first fire of each (as played)
                seen.add(key)
                fires.append(Fire.of("replay", rec, *expected[rec["id"]]))
        report, problems = analyse(fires)
        print(report)
        assert not problems, "\n".join(problems)
        assert Counter(f.path for f in fires) == {"daterange": 3, "emsg": 3}, fires

        # Chapters: in show order, titles as text (never markup), each seeks to its frame.
        chapters = await page.evaluate("window.shopcast.chapters")
        assert [c["id"] for c in chapters] == list(expected)
        assert [c["title"] for c in chapters] == [titles[i] for i in expected]
        thumbs = await page.eval_on_selector_all(
            "#chapters .chapter .thumb", "els => els.map(e => e.style.backgroundImage)"
        )
        assert thumbs == [f'url("{t["thumbnail_url"]}")' for t in data["tags"]]
        texts = await page.eval_on_selector_all(
            "#chapters .chapter .info", "els => els.map(e => e.textContent)"
        )
        assert texts == [titles[i] for i in expected]
        assert await page.evaluate("document.querySelector('#chapters b, #cards b, img') === null")
        assert await page.evaluate("window.pwned === undefined")
        times = [c["time"] for c in chapters]
        assert times == sorted(times) and times[0] > 0
        # Backwards through the show, then forwards again.
        ids = list(expected)
        for n, tag_id in enumerate([*reversed(ids), ids[0], ids[2]]):
            await page.click(f'#chapters .chapter[data-tag="{tag_id}"]')
            await page.wait_for_function(
                "(n) => window.shopcast.seeks.length > n && "
                "window.shopcast.seeks[n].mediaTime !== undefined",
                arg=n,
                timeout=15_000,
            )
            seek = (await page.evaluate("window.shopcast.seeks"))[n]
            tagged = expected[tag_id][1]
            shown = shown_frame(seek)
            print(f"  chapter {tag_id}: frame {tagged}, shown {shown} at {seek['mediaTime']:.4f}")
            assert seek["id"] == tag_id
            assert shown is not None and abs(shown - tagged) <= 1, (seek, tagged)
            # And its product is the one pinned from there on.
            await page.wait_for_selector(f'#pin:not([hidden])[data-tag="{tag_id}"]', timeout=5_000)

        # "Buy" on the replay page counts as replay.
        replay_tag = await page.get_attribute("#pin", "data-tag")
        await page.click("#pin .buy")
        await page.wait_for_selector("#pin .buy.done", timeout=5_000)
        assert await page.evaluate("window.shopcast.clicks.map(c => c.source)") == ["replay"]
        fatal = [e for e in await page.evaluate("window.shopcast.errors") if e["fatal"]]
        assert not fatal, fatal
        foreign = [u for u in requests if not u.startswith((base, "blob:", "data:"))]
        assert not foreign, foreign

        async with http.get(f"{base}/api/v1/streams/demo/tags") as r:
            listed = {t["id"]: t for t in (await r.json())["tags"]}
        by_source: Counter[str] = Counter()
        for tag_id in expected:
            by_source.update(listed[tag_id]["clicks_by_source"])
            assert listed[tag_id]["clicks"] == sum(listed[tag_id]["clicks_by_source"].values())
        assert by_source == {"live": 1, "replay": 1}
        assert listed[live_tag]["clicks_by_source"]["live"] == 1
        assert listed[replay_tag]["clicks_by_source"]["replay"] == 1
        assert await clicks_metric(http, base) == {"live": 1, "replay": 1}


async def test_replay_data_needs_the_recordings_token_when_playback_is_signed(
    tmp_path: Path,
) -> None:
    secret = "replay-page-secret"
    show, _ = await flv(tmp_path, 3)
    async with (
        replay_origin(tmp_path, playback_secret=secret) as origin,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        await asyncio.wait_for(publisher.wait(), 30)
        rid = (await wait_recording(http, origin.http, ("ready",)))["id"]
        expires = int(time.time()) + 600
        tokens = {
            "none": None,
            "the stream's (hls)": access.mint(secret, "demo", expires),
            "another recording's": access.mint(secret, "B" * 22, expires, scope="vod"),
            "expired": access.mint(secret, rid, int(time.time()) - 1, scope="vod"),
            "this recording's": access.mint(secret, rid, expires, scope="vod"),
        }
        async with aiohttp.ClientSession() as viewer:
            for name, token in tokens.items():
                params = {"token": token} if token else {}
                async with viewer.get(f"{origin.http}/replay/{rid}/data.json", params=params) as r:
                    assert r.status == (200 if name == "this recording's" else 403), name
                async with viewer.get(f"{origin.http}/vod/{rid}/master.m3u8", params=params) as r:
                    assert r.status == (200 if name == "this recording's" else 403), name
            # The page itself holds nothing but the ids; it passes its token on.
            async with viewer.get(f"{origin.http}/replay/{rid}") as r:
                assert r.status == 200
                assert f'data-recording="{rid}"' in await r.text()
