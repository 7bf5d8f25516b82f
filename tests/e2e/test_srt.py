"""SRT ingest end to end: Debian ffmpeg publishes MPEG-TS over SRT (libsrt) on loopback."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from benchmarks.harness.whip_client import fetch_and_decode
from ingest.media import MediaKind
from ingest.srt.server import UNAVAILABLE
from shopcast.server import ShopcastServer

from .conftest import API_TOKEN, FFMPEG, Origin, make_config, requires_ffmpeg, run_ffmpeg

pytestmark = [
    pytest.mark.e2e,
    requires_ffmpeg,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or ""),
]


@pytest.fixture
async def srt_origin(tmp_path: Path) -> AsyncIterator[Origin]:
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    assert server.srt_available
    yield Origin(server)
    await server.close()


def srt_url(origin: Origin, stream_id: str) -> str:
    """ffmpeg passes streamid on verbatim; linger lets its last packets arrive before it hangs
    up (without it libsrt drops what is still in flight, as srt-live-transmit sees too)."""
    port = origin.server.srt.port
    return f"srt://127.0.0.1:{port}?linger=2&streamid={stream_id}"


def ffmpeg_srt_args(url: str, *, codec: str = "libx264", seconds: float = 6.0) -> list[str]:
    """Debian ffmpeg sending testsrc2 + sine as MPEG-TS over SRT, in real time."""
    assert FFMPEG is not None
    args = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re"]
    args += ["-f", "lavfi", "-i", "testsrc2=size=180x320:rate=30"]
    args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds)]
    args += ["-c:v", codec, "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if codec == "libx264":
        args += ["-g", "30", "-bf", "0"]
    else:
        args += ["-x265-params", "keyint=30:log-level=error"]
    return [*args, "-c:a", "aac", "-b:a", "64k", "-f", "mpegts", url]


async def status(http: aiohttp.ClientSession, origin: Origin) -> dict:  # type: ignore[type-arg]
    async with http.get(
        f"{origin.http}/api/v1/streams/demo", headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("codec", "form"),
    [("libx264", "access"), pytest.param("libx265", "publish", id="hevc-publish-form")],
)
async def test_srt_publish_goes_live(srt_origin: Origin, codec: str, form: str) -> None:
    origin = srt_origin
    key = await origin.key()
    stream_id = f"#!::r=demo,m=publish,k={key}" if form == "access" else f"publish:{key}"
    publisher = asyncio.ensure_future(
        run_ffmpeg(ffmpeg_srt_args(srt_url(origin, stream_id), codec=codec))
    )
    async with aiohttp.ClientSession() as http:
        decoded = await fetch_and_decode(http, origin.http, "demo", min_parts=6, timeout=40)
        assert decoded.video_frames >= 10 and decoded.audio_frames >= 10, decoded
        live = await status(http, origin)
        assert live["state"] == "live"
        assert live["ingest"]["protocol"] == "srt"
        assert live["ingest"]["video"]["codec"] == ("h264" if codec == "libx264" else "hevc")
        assert live["ingest"]["audio"]["codec"] == "aac"
        video_status = live["ingest"]["video"]
        assert (video_status["width"], video_status["height"]) == (180, 320)
        code, err = await publisher
        assert code == 0, err
        for _ in range(100):
            if not origin.server.streams.sessions:
                break
            await asyncio.sleep(0.05)
        assert (await status(http, origin))["state"] == "offline"
    capture = origin.captures[0]
    units = await capture.drain()
    video = capture.frames(MediaKind.VIDEO)
    # Every frame, none missing in between (3000 ticks at 30 fps).
    assert [b.dts - a.dts for a, b in itertools.pairwise(video)] == [3000] * 179
    assert video[0].keyframe and sum(u.keyframe for u in video) == 6  # a GOP of 30
    assert units[0].is_config or units[1].is_config


async def test_srt_wrong_key_refused(srt_origin: Origin) -> None:
    origin = srt_origin
    url = srt_url(origin, "#!::r=demo,m=publish,k=not-the-key")
    code, err = await run_ffmpeg(ffmpeg_srt_args(url, seconds=3))
    assert code != 0 and "Connection to srt://" in err and "failed" in err, err
    assert not origin.captures and not origin.server.streams.sessions
    assert origin.server.srt.handshake_refusals == 1  # rejected before any accept
    assert not origin.server.srt.publishers


async def test_srt_key_of_another_stream_refused(srt_origin: Origin) -> None:
    origin = srt_origin
    other = await origin.server.store.create_stream("other")
    url = srt_url(origin, f"#!::r=demo,m=publish,k={other.stream_key}")
    code, _ = await run_ffmpeg(ffmpeg_srt_args(url, seconds=3))
    assert code != 0
    assert not origin.captures


class LossyLink(asyncio.DatagramProtocol):
    """A UDP relay between one SRT caller and the origin that drops ``loss`` of the datagrams
    in each direction (seeded): libsrt's retransmission has to fill the holes."""

    def __init__(self, target: tuple[str, int], loss: float) -> None:
        self.target = target
        self.loss = loss
        self.rng = random.Random(2)
        self.dropped = self.relayed = 0
        self.caller: tuple[str, int] | None = None
        self.front: asyncio.DatagramTransport | None = None
        self.back: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.caller = addr
        if self.back is not None:
            self._relay(self.back, data, None)

    def from_origin(self, data: bytes) -> None:
        if self.front is not None and self.caller is not None:
            self._relay(self.front, data, self.caller)

    def _relay(self, out: asyncio.DatagramTransport, data: bytes, to: Any) -> None:
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.relayed += 1
        out.sendto(data, to)


