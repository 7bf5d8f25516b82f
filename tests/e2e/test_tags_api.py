"""The tag API against a live stream: Debian ffmpeg publishes to the in-process origin, tags are
posted over HTTP, and what viewers get (every rendition's playlist, blocking reloads, the emsg ID3
in the parts) is read back over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from packager.tags import SHOW_CLASS
from shopcast.server import ShopcastServer
from tests.packager import m3u8
from tests.packager.boxes import iter_boxes, trafs
from tests.packager.id3 import parse_emsg, read_txxx

from .conftest import API_TOKEN, Origin, ffmpeg_publish_args, make_config, requires_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg, pytest.mark.asyncio(loop_scope="module")]

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
PDT_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ID3_SCHEME = "https://aomedia.org/emsg/ID3"
FRAME = Fraction(1, 30)
VIDEO_TRACK = 1


# -- helpers shared with the other tag tests -------------------------------------------------


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")


def error_of(body: Any) -> str:
    """The error code of the API's one error shape (asserting the shape)."""
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["code"])


async def renditions(http: aiohttp.ClientSession, base: str, stream: str = "demo") -> list[str]:
    """Rendition names from the multivariant playlist."""
    async with http.get(f"{base}/hls/{stream}/master.m3u8") as r:
        assert r.status == 200
        text = await r.text()
    names = [line.value.split("/")[0] for line in m3u8.parse(text).tags("")]
    assert names
    return names


async def playlist(
    http: aiohttp.ClientSession, base: str, rendition: str, query: str = "", stream: str = "demo"
) -> m3u8.Playlist:
    async with http.get(f"{base}/hls/{stream}/{rendition}/index.m3u8{query}") as r:
        assert r.status == 200, await r.text()
        return m3u8.parse(await r.text())


def dateranges(pl: m3u8.Playlist) -> dict[str, dict[str, str]]:
    """ID → attributes of every tag's EXT-X-DATERANGE; IDs are unique within a playlist. The
    show's own range (CLASS com.shopcast.show, first in every playlist) is left out."""
    out: dict[str, dict[str, str]] = {}
    ranges = pl.tags("#EXT-X-DATERANGE")
    assert ranges and ranges[0].attrs["CLASS"] == SHOW_CLASS
    for line in ranges[1:]:
        attrs = line.attrs
        assert attrs["ID"] not in out, f"duplicate DATERANGE {attrs['ID']}"
        out[attrs["ID"]] = attrs
    return out


def hinted_part(pl: m3u8.Playlist) -> tuple[int, int]:
    """(msn, part) of the PRELOAD-HINT: the next part, not yet published."""
    uri = pl.one("#EXT-X-PRELOAD-HINT").attrs["URI"]
    msn, part, _ = uri.split(".")
    return int(msn), int(part)


def last_part(pl: m3u8.Playlist) -> tuple[int, int]:
    uri = pl.tags("#EXT-X-PART")[-1].attrs["URI"]
    msn, part, _ = uri.split(".")
    return int(msn), int(part)


async def all_dateranges(
    http: aiohttp.ClientSession, base: str, stream: str = "demo"
) -> dict[str, dict[str, dict[str, str]]]:
    """rendition → its DATERANGEs, after checking they are the same on every rendition."""
    names = await renditions(http, base, stream)
    found = {n: dateranges(await playlist(http, base, n, stream=stream)) for n in names}
    first = found[names[0]]
    for name in names[1:]:
        # A tag posted between two playlist fetches may be in the later one only.
        common = first.keys() & found[name].keys()
        for tag_id in common:
            assert found[name][tag_id] == first[tag_id], (name, tag_id)
    return found


@dataclass
class PartEvent:
    """One emsg ID3 box found in a part, and where that part sits."""

    uri: str
    seconds: Fraction  # presentation_time / timescale
    program_date_time: float | None  # mapped through the segment's PDT, when part 0 is listed
    message: dict[str, Any]
    on_frame: bool  # presentation_time is a video sample's composition time in that part


