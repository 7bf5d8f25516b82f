"""Enhanced RTMP end to end: HEVC (``hvc1``), AV1 (``av01``) and VP9 (``vp09``) published with the
project's RTMP client role (Debian's ffmpeg 5.1 cannot send E-RTMP), decoded into the H.264
ladder, played."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.browser import CHROMIUM
from benchmarks.harness.mediakit import SourceCache, units_from_file
from benchmarks.harness.whip_client import fetch_and_decode
from ingest.codecs import Vp9Config
from ingest.media import MediaKind, MediaUnit
from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher
from ingest.rtmp.connection import MSG_AUDIO, MSG_VIDEO
from shopcast.web import HLS_JS

from . import barcode
from .conftest import API_TOKEN, FFMPEG, Origin, requires_ffmpeg, run_ffmpeg
from .test_hls_playback import assert_advancing
from .test_posters_clips import decode_jpeg

pytestmark = [pytest.mark.e2e, requires_ffmpeg]
#: What OBS 30 offers in ``connect`` (its enhanced-rtmp ``fourCcList``).
OBS_FOURCCS = ["av01", "vp09", "hvc1"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> SourceCache:
    return SourceCache(Path(tmp_path_factory.mktemp("ertmp-sources")))


async def send_paced(publisher: RTMPPublisher, fourcc: bytes, units: Sequence[MediaUnit]) -> int:
    """Send configs, then every unit at its dts in real time; returns the video frames sent.
    A VP9 stream's vpcC (MP4 keeps it as fields, not extradata) is written from its first
    keyframe, as an encoder would."""
    start = time.monotonic()
    frames = 0
    for unit in units:
        if unit.kind is MediaKind.VIDEO:
            if unit.is_config:
                config = unit.payload
                if fourcc == b"vp09" and not config:
                    first = next(u for u in units if u.keyframe and not u.is_config)
                    config = Vp9Config.from_keyframe(first.payload).to_bytes()
                body = flv.ex_video_sequence_start_body(fourcc, config)
            else:
                cts = unit.pts - unit.dts if fourcc == b"hvc1" else 0
                body = flv.ex_video_frame_body(fourcc, unit.payload, unit.keyframe, cts)
                frames += 1
            publisher.send_media(MSG_VIDEO, unit.dts, body)
        elif unit.is_config:
            publisher.send_media(MSG_AUDIO, 0, flv.aac_sequence_header_body(unit.payload))
        else:
            publisher.send_media(MSG_AUDIO, unit.dts, flv.aac_audio_body(unit.payload))
        await publisher.drain()
        await asyncio.sleep(max(0.0, start + unit.dts / 1000 - time.monotonic()))
    return frames


@pytest.mark.parametrize(
    ("vcodec", "fourcc", "codec"),
    [("libx265", b"hvc1", "hevc"), ("libsvtav1", b"av01", "av1"), ("libvpx-vp9", b"vp09", "vp9")],
    ids=["hevc", "av1", "vp9"],
)
async def test_enhanced_rtmp_publish_goes_live_with_an_h264_ladder(
    origin: Origin, sources: SourceCache, vcodec: str, fourcc: bytes, codec: str
) -> None:
    units = units_from_file(sources.make(size="180x320", duration=5.0, gop=30, vcodec=vcodec))
    assert [u.codec for u in units if u.is_config] == [codec, "aac"]
    publisher = RTMPPublisher(
        "127.0.0.1", origin.server.rtmp.port, "live", await origin.key(), fourcc_list=OBS_FOURCCS
    )
    await publisher.connect()
    # Answered as OBS expects: the offered FourCCs we take, in our order.
    assert publisher.connect_info["fourCcList"] == ["hvc1", "av01", "vp09"]
    sending = asyncio.ensure_future(send_paced(publisher, fourcc, units))
    try:
        async with aiohttp.ClientSession() as http:
            decoded = await fetch_and_decode(http, origin.http, "demo", min_parts=4, timeout=40)
            assert decoded.video_frames >= 10 and decoded.audio_frames >= 10, decoded
            assert (decoded.width, decoded.height) == (180, 320)
            async with http.get(f"{origin.http}/hls/demo/master.m3u8") as resp:
                master = await resp.text()
            video_codecs = re.findall(r'CODECS="([^"]*)"[^\n]*RESOLUTION', master)
            video_codecs += re.findall(r'RESOLUTION[^\n]*CODECS="([^"]*)"', master)
            assert video_codecs and all(c.startswith("avc1.") for c in video_codecs), master
            headers = {"Authorization": f"Bearer {API_TOKEN}"}
            async with http.get(f"{origin.http}/api/v1/streams/demo", headers=headers) as resp:
                live = await resp.json()
            assert live["state"] == "live" and live["ingest"]["protocol"] == "rtmp"
            video = live["ingest"]["video"]
            assert (video["codec"], video["width"], video["height"]) == (codec, 180, 320)
            sent = await sending
    finally:
        sending.cancel()
        await publisher.close()
    capture = origin.captures[0]
    await capture.drain()
    assert len(capture.frames(MediaKind.VIDEO)) == sent == 150  # every frame reached the hub
    sessions = origin.server.streams.sessions  # the publisher is gone: nothing left live
    for _ in range(100):
        if not sessions:
            break
        await asyncio.sleep(0.05)
    assert not sessions


#: Debian's encoders re-encoding the barcoded x264 show; both keep every barcode readable.
REENCODE = {
    b"av01": ["libsvtav1", "-preset", "12", "-g", "30"],
    b"hvc1": ["libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error"],
    b"vp09": ["libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30", "-b:v", "1M"],
}


@pytest.mark.parametrize(
    ("fourcc", "codec"), [(b"av01", "av1"), (b"hvc1", "hevc"), (b"vp09", "vp9")]
)
async def test_tags_land_on_the_tagged_frame(
    origin: Origin, tmp_path: Path, fourcc: bytes, codec: str
) -> None:
    """Tags placed on frames of an AV1/HEVC publish: each tag's thumbnail (cut from the H.264
    ladder) shows the tagged frame's own barcode, as for H.264 sources."""
    flv, source = tmp_path / "barcode.flv", tmp_path / "barcode.mp4"
    await asyncio.to_thread(barcode.encode_flv, flv, 12.0)  # tags stay well inside the show
    assert FFMPEG is not None
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(flv), "-c:v"]
    args += [*REENCODE[fourcc], "-c:a", "copy", str(source)]
    code, err = await run_ffmpeg(args)
    assert code == 0, err
    units = units_from_file(source)
    assert [u.codec for u in units if u.is_config] == [codec, "aac"]
    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", await origin.key())
    await publisher.connect()
    sending = asyncio.ensure_future(send_paced(publisher, fourcc, units))
    auth = {"Authorization": f"Bearer {API_TOKEN}"}
    try:
        async with asyncio.timeout(30):
            while True:
                package = origin.server.pipelines.package("demo")
                top = package.top_rendition() if package is not None else None
                if top is not None and sum(s.complete for s in top.state.segments) >= 2:
                    break
                await asyncio.sleep(0.2)
        newest_ms = origin.server.streams.sessions["demo"].stats.newest_pts_ms
        assert newest_ms is not None
        newest = round(newest_ms * barcode.FPS / 1000)
        tagged: dict[str, int] = {}
        async with aiohttp.ClientSession() as http:
            for n, ahead in enumerate((1.0, 2.5)):
                frame = newest + round(ahead * barcode.FPS)
                assert frame < 12 * barcode.FPS, "the tagged frame is past the end of the show"
                body = {"kind": "product", "product_id": f"sku-{n}", "at": barcode.pts_ms(frame)}
                async with http.post(
                    f"{origin.http}/api/v1/streams/demo/tags", json=body, headers=auth
                ) as r:
                    created = await r.json()
                    assert r.status == 201, created
                tagged[created["thumbnail_url"]] = frame
            for url, frame in tagged.items():
                async with http.get(url) as r:
                    assert r.status == 200, await r.text()
                    thumb = decode_jpeg(await r.read())
                assert barcode.read(thumb) == frame, (url, frame)
    finally:
        sending.cancel()
        await publisher.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed")
