"""Posters, tag thumbnails and clips from a real show: ffmpeg publishes barcoded frames (each
frame carries its number, tests/e2e/barcode.py) to a real origin; PyAV decodes what it serves.

One show serves every check (the machine is small): while it is live, the poster is the newest
segment's IDR and each tag's thumbnail shows the tagged frame's barcode.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy as np
import pytest

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


async def test_posters_and_thumbnails_of_a_live_show(show_origin: Origin, tmp_path: Path) -> None:
    origin = show_origin
    assert FFMPEG is not None
    flv = tmp_path / "barcode.flv"
    await asyncio.to_thread(barcode.encode_flv, flv, SECONDS)
    publisher = await asyncio.create_subprocess_exec(
        *[FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(flv)],
        *["-c", "copy", "-f", "flv", origin.rtmp_url(origin.key())],
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

            # After the show: no poster.
            await asyncio.wait_for(publisher.wait(), SECONDS + 30)
            await wait_for(lambda: _ended(origin), 15, "the show to end")
            async with http.get(f"{base}/poster.jpg") as r:
                assert r.status == 404
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()


async def _ended(origin: Origin) -> bool:
    package = origin.server.pipelines.package("demo")
    return package is None or package.ended
