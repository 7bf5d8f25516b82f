"""Posters, tag thumbnails and clips from a real show: ffmpeg publishes barcoded frames (each
frame carries its number, tests/e2e/barcode.py) to a real origin; PyAV decodes what it serves.

One show serves every check (the machine is small): while it is live, the poster is the newest
segment's IDR and each tag's thumbnail shows the tagged frame's barcode; after it, clips cut from
its recording (by tag and by range) start on a keyframe at or before the start asked for, hold
the frames asked for, carry their tags as emsg ID3 between moov and mdat, and bad ranges get 422.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

from packager.fmp4 import iter_boxes
from shopcast.config import PackagerSection
from shopcast.server import ShopcastServer

from . import barcode
from .conftest import API_TOKEN, FFMPEG, Origin, make_config, requires_ffmpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
SECONDS = 16  # of published video
TOP = "360p"  # the top rung of the e2e ladder: 360×640
#: Tags on frames this many seconds ahead of the newest ingested one when they are posted.
AHEAD = (1.5, 3.0, 5.0)
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
async def show_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    """An origin whose show ends one second after the publisher leaves."""
    config = make_config(tmp_path)
    config = dataclasses.replace(config, packager=PackagerSection(reconnect_window=1.0))
    server = ShopcastServer(config)
    await server.start()
    yield Origin(server)
    await server.close()


def decode_jpeg(data: bytes) -> np.ndarray:
    assert data[:2] == b"\xff\xd8", "not a JPEG (no SOI marker)"
    with av.open(io.BytesIO(data), "r", format="image2pipe") as jpeg:
        frame = next(jpeg.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def first_frame_number(init: bytes, segment: bytes) -> tuple[int, bool]:
    """Barcode of a segment's first frame, and whether that frame is a keyframe."""
    with av.open(io.BytesIO(init + segment), "r", format="mp4") as media:
        frame = next(media.decode(video=0))
        return barcode.read(frame.to_ndarray(format="rgb24")), frame.key_frame


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.2)


