"""Replay: a real ffmpeg show is recorded as it goes and plays back as VOD with its tags.

The published frames carry their number as a barcode (tests/e2e/barcode.py), so PyAV can say
which frame of the show each decoded frame is, in the live rendition and in the recording.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest

from benchmarks.harness.serve_env import SHOPCAST, serve_env
from packager.playlist import parse_media_playlist
from packager.tags import SHOW_CLASS
from shopcast.config import HooksSection, PackagerSection, StoreSection
from shopcast.server import ShopcastServer
from shopcast.store import make_store
from tests.packager.id3 import parse_emsg, read_txxx

from . import barcode
from .conftest import API_TOKEN, FFMPEG, Origin, make_config, requires_ffmpeg
from .test_doors import SECRET, Receiver, valid_signature

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
FRAME = 1 / barcode.FPS
RENDITIONS = ("360p", "180p")


@asynccontextmanager
async def origin_with(
    tmp_path: Path, reconnect_window: float = 2.0, hooks: HooksSection | None = None
) -> AsyncIterator[Origin]:
    config = make_config(tmp_path)
    config = replace(
        config,
        packager=PackagerSection(reconnect_window=reconnect_window),
        hooks=hooks or config.hooks,
    )
    server = ShopcastServer(config)
    await server.start()
    try:
        yield Origin(server)
    finally:
        await server.close()


async def flv(tmp_path: Path, seconds: float, name: str = "show.flv") -> tuple[Path, int]:
    path = tmp_path / name
    frames = await asyncio.to_thread(barcode.encode_flv, path, seconds)
    return path, frames


async def publish(path: Path, url: str) -> asyncio.subprocess.Process:
    assert FFMPEG is not None
    return await asyncio.create_subprocess_exec(
        *[FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(path)],
        *["-c", "copy", "-f", "flv", url],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, Any]:
    async with http.get(url) as r:
        return r.status, await r.read(), r.headers


async def text(http: aiohttp.ClientSession, url: str) -> str:
    status, body, _ = await get(http, url)
    assert status == 200, (url, status, body[:200])
    return body.decode()


async def wait_live(http: aiohttp.ClientSession, base: str, stream: str = "demo") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body, _ = await get(http, f"{base}/hls/{stream}/master.m3u8")
        if status == 200 and body.count(b"#EXT-X-STREAM-INF") == len(RENDITIONS):
            pl = await text(http, f"{base}/hls/{stream}/{RENDITIONS[-1]}/index.m3u8")
            if pl.count("#EXT-X-PART:") >= 3:
                return
        await asyncio.sleep(0.1)
    raise AssertionError("the stream did not go live")


async def until_ended(http: aiohttp.ClientSession, url: str) -> str:
    """The live playlist once it has its ENDLIST (the reconnect window has passed)."""
    deadline = time.monotonic() + 20
    while "#EXT-X-ENDLIST" not in (pl := await text(http, url)):
        assert time.monotonic() < deadline, pl[-300:]
        await asyncio.sleep(0.2)
    return pl


async def recordings(http: aiohttp.ClientSession, base: str, stream: str = "demo") -> list[Any]:
    async with http.get(f"{base}/api/v1/streams/{stream}/recordings") as r:
        assert r.status == 200, await r.text()
        return list((await r.json())["recordings"])


async def wait_recording(
    http: aiohttp.ClientSession, base: str, states: tuple[str, ...], stream: str = "demo"
) -> dict[str, Any]:
    deadline = time.monotonic() + 40
    while True:
        recs = await recordings(http, base, stream)
        if recs and recs[-1]["state"] in states:
            return dict(recs[-1])
        assert time.monotonic() < deadline, recs
        await asyncio.sleep(0.2)


def segments(playlist: str) -> list[tuple[str, float, bool, str]]:
    """(uri, EXTINF, discontinuity before it, program date-time) of each listed segment."""
    return [
        (s.uri, s.duration, s.discontinuity, s.program_date_time)
        for s in parse_media_playlist(playlist).segments
    ]


def dateranges(playlist: str) -> dict[str, dict[str, str]]:
    """ID → attributes of the tags' DATERANGEs (the live show's own range left out)."""
    out = {}
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-DATERANGE:"):
            attrs = dict(re.findall(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)', line[17:]))
            if attrs.get("CLASS") != f'"{SHOW_CLASS}"':
                out[attrs["ID"].strip('"')] = attrs
    return out


def emsgs(segment: bytes) -> list[dict[str, Any]]:
    """Every top-level emsg of a segment, with the shopcast tag id from its ID3."""
    out, pos = [], 0
    while pos + 8 <= len(segment):
        size, kind = struct.unpack_from(">I4s", segment, pos)
        if kind == b"emsg":
            msg = parse_emsg(segment[pos + 8 : pos + size])
            msg["tag"] = json.loads(read_txxx(msg["data"])["com.shopcast.tag"])["id"]
            out.append(msg)
        pos += size
    return out


def decode(init: bytes, segs: list[bytes], tmp: Path) -> list[tuple[int, int]]:
    """(pts in the track timescale, barcode) of every decoded video frame of init + segments."""
    path = tmp.with_suffix(".mp4")
    path.write_bytes(init + b"".join(segs))
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            assert frame.pts is not None
            out.append((int(frame.pts), barcode.read(frame.to_ndarray(format="rgb24"))))
    return out


async def fetch_rendition(
    http: aiohttp.ClientSession, base: str, playlist: str
) -> tuple[bytes, list[bytes]]:
    init = (await get(http, f"{base}/init.mp4"))[1]
    segs = []
    for uri, *_ in segments(playlist):
        status, body, _ = await get(http, f"{base}/{uri}")
        assert status == 200, (uri, status)
        segs.append(body)
    return init, segs


async def test_show_is_recorded_and_replays_with_its_tags(tmp_path: Path) -> None:
    show, frames = await flv(tmp_path, 12)
    async with origin_with(tmp_path) as origin, aiohttp.ClientSession(headers=AUTH) as http:
        base = origin.http
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        try:
            await wait_live(http, base)
            session = origin.server.streams.sessions["demo"]
            assert session.stats.newest_pts_ms is not None
            newest = round(session.stats.newest_pts_ms * barcode.FPS / 1000)
            tagged: dict[str, int] = {}
            for n, ahead in enumerate((1.5, 3.0, 4.5)):
                frame = newest + round(ahead * barcode.FPS)
                body = {"kind": "product", "product_id": f"sku-{n}", "at": barcode.pts_ms(frame)}
                async with http.post(f"{base}/api/v1/streams/demo/tags", json=body) as r:
                    tag = await r.json()
                    assert r.status == 201, tag
                tagged[tag["id"]] = frame
            # A tag posted after its frame went out ("at" in the past): late in the media,
            # in the replay all the same.
            body = {"kind": "product", "product_id": "sku-late", "at": barcode.pts_ms(newest - 15)}
            async with http.post(f"{base}/api/v1/streams/demo/tags", json=body) as r:
                late = await r.json()
                assert r.status == 201 and late["late"], late
            # While the show goes on: one recording, an EVENT playlist without ENDLIST.
            rec = await wait_recording(http, base, ("recording",))
            assert re.fullmatch(r"[A-Za-z0-9_-]{22}", rec["id"])
            event = await text(http, f"{base}/vod/{rec['id']}/{RENDITIONS[0]}/index.m3u8")
            assert "#EXT-X-PLAYLIST-TYPE:EVENT" in event and "#EXT-X-ENDLIST" not in event
            async with http.delete(f"{base}/api/v1/recordings/{rec['id']}") as r:
                assert r.status == 409  # not while it records
            assert await publisher.wait() == 0
        finally:
            if publisher.returncode is None:
                publisher.kill()
                await publisher.wait()
        # The live playlists still list the whole (12 s < live window) show.
        live: dict[str, tuple[str, bytes, list[bytes]]] = {}
        for name in RENDITIONS:
            pl = await until_ended(http, f"{base}/hls/demo/{name}/index.m3u8")
            init, segs = await fetch_rendition(http, f"{base}/hls/demo/{name}", pl)
            live[name] = (pl, init, segs)

        rec = await wait_recording(http, base, ("ready", "failed"))
        assert rec["state"] == "ready", rec
        assert len(await recordings(http, base)) == 1
        assert rec["store"] == "file" and rec["tags"] == 4 and rec["error"] is None
        assert {r["name"] for r in rec["renditions"]} == set(RENDITIONS)
        vod = f"{base}/vod/{rec['id']}"
        status, master, headers = await get(http, f"{vod}/master.m3u8")
        assert status == 200 and master.count(b"#EXT-X-STREAM-INF") == 2
        assert rec["playback_url"].endswith(f"/vod/{rec['id']}/master.m3u8")
        total_bytes = 0
        for name in RENDITIONS:
            live_pl, live_init, live_segs = live[name]
            pl = await text(http, f"{vod}/{name}/index.m3u8")
            assert "#EXT-X-PLAYLIST-TYPE:VOD" in pl and pl.rstrip().endswith("#EXT-X-ENDLIST")
            listed = segments(pl)
            assert all(pdt for *_, pdt in listed)  # every segment has its PROGRAM-DATE-TIME
            assert [(u, d, p) for u, d, _, p in listed] == [
                (u, d, p) for u, d, _, p in segments(live_pl)
            ]
            duration = sum(d for _, d, _, _ in listed)
            assert abs(duration - frames * FRAME) <= FRAME + 1e-3, (name, duration, frames)
            # Same DATERANGE ID and START-DATE as live, for every tag of the show.
            ranges, live_ranges = dateranges(pl), dateranges(live_pl)
            assert set(ranges) == {*tagged, late["id"]} == set(live_ranges)
            for tag_id in ranges:
                assert ranges[tag_id]["START-DATE"] == live_ranges[tag_id]["START-DATE"]
            init, segs = await fetch_rendition(http, f"{vod}/{name}", pl)
            assert init == live_init and segs == live_segs  # the bytes the live viewers got
            total_bytes += sum(map(len, segs))
            status, _, headers = await get(http, f"{vod}/{name}/{listed[0][0]}")
            assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
            # PyAV decodes every segment; the frames are the live rendition's, all of the show.
            decoded = await asyncio.to_thread(decode, init, segs, tmp_path / f"vod-{name}")
            live_decoded = await asyncio.to_thread(
                decode, live_init, live_segs, tmp_path / f"live-{name}"
            )
            assert len(decoded) == len(live_decoded) == frames, (name, len(decoded), frames)
            assert [b for _, b in decoded] == [n % 4096 for n in range(frames)]
            # Each tag's emsg lands on the barcode frame it tagged.
            at = {}
            for seg in segs:
                for msg in emsgs(seg):
                    if msg["tag"] != late["id"]:
                        at[msg["tag"]] = msg["presentation_time"]
            by_pts = dict(decoded)
            assert {t: by_pts.get(pts) for t, pts in at.items()} == tagged, name
        assert rec["bytes"] >= total_bytes

        # Unknown recording: 404 everywhere; DELETE removes the files.
        for url in (f"{base}/vod/AAAAAAAAAAAAAAAAAAAAAA/master.m3u8", f"{vod}/999p/index.m3u8"):
            assert (await get(http, url))[0] == 404
        async with http.get(f"{base}/api/v1/recordings/AAAAAAAAAAAAAAAAAAAAAA") as r:
            assert r.status == 404
        files = tmp_path / "recordings" / rec["id"]
        assert (files / "manifest.json").exists()
        async with http.delete(f"{base}/api/v1/recordings/{rec['id']}") as r:
            assert r.status == 204
        assert not files.exists()
        async with http.get(f"{base}/api/v1/recordings/{rec['id']}") as r:
            assert r.status == 404
        assert (await get(http, f"{vod}/master.m3u8"))[0] == 404


@pytest.fixture
async def hooks_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.close()


async def test_reconnect_within_the_window_continues_one_recording(
    tmp_path: Path, hooks_receiver: Receiver
) -> None:
    receiver = hooks_receiver
    first, frames1 = await flv(tmp_path, 5, "first.flv")
    second, frames2 = await flv(tmp_path, 5, "second.flv")
    hooks = HooksSection(webhook_urls=(receiver.url,), webhook_secret=SECRET)
    async with (
        origin_with(tmp_path, reconnect_window=6.0, hooks=hooks) as origin,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        for show in (first, second):
            publisher = await publish(show, origin.rtmp_url(await origin.key()))
            assert await asyncio.wait_for(publisher.wait(), 30) == 0
        rec = await wait_recording(http, origin.http, ("ready", "failed"))
        assert rec["state"] == "ready", rec
        assert len(await recordings(http, origin.http)) == 1
        vod = f"{origin.http}/vod/{rec['id']}"
        for name in RENDITIONS:
            pl = await text(http, f"{vod}/{name}/index.m3u8")
            assert pl.count("#EXT-X-DISCONTINUITY\n") == 1, pl
            listed = segments(pl)
            duration = sum(d for _, d, _, _ in listed)
            # Within one frame per discontinuity (and the last frame's rounding).
            assert abs(duration - (frames1 + frames2) * FRAME) <= 2 * FRAME + 1e-3, duration
            init, segs = await fetch_rendition(http, f"{vod}/{name}", pl)
            decoded = await asyncio.to_thread(decode, init, segs, tmp_path / name)
            expected = list(range(frames1)) + list(range(frames2))
            assert [b for _, b in decoded] == expected, name
        # Webhooks: one recording.started, one recording.ready, signed.
        deadline = time.monotonic() + 10
        while len(kinds := [e["type"] for e in receiver.events() if "recording" in e["type"]]) < 2:
            assert time.monotonic() < deadline, kinds
            await asyncio.sleep(0.1)
        assert kinds == ["recording.started", "recording.ready"]
        assert all(valid_signature(h, b) for h, b in receiver.requests)
        ready = next(e for e in receiver.events() if e["type"] == "recording.ready")["data"]
        assert ready["id"] == rec["id"] and ready["playback_url"] == rec["playback_url"]
        assert abs(ready["duration"] - rec["duration"]) < 1e-6


async def test_record_false_makes_no_recording(tmp_path: Path) -> None:
    show, _ = await flv(tmp_path, 3)
    async with origin_with(tmp_path) as origin, aiohttp.ClientSession(headers=AUTH) as http:
        async with http.patch(f"{origin.http}/api/v1/streams/demo", json={"record": 1}) as r:
            assert r.status == 422
        async with http.patch(f"{origin.http}/api/v1/streams/demo", json={"record": False}) as r:
            assert r.status == 200 and (await r.json())["record"] is False
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        assert await asyncio.wait_for(publisher.wait(), 30) == 0
        await until_ended(http, f"{origin.http}/hls/demo/{RENDITIONS[0]}/index.m3u8")
        await asyncio.sleep(0.5)
        assert await recordings(http, origin.http) == []
        assert list((tmp_path / "recordings").iterdir()) == []


async def test_disk_full_fails_the_recording_and_the_show_goes_on(
    tmp_path: Path, tiny_disk: Path
) -> None:
    show, frames = await flv(tmp_path, 8)
    async with origin_with(tmp_path) as origin, aiohttp.ClientSession(headers=AUTH) as http:
        publisher = await publish(show, origin.rtmp_url(await origin.key()))
        assert await asyncio.wait_for(publisher.wait(), 30) == 0
        rec = await wait_recording(http, origin.http, ("ready", "failed"))
        assert rec["state"] == "failed" and "disk full" in rec["error"], rec
        # The live show had every frame all the same.
        for name in RENDITIONS:
            pl = await until_ended(http, f"{origin.http}/hls/demo/{name}/index.m3u8")
            duration = sum(d for _, d, _, _ in segments(pl))
            assert abs(duration - frames * FRAME) <= FRAME + 1e-3
        metrics = await text(http, f"{origin.http}/metrics")
        failures = re.search(
            r'^shopcast_recording_failures_total\{kind="store",stream="demo"\} (\S+)$',
            metrics,
            re.M,
        )
        assert failures is not None and float(failures.group(1)) >= 1, metrics[-2000:]


@asynccontextmanager
async def serve(
    tmp_path: Path, run: int, **env: str
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Any]]:
    srv = serve_env(
        tmp_path,
        SHOPCAST_API_TOKENS=API_TOKEN,
        SHOPCAST_TRANSCODE_RUNGS="180p:200k",  # passthrough 360p + one small rung
        **env,
    )
    log = (tmp_path / f"serve-{run}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        SHOPCAST, "serve", "--config", "shopcast.toml", env=srv.env, stdout=log, stderr=log
    )
    try:
        async with aiohttp.ClientSession(headers=AUTH) as http:
            deadline = time.monotonic() + 20
            while True:
                assert proc.returncode is None, (tmp_path / f"serve-{run}.log").read_text()
                try:
                    async with http.get(f"{srv.http}/api/v1/streams/demo") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline, "shopcast serve did not come up"
                await asyncio.sleep(0.1)
        yield proc, srv
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()


async def test_sigkill_mid_show_leaves_a_ready_recording(
    tmp_path: Path, hooks_receiver: Receiver
) -> None:
    store = make_store(StoreSection(path=str(tmp_path / "store.sqlite3")))
    await store.open()
    key = (await store.create_stream("demo")).stream_key
    await store.close()
    show, _ = await flv(tmp_path, 20)
    async with serve(tmp_path, 1) as (proc, srv), aiohttp.ClientSession(headers=AUTH) as http:
        publisher = await publish(show, srv.rtmp_url(key))
        try:
            pl_url = f"{srv.http}/hls/demo/180p/index.m3u8"
            deadline = time.monotonic() + 40
            while True:
                status, body, _ = await get(http, pl_url)
                if status == 200 and len(listed := segments(body.decode())) >= 4:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            complete = int(listed[-1][0].split(".")[0])  # the newest complete segment
            proc.send_signal(signal.SIGKILL)
            assert await proc.wait() == -signal.SIGKILL
        finally:
            if publisher.returncode is None:
                publisher.kill()
            await publisher.wait()
    hooks = {
        "SHOPCAST_HOOKS_WEBHOOK_URLS": hooks_receiver.url,
        "SHOPCAST_HOOKS_WEBHOOK_SECRET": SECRET,
    }
    async with (
        serve(tmp_path, 2, **hooks) as (_, srv),
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        recs = await recordings(http, srv.http)
        assert len(recs) == 1 and recs[0]["state"] == "ready", recs
        deadline = time.monotonic() + 10
        while not (ready := [e for e in hooks_receiver.events() if e["type"] == "recording.ready"]):
            assert time.monotonic() < deadline, "no recording.ready for the recovered recording"
            await asyncio.sleep(0.1)
        assert ready[0]["data"]["id"] == recs[0]["id"]
        assert ready[0]["data"]["playback_url"] == recs[0]["playback_url"]
        log = (tmp_path / "serve-2.log").read_text()
        assert f"recording {recs[0]['id']} recovered after a crash" in log, log
        vod = f"{srv.http}/vod/{recs[0]['id']}"
        for name in ("360p", "180p"):
            pl = await text(http, f"{vod}/{name}/index.m3u8")
            assert pl.rstrip().endswith("#EXT-X-ENDLIST")
            listed = segments(pl)
            msns = [int(u.split(".")[0]) for u, *_ in listed]
            # Everything up to the segment in progress when the server died (the newest
            # complete one may still have been on its way to the disk).
            assert msns == list(range(msns[0], msns[-1] + 1)) and msns[-1] >= complete - 1
            init, segs = await fetch_rendition(http, f"{vod}/{name}", pl)
            decoded = await asyncio.to_thread(decode, init, segs, tmp_path / name)
            assert [b for _, b in decoded] == list(range(len(decoded)))
            duration = sum(d for _, d, _, _ in listed)
            assert abs(duration - len(decoded) * FRAME) <= FRAME + 1e-3
