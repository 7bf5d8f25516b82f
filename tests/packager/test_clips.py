"""Clip cutting and frame pictures on segments the live packager made from real x264/AAC packets
whose frames carry their number as a barcode (tests/e2e/barcode.py), one session and across a
publisher reconnect (a discontinuity)."""

from __future__ import annotations

import io
import itertools
from fractions import Fraction

import av
import numpy as np
import pytest

from packager.clips import (
    ClipError,
    ClipTag,
    RecordedSegment,
    covering,
    cut_clip,
    insert_after_moov,
)
from packager.fmp4 import box, iter_boxes
from packager.live import LivePackage, PackagerConfig
from packager.posters import frame_jpeg
from packager.tags import id3_txxx
from tests.e2e import barcode
from transcode.output import VIDEO_TIMESCALE, EncodedPacket, RenditionInfo

from .id3 import parse_emsg, read_txxx
from .media import FPS, FRAME_TICKS, encode_audio, encode_video

Recording = tuple[bytes, list[RecordedSegment]]
SECOND_SESSION = 1000  # frame numbers of the session after the reconnect start here


def barcoded(first: int, count: int) -> list[EncodedPacket]:
    """``count`` 180×320 frames numbered from ``first``, 2 s GOPs, pts from 0 (a new session)."""
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 180, 320, "yuv420p"
    enc.time_base = Fraction(1, VIDEO_TIMESCALE)
    enc.flags |= av.codec.context.Flags.global_header
    enc.options = {"preset": "ultrafast", "g": "60", "keyint_min": "60", "sc_threshold": "0"}
    packets = []
    for i in range(count):
        img = barcode.background(first + i)
        barcode.paint(img, first + i)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(180, 320, "yuv420p")
        frame.pts, frame.time_base = i * FRAME_TICKS, enc.time_base
        if i % 60 == 0:
            frame.pict_type = av.video.frame.PictureType.I
        packets += enc.encode(frame)
    packets += enc.encode(None)
    return [
        EncodedPacket("180p", p.pts or 0, p.dts or 0, FRAME_TICKS, p.is_keyframe, bytes(p), 0.0)
        for p in packets
    ]


def _info() -> tuple[RenditionInfo, RenditionInfo]:
    video, _ = encode_video("180p", 0.1)
    audio, _ = encode_audio("audio", 0.1)
    return video, audio


@pytest.fixture(scope="module")
def recording() -> Recording:
    """8 s (frames 0..239), a reconnect, 4 s more (frames 1000..1119): the top rung's init and
    segments, timed from the recording's start like a VOD playlist."""
    video, audio = _info()
    package = LivePackage("shop", PackagerConfig())
    package.on_rendition(video)
    package.on_rendition(audio)
    package.on_ladder([video, audio])
    _, sound = encode_audio("audio", 8)
    for session, (first, count) in enumerate(((0, 240), (SECOND_SESSION, 120))):
        if session:
            package.continue_after_reconnect()
        events = [(Fraction(p.dts, VIDEO_TIMESCALE), 1, p) for p in barcoded(first, count)]
        events += [(Fraction(p.dts, 48000), 0, p) for p in sound if p.dts < count * 1600]
        for _, _, packet in sorted(events, key=lambda e: (e[0], e[1])):
            package.on_packet(packet)
        package.on_end()
    rendition = package.renditions["180p"]
    segments, start = [], 0.0
    for seg in rendition.state.segments:
        assert seg.complete
        data = rendition.files[seg.uri]
        segments.append(RecordedSegment(start, float(seg.duration), data, seg.discontinuity))
        start += float(seg.duration)
    return rendition.files[rendition.state.init_uri], segments


def numbers(mp4: bytes) -> tuple[list[int], list[float], bool]:
    """Barcodes and times of every video frame, and whether the first is a keyframe."""
    with av.open(io.BytesIO(mp4), "r") as media:
        assert {s.type for s in media.streams} == {"video", "audio"}
        frames = list(media.decode(video=0))
    read = [barcode.read(f.to_ndarray(format="rgb24")) for f in frames]
    return read, [float(f.time or 0) for f in frames], frames[0].key_frame


