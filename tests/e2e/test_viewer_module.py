"""The viewer module (``/static/shopcast-player.js``) in a shop's own page, on hls.js and on Shaka
Player (headless Chromium), live and on the replay of the same show.

The published frames carry their number as a barcode (tests/e2e/barcode.py). Product pins, a deal
with a duration and a poll are POSTed on known frames ahead of the live edge. Through the module,
on each player: every tag fires once, in order, on its tagged frame (±1, read from the picture in
the module's own frame callback); a pin ends (``tagend``) on the next pin's frame, the deal on its
last frame + 1, and the last pin, still open, fires and never ends; tag data comes through as the
API took it (markup and quotes included); live pages read a latency. The live shop page, which
renders the module's tags, shows that markup as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM
from benchmarks.harness.viewer import ENGINES, open_viewer
from shopcast.config import PackagerSection
from shopcast.server import ShopcastServer
from shopcast.web import HLS_JS, SHAKA_JS
from transcode.policy import LadderConfig

from . import barcode
from .conftest import (
    API_TOKEN,
    Origin,
    ffmpeg_publish_args,
    make_config,
    requires_ffmpeg,
    start_ffmpeg,
    stop_ffmpeg,
)
from .test_replay import flv, publish, wait_recording
from .test_shop_sync import Fire, analyse, open_shop

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not installed (make install)"),
    pytest.mark.skipif(not SHAKA_JS.exists(), reason="Shaka Player not installed (make install)"),
]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
SECONDS = 20  # of published video
#: Text that would be markup if a page ever put tag data into innerHTML (quotes of both kinds).
MARKUP = '<b class="x">Item</b> <img src=x onerror="window.pwned=1"> & \'q\''
DEAL_SECONDS = 2
#: (kind, seconds ahead of the newest ingested frame): pins, a deal inside the second pin,
#: a poll; the last pin stays open.
PLAN = [
    ("product", 2.0),
    ("deal", 3.0),
    ("product", 4.0),
    ("poll", 5.5),
    ("product", 6.5),
]


@asynccontextmanager
async def show_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    # One 180p rung (the barcode reads at 180p); a short reconnect window ends the show (and
    # closes its recording) soon after ffmpeg stops.
    config = replace(
        make_config(tmp_path, LadderConfig.from_mapping({"rungs": ["180p:200k"]})),
        packager=PackagerSection(reconnect_window=1.0),
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


def tag_body(kind: str, n: int, frame: int) -> dict[str, Any]:
    at = barcode.pts_ms(frame)
    if kind == "poll":
        return {"kind": "poll", "data": {"question": MARKUP, "options": ["yes", MARKUP]}, "at": at}
    title = MARKUP if n == 2 else f"Item {n}"
    body: dict[str, Any] = {
        "kind": kind,
        "product_id": f"sku-{n}",
        "data": {"title": title, "price": f"{10 + n}.00", "currency": "EUR"},
        "at": at,
    }
    if kind == "deal":
        body["duration"] = DEAL_SECONDS
    return body


def check_events(
    name: str, events: list[dict[str, Any]], expected: dict[str, tuple[str, int]]
) -> list[str]:
    """What is wrong with one page's tag events (empty: nothing)."""
    problems: list[str] = []
    order = sorted(expected, key=lambda i: expected[i][1])
    tags = [e for e in events if e["type"] == "tag" and e["id"] in expected]
    ends = [e for e in events if e["type"] == "tagend" and e["id"] in expected]
    if [e["id"] for e in tags] != order:
        problems.append(f"{name}: tags fired {[e['id'] for e in tags]}, expected {order} once each")
    # When each tag starts and ends (frames), as the API placed them.
    starts = {i: frame for i, (_, frame) in expected.items()}
    pins = [i for i in order if expected[i][0] == "product"]
    ending = {i: starts[n] for i, n in itertools.pairwise(pins)}  # a pin ends on the next
    for i in order:
        if expected[i][0] == "deal":
            ending[i] = starts[i] + DEAL_SECONDS * barcode.FPS
    if sorted(e["id"] for e in ends) != sorted(ending):
        problems.append(f"{name}: tagend for {[e['id'] for e in ends]}, expected {list(ending)}")
    fires = [
        Fire.of(
            f"{name} tag",
            {**e, "path": "tag", "cueStart": e["start"]},
            expected[e["id"]][0],
            starts[e["id"]],
        )
        for e in tags
    ]
    fires += [
        Fire.of(
            f"{name} tag", {**e, "path": "tagend", "cueStart": e["end"]}, "end", ending[e["id"]]
        )
        for e in ends
        if e["id"] in ending and e["reason"] == "end"
    ]
    report, wrong = analyse(fires)
    print(report)
    problems += [f"{name}: {p}" for p in wrong]
    for e in tags:
        kind = expected[e["id"]][0]
        if e["kind"] != kind:
            problems.append(f"{name}: {e['id']} came as {e['kind']}, posted as {kind}")
    return problems


