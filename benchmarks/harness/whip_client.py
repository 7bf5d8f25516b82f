"""A real WHIP publisher for tests and benchmarks: aiortc with synthetic video and a tone."""

from __future__ import annotations

import asyncio
import fractions
import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import av
import numpy as np
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

from ingest.whip.ice import CandidatePolicy
from packager.playlist import parse_media_playlist

LOOPBACK = CandidatePolicy(("127.0.0.1",))


class PatternVideo(VideoStreamTrack):
    """Portrait frames (360×640 by default) with a bar moving down and a horizontal gradient."""

    def __init__(self, width: int = 360, height: int = 640) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self._ramp = np.tile(
            np.linspace(16, 235, width, dtype=np.uint8), (height, 1)
        )  # luma gradient
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        y = self._ramp.copy()
        top = (self.frames * 8) % self.height
        y[top : top + 40, :] = 235
        uv = np.full((self.height // 2, self.width), 128, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(np.vstack([y, uv]), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.frames += 1
        return frame


class ToneAudio(AudioStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz mono (what Opus encodes without resampling)."""

    rate = 48_000
    samples = 960

    def __init__(self) -> None:
        super().__init__()
        self._t = 0

    async def recv(self) -> av.AudioFrame:
        await super().recv()  # paces the track (20 ms per frame); its silence is discarded
        n = np.arange(self._t, self._t + self.samples)
        pcm = (np.sin(2 * math.pi * 440 * n / self.rate) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._t
        frame.time_base = fractions.Fraction(1, self.rate)
        self._t += self.samples
        return frame


@dataclass
class Published:
    """A running WHIP publish: its peer connection and the session URL."""

    pc: RTCPeerConnection
    location: str
    answer: str
    headers: Mapping[str, str]
    channel: RTCDataChannel | None = None


def make_offerer(
    video_codec: str | None = "H264", audio: bool = True, size: tuple[int, int] | None = None
) -> RTCPeerConnection:
    """A sendonly peer connection with the test tracks, ``video_codec`` forced (or no video)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if video_codec is not None:
        video = PatternVideo(*size) if size else PatternVideo()
        transceiver = pc.addTransceiver(video, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video")
        assert caps is not None
        transceiver.setCodecPreferences(
            [c for c in caps.codecs if c.name.lower() == video_codec.lower()]
        )
    if audio:
        pc.addTransceiver(ToneAudio(), direction="sendonly")
    return pc


async def make_offer(pc: RTCPeerConnection) -> str:
    offer = await pc.createOffer()
    LOOPBACK.apply(pc)
    await pc.setLocalDescription(offer)
    return pc.localDescription.sdp


async def publish(
    http: aiohttp.ClientSession,
    base: str,
    stream_id: str,
    key: str,
    *,
    video_codec: str | None = "H264",
    audio: bool = True,
    tags_channel: bool = False,
    size: tuple[int, int] | None = None,
) -> Published:
    """POST an offer to ``base/whip/<stream_id>``; raises unless the answer is 201."""
    pc = make_offerer(video_codec, audio, size)
    channel = pc.createDataChannel("tags") if tags_channel else None
    try:
        sdp = await make_offer(pc)
        async with http.post(
            f"{base}/whip/{stream_id}",
            data=sdp,
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
        ) as resp:
            body = await resp.text()
            assert resp.status == 201, (resp.status, body)
            headers = resp.headers.copy()
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    except BaseException:
        await pc.close()
        raise
    return Published(pc, headers["Location"], body, headers, channel)


async def unpublish(http: aiohttp.ClientSession, base: str, published: Published) -> int:
    """DELETE the session URL, close the peer connection; the DELETE status."""
    async with http.delete(base + published.location) as resp:
        status = resp.status
    await published.pc.close()
    return status


async def wait_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    async def poll() -> None:
        while pc.connectionState != "connected":
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


@dataclass
class Decoded:
    """What PyAV decoded from a rendition's init segment plus its first parts."""

    rendition: str
    parts: int
    video_frames: int
    audio_frames: int
    width: int
    height: int


async def _get_text(http: aiohttp.ClientSession, url: str) -> str | None:
    async with http.get(url) as resp:
        return await resp.text() if resp.status == 200 else None


async def fetch_and_decode(
    http: aiohttp.ClientSession,
    base: str,
    stream_id: str,
    *,
    min_parts: int = 3,
    timeout: float = 30.0,
) -> Decoded:
    """Wait until the top rendition lists ``min_parts`` parts, fetch init + parts, decode."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        master = await _get_text(http, f"{base}/hls/{stream_id}/master.m3u8")
        media = None
        rendition = ""
        if master is not None:
            # The largest rendition (RESOLUTION on the EXT-X-STREAM-INF line before its URI).
            sized = re.findall(r"RESOLUTION=(\d+)x(\d+)[^\n]*\n([^#\n][^\n]*)", master)
            uris = [ln for ln in master.splitlines() if ln and not ln.startswith("#")]
            if sized or uris:  # audio-only: no RESOLUTION
                uri = max(sized, key=lambda m: int(m[0]) * int(m[1]))[2] if sized else uris[0]
                rendition = uri.split("/")[0]
                media = await _get_text(http, f"{base}/hls/{stream_id}/{uri}")
        parts = [uri for _, _, uri in parse_media_playlist(media or "").parts]
        if media is not None and len(parts) >= min_parts:
            break
        if loop.time() > deadline:
            raise TimeoutError(f"fewer than {min_parts} parts after {timeout:g} s: {media!r}")
        await asyncio.sleep(0.1)
    init = parse_media_playlist(media).map_uri
    assert init is not None, media
    data = bytearray()
    for uri in [init, *parts[:min_parts]]:
        async with http.get(f"{base}/hls/{stream_id}/{rendition}/{uri}") as resp:
            assert resp.status == 200, (uri, resp.status)
            data += await resp.read()
    video = audio = width = height = 0
    with av.open(io.BytesIO(bytes(data)), mode="r", format="mp4") as container:
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    video += 1
                    width, height = frame.width, frame.height
                elif isinstance(frame, av.AudioFrame):
                    audio += 1
    return Decoded(rendition, min_parts, video, audio, width, height)


async def _publish_many(
    base: str, targets: list[tuple[str, str]], seconds: float, size: str
) -> None:
    """Publish to every (stream id, key) at once for ``seconds``, then DELETE them all."""
    width, height = (int(v) for v in size.split("x"))
    async with aiohttp.ClientSession() as http:
        published: list[Published] = []
        try:
            for stream_id, key in targets:
                published.append(await publish(http, base, stream_id, key, size=(width, height)))
            print("published", flush=True)
            await asyncio.sleep(seconds)
        finally:
            for pub in published:
                await unpublish(http, base, pub)


def main() -> None:
    """``python -m benchmarks.harness.whip_client BASE SECONDS SIZE STREAM:KEY...`` (benchmarks)."""
    import sys

    base, seconds, size, *pairs = sys.argv[1:]
    targets = [(p.split(":", 1)[0], p.split(":", 1)[1]) for p in pairs]
    asyncio.run(_publish_many(base, targets, float(seconds), size))


if __name__ == "__main__":
    main()
