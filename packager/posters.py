"""Pictures of a stream as JPEG: a segment's IDR decoded alone (posters), or the frame a tag
names, decoded from the segment's IDR up to it (thumbnails). Blocking: run in a worker thread.

Live posters cost one IDR decode per segment of the top rung, and only while someone asks:
:class:`PosterCache` decodes on the first request after a new segment and serves that JPEG
until the next one.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
from av.video.codeccontext import VideoCodecContext

from packager.fmp4 import fragment_timing
from packager.live import LivePackage

#: mjpeg quantiser range (2 = best, 31 = worst): near-lossless stills that stay small.
_JPEG_QUALITY = {"qmin": "2", "qmax": "4"}
#: Opening a segment: the tracks' parameters are all in the init segment, so probe as little as
#: the demuxer allows (its default probe decodes frames just to learn them).
FMP4_INPUT = {"probesize": "32", "analyzeduration": "0"}


def frame_jpeg(init: bytes, segment: bytes, offset: float | None = None) -> bytes:
    """JPEG of a segment's first frame (its IDR alone), or of the frame ``offset`` seconds after
    the segment's start (its first ``tfdt``): the frame nearest to that time."""
    with av.open(io.BytesIO(init + segment), "r", format="mp4", options=FMP4_INPUT) as src:
        if not src.streams.video:
            raise ValueError("the segment has no video")
        video = src.streams.video[0]
        tb = video.time_base or Fraction(1, 90_000)  # mp4 tracks always have one
        target = None
        if offset is not None:
            timing = fragment_timing(segment, video.id)
            if timing is None:
                raise ValueError("the segment holds no video fragment")
            target = timing[0] * tb + Fraction(offset)
        frame = None
        for frame in _decoded(src, video, keyframe_only=target is None):
            # The first frame within half a frame of the target (or past it) is the nearest.
            if target is None or (frame.pts or 0) * tb >= target - _half_frame(video):
                break
        if frame is None:
            raise ValueError("no frame decoded")
        return encode_jpeg(frame)


def _half_frame(video: av.VideoStream) -> Fraction:
    rate = video.average_rate or video.guessed_rate or 30
    return 1 / (2 * Fraction(rate))


def _decoded(src: Any, video: av.VideoStream, keyframe_only: bool) -> Iterator[av.VideoFrame]:
    """Frames in presentation order from the segment's first packet, which must be an IDR."""
    decoder = video.codec_context
    decoder.thread_count = 1  # a frame out per packet in: nothing decoded past the one wanted
    first = True
    for packet in src.demux(video):
        if packet.dts is None:
            break
        if first and not packet.is_keyframe:
            raise ValueError("the segment does not start with a keyframe")
        first = False
        yield from decoder.decode(packet)
        if keyframe_only:
            break
    yield from decoder.decode(None)


def encode_jpeg(frame: av.VideoFrame) -> bytes:
    encoder = av.CodecContext.create("mjpeg", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"  # full-range YUV, as JFIF expects
    encoder.time_base = Fraction(1, 1)
    encoder.options = _JPEG_QUALITY
    picture = frame.reformat(format="yuvj420p")
    picture.pts = 0
    return b"".join(bytes(p) for p in [*encoder.encode(picture), *encoder.encode(None)])


@dataclass(frozen=True)
class Poster:
    msn: int
    jpeg: bytes


class PosterCache:
    """The latest keyframe of each stream's top rung as a JPEG, decoded once per segment."""

    def __init__(self) -> None:
        self._posters: dict[str, Poster] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, stream_id: str, package: LivePackage) -> bytes | None:
        """The poster of the newest complete segment, or None before the first one."""
        rendition = package.top_rendition()
        if rendition is None:
            return None
        done = [s for s in rendition.state.segments if s.complete]
        data = rendition.files.get(done[-1].uri) if done else None
        if data is None:
            return None
        msn = done[-1].msn
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:  # one decode per segment, however many ask at once
            poster = self._posters.get(stream_id)
            if poster is None or poster.msn != msn:
                init = rendition.files[rendition.state.init_uri]
                jpeg = await asyncio.to_thread(frame_jpeg, init, data)
                poster = self._posters[stream_id] = Poster(msn, jpeg)
        return poster.jpeg

    def forget(self, stream_id: str) -> None:
        self._posters.pop(stream_id, None)
        self._locks.pop(stream_id, None)