@pytest.mark.skipif(not HLS_JS.exists(), reason="hls.js not vendored (make install)")
@pytest.mark.parametrize(
    ("vcodec", "fourcc"),
    [("libx265", b"hvc1"), ("libsvtav1", b"av01"), ("libvpx-vp9", b"vp09")],
    ids=["hevc", "av1", "vp9"],
)
async def test_hlsjs_plays_the_ladder_of_an_enhanced_publish(
    origin: Origin, sources: SourceCache, browser: Any, vcodec: str, fourcc: bytes
) -> None:
    """hls.js in headless Chromium plays the H.264 ladder an HEVC/AV1/VP9 publish becomes:
    playback starts, currentTime advances, no fatal hls.js error."""
    units = units_from_file(sources.make(size="180x320", duration=25.0, gop=30, vcodec=vcodec))
    publisher = RTMPPublisher(
        "127.0.0.1", origin.server.rtmp.port, "live", await origin.key(), fourcc_list=OBS_FOURCCS
    )
    await publisher.connect()
    sending = asyncio.ensure_future(send_paced(publisher, fourcc, units))
    try:
        page = await browser.new_page()
        await page.goto(f"{origin.http}/demo/demo")
        await page.wait_for_function(
            "document.getElementById('video').currentTime > 0.5", timeout=30_000
        )
        codecs = await page.evaluate("hls.levels.map(l => l.videoCodec || '')")
        assert codecs and all(c.startswith("avc1.") for c in codecs), codecs  # the ladder
        await assert_advancing(page, 6)
        assert not sending.done(), "the publish ended before playback was checked"
    finally:
        sending.cancel()
        await publisher.close()