SEEK = """(t) => { document.getElementById("video").currentTime = t; }"""


async def check_seeks(engine: str, page: Any, ids: list[str]) -> list[str]:
    """On a replay played to its end: a seek into the second pin ends the tags on at the end
    (the poll and the last pin: ``seek``), reports the first pin as passed and fires the deal
    and that pin, in order; a seek within them changes nothing."""
    events = await page.evaluate("window.log.events")
    starts = {e["id"]: e["start"] for e in events if e["type"] == "tag"}
    n = len(events)
    await page.evaluate(SEEK, starts[ids[2]] + 0.5)
    with contextlib.suppress(playwright_api.Error):  # the comparison below says what is missing
        await page.wait_for_function(
            "(n) => window.log.events.length >= n + 5", arg=n, timeout=10_000
        )
    await page.evaluate(SEEK, starts[ids[2]] + 0.8)
    await asyncio.sleep(1.0)
    after = [
        (e["type"], e["id"], e.get("reason")) for e in await page.evaluate("window.log.events")
    ][n:]
    ends = sorted(after[:2])
    want = sorted([("tagend", ids[3], "seek"), ("tagend", ids[4], "seek")])
    fired = [("tagpassed", ids[0], None), ("tag", ids[1], None), ("tag", ids[2], None)]
    if ends != want or after[2:] != fired:
        return [f"{engine} replay seeks: events {after}"]
    return []