@dataclass
class PartScan:
    """Every part of one rendition read once, emsg boxes by tag id."""

    http: aiohttp.ClientSession
    base: str
    rendition: str
    stream: str = "demo"
    seen: dict[str, bytes] = field(default_factory=dict)
    events: dict[str, list[PartEvent]] = field(default_factory=dict)

    async def update(self) -> m3u8.Playlist:
        pl = await playlist(self.http, self.base, self.rendition, stream=self.stream)
        seg_pdt: dict[int, float] = {}
        pending: float | None = None
        parts: list[str] = []
        for line in pl.lines:
            if line.tag == "#EXT-X-PROGRAM-DATE-TIME":
                pending = epoch(line.value)
                continue
            uri = line.attrs["URI"] if line.tag == "#EXT-X-PART" else line.value
            if line.tag not in ("#EXT-X-PART", ""):
                continue
            msn = int(uri.split(".")[0])
            if pending is not None:
                seg_pdt.setdefault(msn, pending)
                pending = None
            if line.tag == "#EXT-X-PART":
                parts.append(uri)
        for uri in parts:
            if uri in self.seen:
                continue
            async with self.http.get(f"{self.base}/hls/{self.stream}/{self.rendition}/{uri}") as r:
                assert r.status == 200, uri
                self.seen[uri] = await r.read()
        for uri in parts:
            if f"scanned:{uri}" in self.seen:
                continue
            self.seen[f"scanned:{uri}"] = b""
            self._scan(uri, seg_pdt)
        return pl

    def _scan(self, uri: str, seg_pdt: dict[int, float]) -> None:
        data = self.seen[uri]
        boxes = [kind for kind, _ in iter_boxes(data)]
        assert b"moof" in boxes, uri
        msn = int(uri.split(".")[0])
        part0 = self.seen.get(f"{msn}.0.m4s")
        lead = next(t for t in trafs(data) if t.track_id == VIDEO_TRACK)
        for kind, payload in iter_boxes(data):
            if kind != b"emsg":
                continue
            # AOM ID3 in CMAF: top-level emsg before the moof.
            assert boxes.index(b"emsg") < boxes.index(b"moof"), uri
            box = parse_emsg(payload)  # asserts version 1
            assert box["scheme"] == ID3_SCHEME
            message = json.loads(read_txxx(box["data"])["com.shopcast.tag"])
            ts = box["timescale"]
            pt = box["presentation_time"]
            ctimes, dts = [], lead.base_dts
            for dur, cto in zip(lead.durations, lead.ctos, strict=True):
                ctimes.append(dts + cto)
                dts += dur
            pdt = None
            if part0 is not None and msn in seg_pdt:
                start = next(t for t in trafs(part0) if t.track_id == VIDEO_TRACK).base_dts
                pdt = seg_pdt[msn] + (pt - start) / ts
            self.events.setdefault(message["id"], []).append(
                PartEvent(uri, Fraction(pt, ts), pdt, message, pt in ctimes)
            )


async def wait_for_emsg(
    http: aiohttp.ClientSession,
    base: str,
    tag_ids: list[str],
    stream: str = "demo",
    timeout: float = 10.0,
) -> dict[str, PartScan]:
    """Read parts of every rendition until each tag's emsg was seen in each (or time runs out)."""
    scans = {n: PartScan(http, base, n, stream) for n in await renditions(http, base, stream)}
    deadline = time.monotonic() + timeout
    while True:
        for scan in scans.values():
            await scan.update()
        if all(t in s.events for s in scans.values() for t in tag_ids):
            return scans
        if time.monotonic() > deadline:
            return scans
        await asyncio.sleep(0.3)


async def post_tag(
    http: aiohttp.ClientSession, base: str, body: Any, stream: str = "demo"
) -> tuple[int, Any]:
    async with http.post(f"{base}/api/v1/streams/{stream}/tags", json=body) as r:
        return r.status, await r.json()


async def get_tags(
    http: aiohttp.ClientSession, base: str, stream: str = "demo"
) -> dict[str, dict[str, Any]]:
    async with http.get(f"{base}/api/v1/streams/{stream}/tags") as r:
        assert r.status == 200, await r.text()
        return {t["id"]: t for t in (await r.json())["tags"]}


