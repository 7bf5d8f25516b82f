"""Product cards fire on the tagged frame: real ffmpeg publish, real hls.js in headless Chromium.

The published frames carry their own number as a block barcode (tests/e2e/barcode.py). Tags are
POSTed with ``"at"`` = the PTS of known frames a few seconds ahead of the newest ingested one.
The shop page logs every fire (``window.shopcast.fired``); at that moment, in the same video
frame callback, the injected probe reads the barcode of the frame being presented. Checked on
both renditions (a page pinned to each), for both cue paths (DATERANGE and emsg ID3), and for a
viewer that joins after the tags were posted.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM
from ingest.srt.server import UNAVAILABLE as SRT_UNAVAILABLE
from shopcast.web import HLS_JS

from . import barcode
from .conftest import API_TOKEN, FFMPEG, Origin, requires_ffmpeg

playwright_api = pytest.importorskip("playwright.async_api")
SCREENSHOT = os.environ.get("SHOPCAST_E2E_SCREENSHOT")  # where to save the lit shop page
pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed"),
    pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)"),
]
SECONDS = 40  # of published video; tags are all placed (and fired) well within it
PATHS = ("daterange", "emsg")
# (kind, seconds ahead of the newest ingested frame): every kind, spread over 3..9 s so the
# late joiner (opened right after the POSTs) still has several ahead of it.
PLAN = [
    ("product", 3.0),
    ("deal", 4.2),
    ("product", 5.4),
    ("poll", 6.6),
    ("product", 7.8),
    ("deal", 9.0),
]


def tag_body(kind: str, n: int, frame: int) -> dict[str, Any]:
    at = barcode.pts_ms(frame)
    if kind == "poll":
        return {"kind": "poll", "data": {"question": f"Q{n}?", "options": ["yes", "no"]}, "at": at}
    body: dict[str, Any] = {
        "kind": kind,
        "product_id": f"sku-{n}",
        "data": {"title": f"Item {n}", "price": f"{10 + n}.00", "currency": "EUR"},
        "at": at,
    }
    if kind == "deal":
        body["duration"] = 3
    return body


async def open_shop(browser: Any, url: str, requests: list[str] | None = None) -> Any:
    page = await browser.new_page(viewport={"width": 900, "height": 800})
    await page.add_init_script(barcode.PROBE_JS)
    if requests is not None:
        page.on("request", lambda r: requests.append(r.url))
    await page.goto(url)
    return page


async def wait_playing(page: Any, pinned: bool) -> None:
    await page.wait_for_function(
        "document.getElementById('video').currentTime > 0.3", timeout=30_000
    )
    if pinned:
        # The pinned rendition is the one on screen.
        await page.wait_for_function(
            "window.shopcast.pinnedLevel !== undefined && "
            "hls.currentLevel === window.shopcast.pinnedLevel",
            timeout=15_000,
        )


async def fired(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.shopcast.fired"))


@dataclass(frozen=True)
class Fire:
    """One logged fire, with the frame on screen read from its barcode."""

    page: str
    path: str
    kind: str
    tagged: int  # the frame the tag names
    shown: int | None  # barcode of the presented frame (None: unreadable)
    skew: int  # frames the element had moved past the presented one when the probe drew
    media_time: float  # of the presented frame
    cue: float  # the cue's startTime
    previous: float | None  # mediaTime of the frame presented before

    @classmethod
    def of(cls, page: str, rec: dict[str, Any], kind: str, tagged: int) -> Fire:
        # The barcode of the frame the probe drew, moved back by however many frames the
        # element had advanced past the presented one (the drawn VideoFrame's timestamp).
        drawn, read = rec.get("drawnTime"), rec.get("frame")
        skew = 0 if drawn is None else round((drawn - rec["mediaTime"]) * barcode.FPS)
        shown = read - skew if isinstance(read, int) else None
        return cls(
            page,
            rec["path"],
            kind,
            tagged,
            shown,
            skew,
            rec["mediaTime"],
            rec["cueStart"],
            rec.get("previousMediaTime"),
        )

    @property
    def gap(self) -> int:
        """Frame intervals since the previously presented frame (1 at a steady 30 fps)."""
        if self.previous is None:
            return 1
        return round((self.media_time - self.previous) * barcode.FPS)

    def __str__(self) -> str:
        return (
            f"{self.page}/{self.path} {self.kind} tag for frame {self.tagged}: shown "
            f"{self.shown} (skew {self.skew}), cue {self.cue:.4f}, presented "
            f"{self.media_time:.4f}, previous frame {self.gap} interval(s) before"
        )


def analyse(fires: list[Fire]) -> tuple[str, list[str]]:
    """The sync error distribution, and what is wrong.

    Per fire: the picture belongs to its timestamp (barcode = frame at mediaTime, one constant
    offset per page); the cue starts at the tagged frame's time; the page fired on the first
    frame presented at/after the cue; and that frame is the tagged one ±1. When the browser
    presented nothing for several frame intervals (a starved renderer on a loaded machine),
    the first frame after the gap is the earliest the page could show: counted as a stall,
    allowed for at most a third of the fires.
    """
    problems: list[str] = []
    errors: dict[str, Counter[int]] = {}
    offsets: dict[str, set[int]] = {}
    stalls = 0
    for f in fires:
        key = f"{f.page}/{f.path}"
        if f.shown is None:
            problems.append(f"unreadable barcode: {f}")
            continue
        errors.setdefault(key, Counter())[f.shown - f.tagged] += 1
        offset = f.shown - round(f.media_time * barcode.FPS)
        offsets.setdefault(f.page, set()).add(offset)
        if abs(f.cue * barcode.FPS - (f.tagged - offset)) > 0.1:
            problems.append(f"cue not at the tagged frame's time: {f}")
        if f.previous is not None and f.previous >= f.cue - 0.012:
            problems.append(f"an earlier frame at/after the cue was presented: {f}")
        if f.gap <= 2:
            if abs(f.shown - f.tagged) > 1:
                problems.append(f"off by more than a frame: {f}")
        else:
            stalls += 1
        if f.shown != f.tagged:
            print(f"  {f}")
    for page, seen in offsets.items():
        if len(seen) != 1:
            problems.append(f"{page}: pictures and timestamps disagree (offsets {sorted(seen)})")
    if stalls * 3 > len(fires):
        problems.append(f"{stalls} of {len(fires)} fires came after a renderer stall")
    lines = ["sync error (frame on screen - tagged frame) per page/path:"]
    lines += [f"  {k:18s} {dict(sorted(c.items()))}" for k, c in sorted(errors.items())]
    total = sum((c for c in errors.values()), Counter())
    lines.append(f"  {'all':18s} {dict(sorted(total.items()))}")
    lines.append(f"  fires after a renderer stall (>2 frame intervals): {stalls} of {len(fires)}")
    skews = Counter(f.skew for f in fires)
    lines.append(f"  probe skew (drawn - presented frame): {dict(sorted(skews.items()))}")
    return "\n".join(lines), problems


@pytest.mark.parametrize(
    "protocol",
    [
        "rtmp",
        pytest.param(
            "srt",
            marks=pytest.mark.skipif(SRT_UNAVAILABLE is not None, reason=SRT_UNAVAILABLE or ""),
        ),
    ],
)
async def test_cards_fire_on_the_tagged_frame(
    origin: Origin, browser: Any, tmp_path: Path, protocol: str
) -> None:
    assert FFMPEG is not None
    flv = tmp_path / "barcode.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, SECONDS)
    if protocol == "rtmp":
        target = ["-f", "flv", origin.rtmp_url(await origin.key())]
    else:  # the same frames as MPEG-TS over SRT, timestamps kept (frame n still at pts_ms(n))
        url = f"srt://127.0.0.1:{origin.server.srt.port}?streamid=publish:{await origin.key()}"
        target = ["-copyts", "-muxdelay", "0", "-muxpreload", "0", "-f", "mpegts", url]
    publisher = await asyncio.create_subprocess_exec(
        *[FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(flv)],
        *["-c", "copy", *target],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    pages: dict[str, Any] = {}
    try:
        # On air (every rendition listed) before the viewers come.
        async with aiohttp.ClientSession() as http:
            for _ in range(200):
                async with http.get(f"{origin.http}/hls/demo/master.m3u8") as r:
                    if r.status == 200 and (await r.text()).count("#EXT-X-STREAM-INF") == 2:
                        break
                await asyncio.sleep(0.1)
        requests: list[str] = []
        for name in ("360p", "180p"):
            pages[name] = await open_shop(
                browser,
                f"{origin.http}/demo/demo?level={name}",
                requests if name == "360p" else None,
            )
        for page in pages.values():
            await wait_playing(page, pinned=True)
        heights = {
            name: await page.evaluate("hls.levels[hls.currentLevel].height")
            for name, page in pages.items()
        }
        assert heights == {"360p": 640, "180p": 320}

        # Tags on frames still ahead of the newest ingested one.
        session = origin.server.streams.sessions["demo"]
        assert session.stats.newest_pts_ms is not None
        newest = round(session.stats.newest_pts_ms * barcode.FPS / 1000)
        expected: dict[str, tuple[str, int]] = {}  # tag id -> (kind, frame)
        headers = {"Authorization": f"Bearer {API_TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for n, (kind, ahead) in enumerate(PLAN):
                frame = newest + round(ahead * barcode.FPS)
                async with http.post(
                    f"{origin.http}/api/v1/streams/demo/tags", json=tag_body(kind, n, frame)
                ) as r:
                    body = await r.json()
                    assert r.status == 201, body
                assert body["pts"] == barcode.pts_ms(frame) and not body["late"], body
                expected[body["id"]] = (kind, frame)
        # A viewer joining now, after the POSTs, with the tagged frames still ahead.
        pages["joiner"] = await open_shop(browser, f"{origin.http}/demo/demo")
        await wait_playing(pages["joiner"], pinned=False)

        # Every page sees every tag ahead of it fire on both paths.
        last = max(frame for _, frame in expected.values())
        for page in pages.values():
            await page.wait_for_function(
                "(ids) => ids.every(id => ['daterange', 'emsg'].every("
                "  p => window.shopcast.fired.some(f => f.id === id && f.path === p)))",
                arg=list(expected),
                timeout=30_000,
            )
        lit = await pages["360p"].evaluate("document.querySelectorAll('.card.active').length")

        fires: list[Fire] = []
        for name, page in pages.items():
            pinned = await page.evaluate("window.shopcast.pinnedLevel ?? null")
            for rec in await fired(page):
                if rec["id"] not in expected:
                    continue
                previous = rec.get("previousMediaTime")
                if name == "joiner" and (previous is None or previous >= rec["cueStart"] - 0.012):
                    continue  # the tag had started before the joiner's first frame
                assert pinned is None or rec["level"] == pinned, (name, rec)
                fires.append(Fire.of(name, rec, *expected[rec["id"]]))
        checked = Counter(f.page for f in fires)
        report, problems = analyse(fires)
        print(report)
        assert not problems, "\n".join(problems)
        assert checked["360p"] == checked["180p"] == 2 * len(PLAN), checked
        assert checked["joiner"] >= 2 * 3, checked  # at least three tags ahead of the joiner
        assert lit >= 1

        # The page loaded nothing from anywhere else.
        foreign = [u for u in requests if not u.startswith((origin.http, "blob:", "data:"))]
        assert not foreign, foreign

        # "Buy" on the pinned product reaches the click beacon.
        page = pages["360p"]
        await page.wait_for_selector("#pin:not([hidden]) .buy", timeout=10_000)
        if SCREENSHOT:
            await page.screenshot(path=SCREENSHOT)
        tag_id = await page.get_attribute("#pin", "data-tag")
        await page.click("#pin .buy")
        await page.wait_for_selector("#pin .buy.done", timeout=5_000)
        clicks = {
            t.id: t.clicks for t in await origin.server.store.list_tags("demo") if t.id == tag_id
        }
        assert clicks == {tag_id: 1}
        fatal = [
            e
            for p in pages.values()
            for e in await p.evaluate("window.shopcast.errors")
            if e["fatal"]
        ]
        assert not fatal, fatal
        assert last < SECONDS * barcode.FPS
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