class _Back(asyncio.DatagramProtocol):
    def __init__(self, link: LossyLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.link.from_origin(data)


async def test_srt_survives_two_percent_loss(srt_origin: Origin) -> None:
    origin = srt_origin
    loop = asyncio.get_running_loop()
    link = LossyLink(("127.0.0.1", origin.server.srt.port), 0.02)
    front, _ = await loop.create_datagram_endpoint(lambda: link, local_addr=("127.0.0.1", 0))
    back, _ = await loop.create_datagram_endpoint(
        lambda: _Back(link), remote_addr=("127.0.0.1", origin.server.srt.port)
    )
    link.back = back
    port = front.get_extra_info("sockname")[1]
    # ffmpeg's latency is in µs: 400 ms gives retransmissions room on a 2 % lossy link
    url = f"srt://127.0.0.1:{port}?linger=2&latency=400000&streamid=publish:{await origin.key()}"
    try:
        code, err = await run_ffmpeg(ffmpeg_srt_args(url))
    finally:
        front.close()
        back.close()
    assert code == 0, err
    total = link.dropped + link.relayed
    assert link.dropped >= 10 and 0.01 < link.dropped / total < 0.04, (link.dropped, total)
    capture = origin.captures[0]
    await capture.drain()
    video = capture.frames(MediaKind.VIDEO)
    # every frame in order despite the holes: libsrt retransmitted within the latency window
    assert [b.dts - a.dts for a, b in itertools.pairwise(video)] == [3000] * 179
    assert origin.server.streams.states["demo"].last_error is None


async def test_without_libsrt_srt_is_reported_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A build without libsrt's headers: RTMP and WHIP serve; SRT says why it is off."""
    from ingest.srt import server as srt_server

    monkeypatch.setattr(srt_server, "libsrt", None)
    monkeypatch.setattr(srt_server, "UNAVAILABLE", "SRT ingest is unavailable: (test)")
    server = ShopcastServer(make_config(tmp_path))
    await server.start()
    try:
        assert not server.srt_available
        assert "SRT ingest is unavailable: (test)" in caplog.text
        urls = server.urls("demo", "k")
        assert "srt_url" not in urls and urls["rtmp_url"].startswith("rtmp://")
    finally:
        await server.close()
