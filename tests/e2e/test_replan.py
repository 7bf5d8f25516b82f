"""An input whose picture size changes mid-show (a new AVC sequence header at an IDR, as a phone
rotating or an encoder re-configured sends): our RTMP client replays H.264 that PyAV encoded at
one size then another to a real origin; every rendition keeps going, re-planned."""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.harness.continuity import decode_segment
from ingest.rtmp import flv
from ingest.rtmp.client import RTMPPublisher
from ingest.rtmp.connection import MSG_AUDIO, MSG_VIDEO

from .conftest import Origin, requires_ffmpeg
from .test_continuity import fetch, origin, ready_show, receiver, until, watching
from .test_switching import timed_segments

__all__ = ["origin", "receiver"]  # fixtures used here

pytestmark = [pytest.mark.e2e, requires_ffmpeg]

FPS = 30


@dataclass
class Encoded:
    """One encode as RTMP would carry it: configuration records and timed access units."""

    codec: str
    config: bytes
    asc: bytes
    #: (kind, dts ms, cts ms, keyframe, payload) in decode order
    units: list[tuple[str, int, int, bool, bytes]]


def encode(path: Path, codec: str, width: int, height: int, seconds: float) -> Encoded:
    """``codec`` (1 s GOP, no B-frames) + AAC at ``width``×``height``, in an MP4 that PyAV
    demuxes back into configuration records and length-prefixed access units."""
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264" if codec == "h264" else "libx265", rate=FPS)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        video.codec_context.gop_size = FPS
        video.codec_context.max_b_frames = 0
        params = f"keyint={FPS}:min-keyint={FPS}:scenecut=0:bframes=0"
        if codec == "h264":
            video.codec_context.options = {"preset": "veryfast", "x264-params": params}
        else:
            video.codec_context.options = {
                "preset": "ultrafast",
                "x265-params": params + ":log-level=error",
            }
        audio = out.add_stream("aac", rate=48_000)
        audio.codec_context.layout = "stereo"
        samples = 0
        for n in range(round(seconds * FPS)):
            img = np.full((height, width, 3), (n * 4) % 256, dtype=np.uint8)
            img[:, : width // 3] = (255, 64, 0)  # a bar: not flat, as a camera picture
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = round(n * 1000 / FPS), Fraction(1, 1000)
            for p in video.encode(frame):
                out.mux(p)
            while samples < (n + 1) * 48_000 // FPS:
                af = av.AudioFrame.from_ndarray(
                    np.zeros((2, 1024), dtype=np.float32), format="fltp", layout="stereo"
                )
                af.sample_rate, af.pts, af.time_base = 48_000, samples, Fraction(1, 48_000)
                for p in audio.encode(af):
                    if p.pts is not None and p.pts >= 0:
                        out.mux(p)
                samples += 1024
        for p in video.encode(None):
            out.mux(p)
    units = []
    with av.open(str(path)) as src:
        v, a = src.streams.video[0], src.streams.audio[0]
        config, asc = (
            bytes(v.codec_context.extradata or b""),
            bytes(a.codec_context.extradata or b""),
        )
        for p in src.demux(v, a):
            if p.size == 0 or p.dts is None or p.pts is None or p.time_base is None:
                continue
            kind = "video" if p.stream is v else "audio"
            dts, pts = round(p.dts * p.time_base * 1000), round(p.pts * p.time_base * 1000)
            units.append((kind, dts, pts - dts, bool(p.is_keyframe), bytes(p)))
    units.sort(key=lambda u: u[1])
    return Encoded(codec, config, asc, units)


async def replay(publisher: RTMPPublisher, parts: list[Encoded], seconds: list[float]) -> None:
    """Each encode in turn, in real time, timestamps continuing; a new sequence header (video
    and audio) at the start of each, which is an IDR. HEVC goes as Enhanced RTMP ``hvc1``."""
    start, offset = time.monotonic(), 0
    for part, length in zip(parts, seconds, strict=True):
        if part.codec == "h264":
            header = flv.avc_sequence_header_body(part.config)
        else:
            header = flv.ex_video_sequence_start_body(b"hvc1", part.config)
        publisher.send_media(MSG_VIDEO, offset, header)
        publisher.send_media(MSG_AUDIO, offset, flv.aac_sequence_header_body(part.asc))
        for kind, dts, cts, key, payload in part.units:
            if dts >= length * 1000:
                break
            at = offset + dts
            await asyncio.sleep(max(0.0, start + at / 1000 - time.monotonic()))
            if kind == "audio":
                publisher.send_media(MSG_AUDIO, at, flv.aac_audio_body(payload))
            elif part.codec == "h264":
                publisher.send_media(MSG_VIDEO, at, flv.avc_video_body(payload, key, cts))
            else:
                publisher.send_media(
                    MSG_VIDEO, at, flv.ex_video_frame_body(b"hvc1", payload, key, cts)
                )
        await publisher.drain()
        offset += round(length * 1000)


@pytest.mark.parametrize(
    ("codec", "width", "height"),
    [("h264", 240, 426), ("h264", 320, 180), ("hevc", 180, 320)],
    ids=["bigger", "landscape", "hevc"],
)
async def test_a_new_video_format_mid_show_is_re_planned(
    origin: Origin, tmp_path: Path, codec: str, width: int, height: int
) -> None:
    first = await asyncio.to_thread(encode, tmp_path / "a.mp4", "h264", 180, 320, 4)
    second = await asyncio.to_thread(encode, tmp_path / "b.mp4", codec, width, height, 6)
    assert first.config != second.config
    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", await origin.key())
    await publisher.connect()
    sending = asyncio.create_task(replay(publisher, [first, second], [4, 6]))
    try:
        names = await ready_show(origin)
        package = origin.server.pipelines.package("demo")
        assert package is not None
        async with watching(origin, names) as watches:
            # Every rendition lists the new size's frames, after a discontinuity.
            await until(
                lambda: all(
                    [s for s in w.segments() if s.discontinuity >= 1][1:] for w in watches.values()
                ),
                20,
                "two segments of the new size on every rendition",
            )
            assert not package.ended and not sending.done()
            for name, w in watches.items():
                print(
                    name, [(round(p % 100, 3), d, disc) for p, d, _, disc in timed_segments(w.text)]
                )
            for name, w in watches.items():
                listed = timed_segments(w.text)
                for before, after in itertools.pairwise(listed):
                    gap = after[0] - (before[0] + before[1])
                    assert abs(gap) < 0.05, f"{name}: PDT grid broken by {gap:.3f} s at {after}"
                segments = w.segments()
                sequence = [int(s.uri.split(".")[0]) for s in segments]
                assert sequence == list(range(sequence[0], sequence[0] + len(sequence))), sequence
                opening = next(s for s in segments if s.discontinuity >= 1)
                for segment in (opening, segments[-1]):
                    init = await fetch(origin, name, segment.map_uri)
                    sizes, audio = decode_segment(init, await fetch(origin, name, segment.uri))
                    want = package.renditions[name].info
                    assert sizes and set(sizes) == {(want.width, want.height)}, (name, sizes)
                    assert audio > 0, name
            transcoder = origin.server.pipelines.pipelines["demo"].transcoder
            assert transcoder is not None
            assert transcoder.stats.faults["input_reconfigured"] == 1
            await sending
    finally:
        sending.cancel()
        await publisher.close()


async def test_a_flapping_format_is_re_planned_at_most_once_per_switch_interval(
    origin: Origin, tmp_path: Path
) -> None:
    """The picture size changes every second, five times: re-plans are rate-limited like
    switches (at most one per ``switch_interval``; the rest deferred, the latest format
    re-planned then), and each re-plan is still aligned: on every rendition an IDR opens the
    segment after each DISCONTINUITY, at the same PDT, on an unbroken PDT grid."""
    small = await asyncio.to_thread(encode, tmp_path / "a.mp4", "h264", 180, 320, 2)
    big = await asyncio.to_thread(encode, tmp_path / "b.mp4", "h264", 240, 426, 6)
    interval = origin.server.config.continuity.switch_interval
    assert interval >= 1.5, interval  # several changes fall inside one interval
    publisher = RTMPPublisher("127.0.0.1", origin.server.rtmp.port, "live", await origin.key())
    await publisher.connect()
    # 2 s to go live, then a new size every second, the last one held for 6 s.
    formats, seconds = [small, big, small, big, small, big], [2, 1, 1, 1, 1, 6]
    sending = asyncio.create_task(replay(publisher, formats, seconds))
    try:
        names = await ready_show(origin)
        pipeline = origin.server.pipelines.pipelines["demo"]
        async with watching(origin, names) as watches:
            await sending
            settled = lambda: pipeline.replan_timer is None and not pipeline.switching  # noqa: E731
            await until(settled, 10, "the last re-plan")
            replans, deferred = pipeline.replans, pipeline.replans_deferred
            print(f"re-plans: {replans}, deferred: {deferred}")
            # 5 changes in 4 s: without the limit, 5 re-plans; with it, one per interval.
            assert 1 <= replans <= 1 + math.ceil(4 / interval), (replans, deferred)
            assert deferred >= 1 and replans + deferred >= 5, (replans, deferred)
            for w in watches.values():  # each re-plan is one discontinuity, nothing else is
                assert w.discontinuity == replans, (w.discontinuity, replans)
            opened: dict[int, set[float]] = {}
            for name, w in watches.items():
                listed = timed_segments(w.text)
                for before, after in itertools.pairwise(listed):
                    gap = after[0] - (before[0] + before[1])
                    assert abs(gap) < 0.05, f"{name}: PDT grid broken by {gap:.3f} s at {after}"
                segments = {s.uri: s for s in w.segments()}
                firsts = [s for i, s in enumerate(listed) if i and s[3] != listed[i - 1][3]]
                for pdt, _, uri, disc in firsts:
                    segment = segments[uri]
                    init = await fetch(origin, name, segment.map_uri)
                    media = await fetch(origin, name, uri)
                    keys = keyframes(init, media)
                    assert keys and keys[0], f"{name}: no IDR opens discontinuity {disc}"
                    opened.setdefault(disc, set()).add(round(pdt, 2))
            assert opened, "no re-plan listed"
            assert all(len(pdts) == 1 for pdts in opened.values()), opened
    finally:
        sending.cancel()
        await publisher.close()


def keyframes(init: bytes, segment: bytes) -> list[bool]:
    """Whether each decoded video frame of ``segment`` is a keyframe."""
    with av.open(io.BytesIO(init + segment), mode="r", format="mp4") as container:
        return [bool(f.key_frame) for f in container.decode(video=0)]