async def test_posters_thumbnails_and_clips_of_a_show(show_origin: Origin, tmp_path: Path) -> None:
    origin = show_origin
    assert FFMPEG is not None
    flv = tmp_path / "barcode.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, SECONDS)
    publisher = await asyncio.create_subprocess_exec(
        *[FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(flv)],
        *["-c", "copy", "-f", "flv", origin.rtmp_url(await origin.key())],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"{origin.http}/hls/demo"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/poster.jpg") as r:
                assert r.status == 404  # nothing live yet

            async def two_segments() -> bool:
                package = origin.server.pipelines.package("demo")
                top = package.top_rendition() if package is not None else None
                return top is not None and sum(s.complete for s in top.state.segments) >= 2

            await wait_for(two_segments, 30, "two segments on the top rung")

            # Tags on frames still ahead of the newest ingested one.
            session = origin.server.streams.sessions["demo"]
            assert session.stats.newest_pts_ms is not None
            newest = round(session.stats.newest_pts_ms * barcode.FPS / 1000)
            tagged: dict[str, int] = {}
            for n, ahead in enumerate(AHEAD):
                frame = newest + round(ahead * barcode.FPS)
                body = {
                    "kind": "product",
                    "product_id": f"sku-{n}",
                    "at": barcode.pts_ms(frame),
                }
                async with http.post(
                    f"{origin.http}/api/v1/streams/demo/tags", json=body, headers=AUTH
                ) as r:
                    created = await r.json()
                    assert r.status == 201, created
                assert created["thumbnail_url"].endswith(f"/hls/demo/tags/{created['id']}.jpg")
                tagged[created["id"]] = frame

            # The poster: the newest complete segment's IDR, at the top rung's size.
            package = origin.server.pipelines.package("demo")
            assert package is not None
            top = package.top_rendition()
            assert top is not None and top.name == TOP
            async with http.get(f"{base}/poster.jpg") as r:
                assert r.status == 200, await r.text()
                assert r.content_type == "image/jpeg"
                assert r.headers["Cache-Control"] == "public, max-age=1"
                poster = await r.read()
            newest_seg = [s for s in top.state.segments if s.complete][-1]
            async with http.get(f"{base}/{TOP}/{newest_seg.uri}") as r:
                segment = await r.read()
            async with http.get(f"{base}/{TOP}/init.mp4") as r:
                init = await r.read()
            picture = decode_jpeg(poster)
            assert picture.shape[:2] == (640, 360)
            number, key = first_frame_number(init, segment)
            assert key
            # The newest segment may have completed between the poster and our look.
            assert barcode.read(picture) in (number, number - 2 * barcode.FPS), number

            # Thumbnails: requested at once (the server waits for the tagged frame's segment)
            # and again later (cached): the tagged frame's barcode each time.
            async with http.get(f"{origin.http}/api/v1/streams/demo/tags", headers=AUTH) as r:
                listed = (await r.json())["tags"]
            urls = {t["id"]: t["thumbnail_url"] for t in listed}
            assert set(urls) == set(tagged)
            for tag_id, frame in tagged.items():
                for _ in range(2):
                    async with http.get(urls[tag_id]) as r:
                        assert r.status == 200, await r.text()
                        assert r.content_type == "image/jpeg"
                        thumb = decode_jpeg(await r.read())
                    assert thumb.shape[:2] == (640, 360)
                    assert barcode.read(thumb) == frame, (tag_id, frame)
            async with http.get(f"{base}/tags/t0000deadbeef.jpg") as r:
                assert r.status == 404
            async with http.get(f"{origin.http}/hls/other/tags/{next(iter(tagged))}.jpg") as r:
                assert r.status == 404  # only under its own stream's path

            # After the show: no poster.
            await asyncio.wait_for(publisher.wait(), SECONDS + 30)
            await wait_for(lambda: _ended(origin), 15, "the show to end")
            async with http.get(f"{base}/poster.jpg") as r:
                assert r.status == 404

            await check_clips(origin, http, tagged)
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()


async def _ended(origin: Origin) -> bool:
    package = origin.server.pipelines.package("demo")
    return package is None or package.ended


async def check_clips(origin: Origin, http: aiohttp.ClientSession, tagged: dict[str, int]) -> None:
    api = f"{origin.http}/api/v1"

    async def ready() -> bool:
        async with http.get(f"{api}/streams/demo/recordings", headers=AUTH) as r:
            rows = (await r.json())["recordings"]
        return bool(rows) and rows[0]["state"] == "ready"

    await wait_for(ready, 20, "the recording to be ready")
    async with http.get(f"{api}/streams/demo/recordings", headers=AUTH) as r:
        (recording,) = (await r.json())["recordings"]
    rid, total = recording["id"], recording["duration"]
    # Frame number at recording time t: the first recorded frame's barcode + t × fps.
    vod = f"{origin.http}/vod/{rid}/{TOP}"
    async with http.get(f"{vod}/index.m3u8") as r:
        first_uri = next(line for line in (await r.text()).splitlines() if line.endswith(".m4s"))
    async with http.get(f"{vod}/init.mp4") as r:
        init = await r.read()
    async with http.get(f"{vod}/{first_uri}") as r:
        first_frame, _ = first_frame_number(init, await r.read())

    def frame_at(seconds: float) -> int:
        return first_frame + round(seconds * barcode.FPS)

    async def cut(body: dict[str, Any], status: int = 201) -> dict[str, Any]:
        async with http.post(f"{api}/recordings/{rid}/clips", json=body, headers=AUTH) as r:
            out: dict[str, Any] = await r.json()
            assert r.status == status, (body, out)
        return out

    ids = list(tagged)
    # The recording's poster: its first product tag's frame.
    async with http.get(f"{origin.http}/vod/{rid}/poster.jpg") as r:
        assert r.status == 200 and r.content_type == "image/jpeg"
        assert barcode.read(decode_jpeg(await r.read())) == tagged[ids[0]]
    async with http.get(f"{origin.http}/vod/{'A' * 22}/poster.jpg") as r:
        assert r.status == 404

    # By tag: from the tag's frame to the next product tag (1.5 s later).
    clip = await cut({"tag_id": ids[0]})
    assert set(clip) >= {"id", "url", "start", "end", "duration", "tag_ids"}
    assert clip["url"].endswith(f"/clips/{clip['id']}.mp4") and len(clip["id"]) >= 22
    tag_time = (tagged[ids[0]] - first_frame) / barcode.FPS
    next_time = (tagged[ids[1]] - first_frame) / barcode.FPS
    assert clip["start"] <= tag_time + 0.001 and abs(clip["end"] - next_time) <= 1.5 / 30
    assert clip["tag_ids"] == [ids[0]]
    await check_clip(http, clip, frame_at, must_hold=tagged[ids[0]], tag_ids=[ids[0]])

    # By tag, capped by max_duration.
    clip = await cut({"tag_id": ids[2], "max_duration": 1})
    tag_time = (tagged[ids[2]] - first_frame) / barcode.FPS
    assert abs(clip["end"] - (tag_time + 1)) <= 1.5 / 30, clip
    await check_clip(http, clip, frame_at, must_hold=tagged[ids[2]], tag_ids=[ids[2]])

    # By range: starts at the IDR at or before 3.3 s, ends at 7.1 s, tags inside carried.
    clip = await cut({"start": 3.3, "end": 7.1})
    assert clip["start"] <= 3.3 and abs(clip["end"] - 7.1) <= 1.5 / 30
    # Tags sit on the frame grid; the clip ends where its frames end (within a frame of 7.1 s),
    # so a tag on the frame at 7.1 s is in or out by the clip's real end, not the asked one.
    end = clip["end"] - 0.5 / 30
    inside = [i for i, f in tagged.items() if clip["start"] <= (f - first_frame) / 30 < end]
    assert clip["tag_ids"] == inside
    await check_clip(http, clip, frame_at, must_hold=frame_at(3.3), tag_ids=inside)

    # Bad input: 422 with the API's error shape, 404 for unknown recordings and clips.
    for body, code in (
        ({"start": 5, "end": 5}, "invalid_range"),
        ({"start": 6, "end": 2}, "invalid_range"),
        ({"start": -1, "end": 2}, "out_of_range"),
        ({"start": 1, "end": total + 5, "max_duration": 300}, "out_of_range"),
        ({"start": 0, "end": 31}, "too_long"),
        ({"start": 0, "end": 5, "max_duration": 301}, "invalid"),
        ({"tag_id": "t0000deadbeef"}, "unknown_tag"),
        ({"tag_id": ids[0], "start": 1}, "invalid"),
        ({"start": "1", "end": 2}, "invalid"),
    ):
        error = await cut(body, 422)
        assert error["error"]["code"] == code, (body, error)
        assert error["error"]["message"]
    async with http.post(
        f"{api}/recordings/{'A' * 22}/clips", json={"start": 0, "end": 1}, headers=AUTH
    ) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    async with http.get(f"{origin.http}/clips/{'A' * 22}.mp4") as r:
        assert r.status == 404

    # The recording's clips go with it.
    async with http.delete(f"{api}/recordings/{rid}", headers=AUTH) as r:
        assert r.status == 204
    async with http.get(clip["url"]) as r:
        assert r.status == 404


async def check_clip(
    http: aiohttp.ClientSession,
    clip: dict[str, Any],
    frame_at: Any,
    must_hold: int,
    tag_ids: list[str],
) -> None:
    """The served MP4: moov before mdat, the tags' emsg between them, H.264 + AAC starting on
    a keyframe at the clip's start, every frame through its end, ``must_hold`` among them."""
    async with http.get(clip["url"]) as r:
        assert r.status == 200 and r.content_type == "video/mp4"
        data = await r.read()
    async with http.get(clip["url"], headers={"Range": "bytes=0-99"}) as r:
        assert r.status == 206 and await r.read() == data[:100]
    top = [(kind, data[start:end]) for kind, start, end in iter_boxes(data)]
    kinds = [k for k, _ in top]
    assert kinds[0] == b"ftyp" and kinds.index(b"moov") < kinds.index(b"mdat"), kinds
    emsgs = [body for kind, body in top if kind == b"emsg"]
    assert all(
        kinds.index(b"moov") < i < kinds.index(b"mdat") for i, k in enumerate(kinds) if k == b"emsg"
    )
    assert len(emsgs) == len(tag_ids)
    for body, tag_id in zip(emsgs, tag_ids, strict=True):
        assert body[0] == 1  # version 1: absolute presentation time
        timescale, presentation = struct.unpack_from(">IQ", body, 4)
        assert b"https://aomedia.org/emsg/ID3" in body and tag_id.encode() in body
        assert 0 <= presentation / timescale <= clip["duration"]
    with av.open(io.BytesIO(data), "r") as mp4:
        assert {s.codec_context.name for s in mp4.streams} == {"h264", "aac"}
        video = mp4.streams.video[0]
        assert (video.width, video.height) == (360, 640)
        frames = list(mp4.decode(video=0))
    numbers = [barcode.read(f.to_ndarray(format="rgb24")) for f in frames]
    assert frames[0].key_frame
    assert numbers[0] == frame_at(clip["start"]), (numbers[0], clip)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), numbers
    assert abs(len(frames) / barcode.FPS - clip["duration"]) <= 1.5 / barcode.FPS
    assert must_hold in numbers