def test_a_clip_starts_at_the_idr_at_or_before_its_start(recording: Recording) -> None:
    init, segments = recording
    picked = [segments[i] for i in covering([(s.start, s.duration) for s in segments], 2.5, 5.0)]
    assert [s.start for s in picked] == [2.0, 4.0]
    clip = cut_clip(init, picked, 2.5, 5.0)
    assert (clip.start, clip.end, clip.tag_ids) == (2.0, 5.0, ())
    read, times, key = numbers(clip.data)
    assert key and read == list(range(60, 150))
    assert times[0] == 0.0 and times[-1] == pytest.approx(89 / FPS)
    kinds = [k for k, _, _ in iter_boxes(clip.data)]
    assert kinds[0] == b"ftyp" and kinds.index(b"moov") < kinds.index(b"mdat")


def test_a_clip_across_a_reconnect_runs_on_without_a_gap(recording: Recording) -> None:
    init, segments = recording
    assert [s.discontinuity for s in segments] == [False] * 4 + [True, False]
    picked = [segments[i] for i in covering([(s.start, s.duration) for s in segments], 7, 10)]
    clip = cut_clip(init, picked, 7.0, 10.0)
    assert (clip.start, clip.end) == (6.0, 10.0)
    read, times, key = numbers(clip.data)
    assert key and read == list(range(180, 240)) + list(range(SECOND_SESSION, SECOND_SESSION + 60))
    steps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert steps == {round(1 / FPS, 6)}


def test_tags_in_the_clip_ride_as_emsg_between_moov_and_mdat(recording: Recording) -> None:
    init, segments = recording
    tags = [
        ClipTag("in", 2.5, id3_txxx("com.shopcast.tag", '{"id":"in"}')),
        ClipTag("after", 5.5, id3_txxx("com.shopcast.tag", '{"id":"after"}')),
    ]
    clip = cut_clip(init, segments[1:3], 2.5, 5.0, tags)
    assert clip.tag_ids == ("in",)
    boxes = [(k, clip.data[p:e]) for k, p, e in iter_boxes(clip.data)]
    kinds = [k for k, _ in boxes]
    assert kinds.index(b"moov") < kinds.index(b"emsg") < kinds.index(b"mdat")
    (emsg,) = [parse_emsg(body) for k, body in boxes if k == b"emsg"]
    assert emsg["presentation_time"] / emsg["timescale"] == pytest.approx(0.5)
    assert read_txxx(emsg["data"]) == {"com.shopcast.tag": '{"id":"in"}'}
    # The chunk offsets moved with the inserted box: the same frames decode.
    read, _, _ = numbers(clip.data)
    assert read == list(range(60, 150))


def test_bad_cuts_are_refused_with_a_reason(recording: Recording) -> None:
    init, segments = recording
    with pytest.raises(ClipError, match="end must be after start"):
        cut_clip(init, segments, 3.0, 3.0)
    with pytest.raises(ClipError, match="no recorded segment"):
        cut_clip(init, [], 1.0, 2.0)
    with pytest.raises(ClipError, match="no keyframe at or before the start"):
        cut_clip(init, segments[1:], 1.0, 3.0)  # starts at 2.0: nothing at 1.0
    with pytest.raises(ClipError, match="moov before mdat"):
        insert_after_moov(box(b"ftyp", b"isom") + box(b"mdat") + box(b"moov"), b"")


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.0, 2.0, [0]),
        (0.5, 2.1, [0, 1]),
        (1.9, 6.0, [0, 1, 2]),
        (4.0, 4.5, [2]),
        (5.9, 7.0, [2]),
        (6.0, 7.0, []),
        (-1.0, 0.5, [0]),
    ],
)
def test_covering_picks_the_segments_a_range_needs(
    start: float, end: float, expected: list[int]
) -> None:
    spans = [(0.0, 2.0), (2.0, 2.0), (4.0, 2.0)]
    assert list(covering(spans, start, end)) == expected


@pytest.mark.parametrize(
    ("offset", "frame"), [(None, 60), (0.0, 60), (0.5, 75), (1.9, 117), (1.96, 119)]
)
def test_frame_jpeg_shows_the_frame_at_the_offset(
    recording: Recording, offset: float | None, frame: int
) -> None:
    init, segments = recording
    jpeg = frame_jpeg(init, segments[1].data, offset)
    with av.open(io.BytesIO(jpeg), "r", format="image2pipe") as picture:
        decoded = next(picture.decode(video=0))
    assert (decoded.width, decoded.height) == (180, 320)
    assert barcode.read(decoded.to_ndarray(format="rgb24")) == frame
    assert isinstance(decoded.to_ndarray(format="rgb24"), np.ndarray)