async def wait_live(http: aiohttp.ClientSession, base: str, timeout: float = 30.0) -> None:
    """Until every rendition lists a few parts (so tags can be placed and seen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(f"{base}/hls/demo/master.m3u8") as r:
            if r.status == 200:
                names = await renditions(http, base)
                pls = [await playlist(http, base, n) for n in names]
                if len(names) >= 2 and all(len(p.tags("#EXT-X-PART")) >= 3 for p in pls):
                    return
        await asyncio.sleep(0.2)
    raise AssertionError("the stream did not go live")


# -- one live stream for the whole module ------------------------------------------------------


@dataclass
class Live:
    origin: Origin
    http: aiohttp.ClientSession
    publisher: asyncio.subprocess.Process

    @property
    def base(self) -> str:
        return self.origin.http


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Live]:
    tmp: Path = tmp_path_factory.mktemp("tags-api")
    server = ShopcastServer(make_config(tmp))
    await server.start()
    origin = Origin(server)
    # 360×640: the 360p rung is the source passed through, 180p is encoded, so there are two
    # renditions to compare. Real time, bounded; killed once the module is done.
    args = ffmpeg_publish_args(
        origin.rtmp_url(await origin.key()), seconds=120, size="360x640", realtime=True
    )
    publisher = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    http = aiohttp.ClientSession(headers=AUTH)
    try:
        await wait_live(http, origin.http)
        yield Live(origin, http, publisher)
    finally:
        await http.close()
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
        await server.close()


# -- tests -----------------------------------------------------------------------------------


async def test_tag_reaches_every_rendition_playlist_blocking_reload_and_emsg(live: Live) -> None:
    http, base = live.http, live.base
    names = await renditions(http, base)
    assert sorted(names) == ["180p", "360p"]
    body = {"kind": "product", "product_id": "sku-123", "data": {"title": "Shoe", "price": 89}}
    t0 = time.time()
    status, tag = await post_tag(http, base, body)
    assert status == 201, tag
    assert isinstance(tag["id"], str) and tag["id"]
    assert isinstance(tag["pts"], int) and tag["pts"] >= 0
    assert PDT_RE.match(tag["program_date_time"]), tag["program_date_time"]
    # Stamped on the newest ingested frame: its wall clock is about now.
    assert abs(epoch(tag["program_date_time"]) - t0) < 3.0
    assert tag["late"] is False
    assert (tag["stream_id"], tag["kind"], tag["product_id"], tag["source"]) == (
        "demo",
        "product",
        "sku-123",
        "api",
    )
    assert tag["data"] == body["data"] and tag["duration"] is None and tag["clicks"] == 0

    # The same DATERANGE, START-DATE = the response's program_date_time, on every rendition.
    found = await all_dateranges(http, base)
    for name in names:
        attrs = found[name][tag["id"]]
        assert attrs["START-DATE"] == tag["program_date_time"]
        assert attrs["CLASS"] == "com.shopcast.product"
        assert attrs["END-ON-NEXT"] == "YES"
        assert attrs["X-COM-SHOPCAST-PRODUCT"] == "sku-123"
        payload = bytes.fromhex(attrs["X-COM-SHOPCAST-DATA"].removeprefix("0x"))
        assert json.loads(payload) == body["data"]

    # A second tag, then a blocking reload for the next part on every rendition: it returns
    # (once that part exists, not before) with the new range in it.
    status, second = await post_tag(http, base, {"kind": "product", "product_id": "sku-456"})
    assert status == 201, second
    for name in names:
        msn, part = hinted_part(await playlist(http, base, name))
        started = time.monotonic()
        pl = await playlist(http, base, name, f"?_HLS_msn={msn}&_HLS_part={part}")
        waited = time.monotonic() - started
        assert last_part(pl) >= (msn, part), name
        assert waited < 6.0  # S 6.2.5.2: within three target durations
        ranges = dateranges(pl)
        assert ranges[second["id"]]["START-DATE"] == second["program_date_time"]
        assert tag["id"] in ranges

    # The emsg ID3 rides in the part holding the tagged frame, in every rendition.
    scans = await wait_for_emsg(http, base, [tag["id"], second["id"]])
    for posted in (tag, second):
        times = []
        for name, scan in scans.items():
            events = scan.events.get(posted["id"])
            assert events, f"{name}: no emsg for {posted['id']}"
            assert len(events) == 1, f"{name}: {[e.uri for e in events]}"
            event = events[0]
            assert event.message["id"] == posted["id"]
            assert event.message["product_id"] == posted["product_id"]
            assert event.message["kind"] == "product"
            assert event.on_frame, f"{name}: emsg time is not a frame of {event.uri}"
            # The emsg frame and START-DATE are the same instant (to half a frame).
            assert event.program_date_time is not None, f"{name}: segment start not listed"
            start = epoch(posted["program_date_time"])
            assert abs(event.program_date_time - start) <= float(FRAME) / 2 + 0.002
            times.append(event.seconds)
        # The same frame on every rendition: passthrough and encoded rungs keep their own frame
        # clocks (ms-rounded source vs a 1/30 s grid), so they agree to within half a frame.
        assert max(times) - min(times) <= FRAME / 2, times

    listed = await get_tags(http, base)
    for posted in (tag, second):
        assert listed[posted["id"]] == posted


async def test_at_names_the_frame_by_pts_or_date_time(live: Live) -> None:
    http, base = live.http, live.base
    status, now = await post_tag(http, base, {"kind": "product", "product_id": "at-now"})
    assert status == 201, now
    now_pdt = epoch(now["program_date_time"])

    # A source PTS half a second back.
    status, by_pts = await post_tag(
        http, base, {"kind": "product", "product_id": "at-pts", "at": now["pts"] - 500}
    )
    assert status == 201, by_pts
    assert by_pts["pts"] == now["pts"] - 500
    assert abs(epoch(by_pts["program_date_time"]) - (now_pdt - 0.5)) <= float(FRAME) + 0.002

    # A program date-time one second back (what a player shows as the frame's time).
    wanted = now_pdt - 1.0
    status, by_date = await post_tag(
        http, base, {"kind": "deal", "product_id": "at-date", "at": iso(wanted), "duration": 15}
    )
    assert status == 201, by_date
    assert abs(epoch(by_date["program_date_time"]) - wanted) <= float(FRAME) / 2 + 0.002
    assert abs(by_date["pts"] - (now["pts"] - 1000)) <= 40
    assert by_date["duration"] == 15

    # The oldest listed segment's date is still in the window.
    pl = await playlist(http, base, "360p")
    oldest = epoch(pl.tags("#EXT-X-PROGRAM-DATE-TIME")[0].value)
    status, edge = await post_tag(
        http, base, {"kind": "product", "product_id": "at-edge", "at": iso(oldest + 0.2)}
    )
    assert status == 201, edge
    assert abs(epoch(edge["program_date_time"]) - (oldest + 0.2)) <= float(FRAME) / 2 + 0.002

    found = await all_dateranges(http, base)
    for ranges in found.values():
        for posted in (by_pts, by_date, edge):
            assert ranges[posted["id"]]["START-DATE"] == posted["program_date_time"]
        assert ranges[by_date["id"]]["DURATION"] == "15.000"
        assert ranges[by_date["id"]]["CLASS"] == "com.shopcast.deal"
    listed = await get_tags(http, base)
    for posted in (by_pts, by_date, edge):
        assert listed[posted["id"]]["pts"] == posted["pts"]
        assert listed[posted["id"]]["program_date_time"] == posted["program_date_time"]

    # Outside the window: before the oldest listed segment, or far past the newest frame.
    before = len(listed)
    for at in (
        iso(oldest - 5),
        "2001-01-01T00:00:00Z",
        iso(time.time() + 3600),
        now["pts"] + 60_000,
        10**15,
    ):
        status, err = await post_tag(http, base, {"kind": "product", "product_id": "x", "at": at})
        assert status == 422, (at, err)
        assert error_of(err) == "out_of_window"
    assert len(await get_tags(http, base)) == before


async def test_deal_with_end_date(live: Live) -> None:
    http, base = live.http, live.base
    status, now = await post_tag(http, base, {"kind": "product", "product_id": "end-ref"})
    assert status == 201
    end = epoch(now["program_date_time"]) + 20
    status, deal = await post_tag(
        http, base, {"kind": "deal", "product_id": "sku-d", "end": iso(end)}
    )
    assert status == 201, deal
    assert deal["duration"] == pytest.approx(end - epoch(deal["program_date_time"]), abs=0.01)
    for ranges in (await all_dateranges(http, base)).values():
        assert float(ranges[deal["id"]]["DURATION"]) == pytest.approx(deal["duration"], abs=0.001)
    # An end at or before the tagged frame, or more than a day after it: nothing stored.
    before = len(await get_tags(http, base))
    for bad_end in (iso(time.time() - 60), iso(time.time() + 2 * 86400)):
        status, err = await post_tag(
            http, base, {"kind": "deal", "product_id": "sku-d", "end": bad_end}
        )
        assert status == 422, err
        assert error_of(err) == "invalid"
    assert len(await get_tags(http, base)) == before


async def test_errors_are_json_with_the_right_status_and_nothing_half_applied(live: Live) -> None:
    http, base = live.http, live.base
    url = f"{base}/api/v1/streams/demo/tags"
    good = {"kind": "product", "product_id": "sku-1"}
    before = await get_tags(http, base)

    status, err = await post_tag(http, base, good, stream="nope")
    assert (status, error_of(err)) == (404, "not_found")
    async with http.get(f"{base}/api/v1/streams/nope/tags") as r:
        assert (r.status, error_of(await r.json())) == (404, "not_found")

    await live.origin.server.store.create_stream("idle")  # exists, nobody publishes
    status, err = await post_tag(http, base, good, stream="idle")
    assert (status, error_of(err)) == (409, "offline")
    assert await get_tags(http, base, stream="idle") == {}

    async with aiohttp.ClientSession() as anon:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_TOKEN}):
            async with anon.post(url, json=good, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
                assert error_of(await r.json()) == "unauthorized"
            async with anon.get(url, headers=headers) as r:
                assert r.status == 401

    json_type = {"Content-Type": "application/json"}
    for raw in (b'{"kind": "product",', b"", b"not json", b"\xff\xfe{}", b"[" * 20_000):
        async with http.post(url, data=raw, headers=json_type) as r:
            assert r.status == 400, (raw[:20], await r.text())
            assert error_of(await r.json()) == "bad_json"

    for bad in (
        {"kind": "banner", "product_id": "sku-1"},
        {"kind": ["product"], "product_id": "sku-1"},
        {"kind": "product"},
        {**good, "data": {"x": "a" * 9000}},  # over 8 KB of data, under the body limit
        {**good, "colour": "red"},
        {"kind": "deal", "product_id": "sku-1"},
        {"kind": "poll", "data": {"question": "Q?", "options": ["one"]}},
        [good],
    ):
        status, err = await post_tag(http, base, bad)
        assert (status, error_of(err)) == (422, "invalid"), bad
    for raw in (
        b'{"kind":"product","product_id":"s","data":{"x":NaN}}',
        b'{"kind":"product","product_id":"\\ud800"}',
    ):
        async with http.post(url, data=raw, headers=json_type) as r:
            assert r.status == 422, await r.text()
            assert error_of(await r.json()) == "invalid"

    # A body over the API's size limit is refused before it is parsed.
    huge = json.dumps({**good, "data": {"x": "a" * 100_000}})
    async with http.post(url, data=huge, headers=json_type) as r:
        assert r.status in (413, 422)
        assert error_of(await r.json())

    assert await get_tags(http, base) == before  # nothing stored by any refusal
    for ranges in (await all_dateranges(http, base)).values():
        assert set(ranges) <= set(before)


async def test_rate_limit_sustains_50_per_second_and_loses_no_accepted_tag(live: Live) -> None:
    http, base = live.http, live.base
    await asyncio.sleep(2.1)  # the bucket refills (100/s, burst 200) after the other tests

    # 60 tags spread over under a second: all accepted.
    started = time.monotonic()
    paced = []
    for i in range(60):
        status, tag = await post_tag(http, base, {"kind": "product", "product_id": f"paced-{i}"})
        assert status == 201, tag
        paced.append(tag)
        await asyncio.sleep(max(0.0, started + (i + 1) * 0.015 - time.monotonic()))
    assert time.monotonic() - started < 1.0

    await asyncio.sleep(2.1)
    # Far over the limit, as fast as the client can: some are refused with 429, and every
    # accepted one is stored and placed. Waves until the limit bites (a slow machine may
    # otherwise never outrun the refill).
    accepted: list[dict[str, Any]] = []
    refused = 0
    sent = 0
    connector_http = aiohttp.ClientSession(headers=AUTH, connector=aiohttp.TCPConnector(limit=64))
    try:
        while refused == 0 and sent < 1600:
            batch = [{"kind": "product", "product_id": f"burst-{sent + i}"} for i in range(400)]
            sent += len(batch)
            results = await asyncio.gather(*(post_tag(connector_http, base, b) for b in batch))
            for status, body in results:
                if status == 201:
                    accepted.append(body)
                else:
                    assert status == 429, body
                    assert error_of(body) == "rate_limited"
                    refused += 1
    finally:
        await connector_http.close()
    assert refused > 0
    assert len(accepted) >= 200  # at least the burst

    listed = await get_tags(http, base)
    for tag in paced + accepted:
        assert listed[tag["id"]]["pts"] == tag["pts"]
        assert listed[tag["id"]]["program_date_time"] == tag["program_date_time"]
    stored_burst = {
        t["product_id"] for t in listed.values() if t["product_id"].startswith("burst-")
    }
    assert stored_burst == {t["product_id"] for t in accepted}  # no refused one slipped in
    assert len({t["id"] for t in paced + accepted}) == len(paced) + len(accepted)

    found = await all_dateranges(http, base)
    for name, ranges in found.items():
        missing = [t["id"] for t in paced + accepted if t["id"] not in ranges]
        assert not missing, f"{name}: {len(missing)} accepted tags not in the playlist"
        for tag in paced + accepted:
            assert ranges[tag["id"]]["START-DATE"] == tag["program_date_time"]


async def test_click_beacon_counts_and_shows_in_get(live: Live) -> None:
    http, base = live.http, live.base
    status, tag = await post_tag(http, base, {"kind": "product", "product_id": "sku-click"})
    assert status == 201
    async with aiohttp.ClientSession() as viewer:  # public: no token
        url = f"{base}/beacon/demo/tags/{tag['id']}/click"
        for expected in (1, 2, 3):
            async with viewer.post(url) as r:
                assert r.status == 200
                assert await r.json() == {"clicks": expected}
                assert r.headers["Access-Control-Allow-Origin"] == "*"
        for wrong in (
            f"{base}/beacon/demo/tags/t-unknown/click",
            f"{base}/beacon/idle2/tags/{tag['id']}/click",  # the tag is not that stream's
        ):
            async with viewer.post(wrong) as r:
                assert r.status == 404
                assert error_of(await r.json()) == "not_found"
        # The replay page says where its clicks come from; the total goes on counting.
        for expected in (4, 5):
            async with viewer.post(url, params={"source": "replay"}) as r:
                assert r.status == 200
                assert await r.json() == {"clicks": expected}
        async with viewer.post(url, params={"source": "live"}) as r:
            assert await r.json() == {"clicks": 6}
        async with viewer.post(url, params={"source": "<vod>" * 100}) as r:
            assert r.status == 422
            assert error_of(await r.json()) == "invalid"
            assert "<vod>" not in (await r.text())  # the bad value is not echoed
    listed = await get_tags(http, base)
    assert listed[tag["id"]]["clicks"] == 6
    assert listed[tag["id"]]["clicks_by_source"] == {"live": 4, "replay": 2}
    assert all(t["clicks"] == 0 for i, t in listed.items() if i != tag["id"])
    assert all(
        t["clicks_by_source"] == {"live": 0, "replay": 0}
        for i, t in listed.items()
        if i != tag["id"]
    )