async def test_viewer_module_fires_every_tag_on_its_frame_on_hlsjs_and_shaka(
    tmp_path: Path, browser: Any
) -> None:
    show, frames = await flv(tmp_path, SECONDS)
    async with show_origin(tmp_path) as origin, aiohttp.ClientSession(headers=AUTH) as http:
        base = origin.http
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        pages: dict[str, Any] = {}
        try:
            # Shaka 4.16 cannot start on a playlist whose only segment is still open.
            for _ in range(300):
                async with http.get(f"{base}/hls/demo/180p/index.m3u8") as r:
                    if r.status == 200 and "#EXTINF" in await r.text():
                        break
                await asyncio.sleep(0.1)
            for engine in ENGINES:
                pages[engine] = await open_viewer(
                    browser, base, engine, "/hls/demo/master.m3u8", barcode.PROBE_JS
                )
            pages["shop"] = await open_shop(browser, f"{base}/demo/demo")
            for page in pages.values():
                await page.wait_for_function(
                    "document.getElementById('video').currentTime > 0.3", timeout=30_000
                )
            session = origin.server.streams.sessions["demo"]
            assert session.stats.newest_pts_ms is not None
            newest = round(session.stats.newest_pts_ms * barcode.FPS / 1000)
            expected: dict[str, tuple[str, int]] = {}
            for n, (kind, ahead) in enumerate(PLAN):
                frame = newest + round(ahead * barcode.FPS)
                async with http.post(
                    f"{base}/api/v1/streams/demo/tags", json=tag_body(kind, n, frame)
                ) as r:
                    body = await r.json()
                    assert r.status == 201, body
                assert not body["late"], body
                expected[body["id"]] = (kind, frame)
            ids = list(expected)
            assert max(f for _, f in expected.values()) < frames - barcode.FPS  # in the show
            live: dict[str, list[dict[str, Any]]] = {}
            for engine in ENGINES:
                await pages[engine].wait_for_function(
                    "(ids) => ids.every(id => window.log.events.some("
                    "  e => e.type === 'tag' && e.id === id))",
                    arg=ids,
                    timeout=30_000,
                )
            await asyncio.sleep(1.0)  # a few more playlist reloads: nothing fires twice
            for engine in ENGINES:
                log = await pages[engine].evaluate("window.log")
                assert not log["errors"], (engine, log["errors"])
                live[engine] = log["events"]
                # A live latency reading (program date-time of the playhead to now).
                readings = [r["latency"] for r in log["latency"]]
                assert readings and all(0 < v < 15 for v in readings), (engine, readings)
            # The shop page renders the module's tags as text.
            shop = pages["shop"]
            pin = ids[2]
            await shop.wait_for_selector(f'.card[data-tag="{pin}"]', timeout=10_000)
            title = await shop.text_content(f'.card[data-tag="{pin}"] .title')
            assert title == MARKUP
            await shop.wait_for_selector("#poll:not([hidden]) .q", timeout=10_000)
            assert await shop.text_content("#poll .q") == MARKUP
            assert await shop.evaluate("document.querySelector('img, b') === null")
            assert await shop.evaluate("window.pwned === undefined")
        finally:
            for page in pages.values():
                await page.close()
            if publisher.returncode is None:
                await asyncio.wait_for(publisher.wait(), SECONDS + 30)

        problems: list[str] = []
        for engine, events in live.items():
            problems += check_events(f"{engine} live", events, expected)
            # Data as the API took it.
            by_id = {e["id"]: e for e in events if e["type"] == "tag"}
            assert by_id[ids[2]]["data"]["title"] == MARKUP, engine
            assert by_id[ids[3]]["data"] == {"question": MARKUP, "options": ["yes", MARKUP]}
            assert by_id[ids[1]]["end"] is not None  # the deal's end is known when it starts
            assert by_id[ids[-1]]["end"] is None  # the last pin is open

        # The replay of the same show, played to the end on both players.
        recording = await wait_recording(http, base, ("ready",))
        src = f"/vod/{recording['id']}/master.m3u8"
        replays = {e: await open_viewer(browser, base, e, src, barcode.PROBE_JS) for e in ENGINES}
        try:
            for engine, page in replays.items():
                await page.wait_for_function(
                    "document.getElementById('video').ended", timeout=(SECONDS + 30) * 1000
                )
                log = await page.evaluate("window.log")
                assert not log["errors"], (engine, log["errors"])
                assert log["latency"] == [], engine  # no latency on a replay
                problems += check_events(f"{engine} replay", log["events"], expected)
                problems += await check_seeks(engine, page, ids)
        finally:
            for page in replays.values():
                await page.close()
        assert not problems, "\n".join(problems)


async def test_shaka_page_opened_before_the_show_plays_it(
    small_origin: Origin, browser: Any
) -> None:
    """A Shaka page opened before the show is on air (the playlist 404, then one open segment
    only, which Shaka 4.16 cannot start on) plays once it is, with ``loadAttempts``; without
    them its load fails."""
    origin = small_origin
    hasty = await open_viewer(browser, origin.http, "shaka", "/hls/demo/master.m3u8")
    patient = await open_viewer(browser, origin.http, "shaka", "/hls/demo/master.m3u8", attempts=60)
    publisher = await start_ffmpeg(
        ffmpeg_publish_args(
            origin.rtmp_url(await origin.key()), seconds=30, size="180x320", realtime=True
        )
    )
    try:
        await patient.wait_for_function(
            "document.getElementById('video').currentTime > 0.3", timeout=40_000
        )
        assert await patient.evaluate("window.log.errors") == []
        # One failed load, given up: HTTP 404 (1001) or the open segment, whichever it met.
        errors = await hasty.evaluate("window.log.errors")
        assert len(errors) == 1 and await hasty.evaluate(
            "document.getElementById('video').currentTime === 0"
        ), errors
    finally:
        await hasty.close()
        await patient.close()
        await stop_ffmpeg(publisher)
