"""FLV tag bodies → MediaUnit: legacy AVC/AAC, Enhanced RTMP, refusals, timestamps, fuzz."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.media import MILLISECONDS, MediaKind, MediaUnit
from ingest.rtmp import flv, tags
from ingest.rtmp.errors import RTMPProtocolError
from ingest.rtmp.flv import (
    FLVFormatError,
    TimestampUnwrapper,
    UnsupportedMediaError,
)
from tests.ingest.rtmp.conftest import c_tags, py_tags

AVCC = bytes.fromhex("0164000dffe1001a6764000dacd943029e7f0110000003001000000303c0f14299600100")


def video(parsers: Any, payload: bytes, dts: int = 1000) -> MediaUnit | None:
    return parsers.parse_video(payload, dts, 5.0)  # type: ignore[no-any-return]


def test_legacy_avc_sequence_header_frame_and_end(tag_parsers: Any) -> None:
    cfg = video(tag_parsers, b"\x17\x00\x00\x00\x00" + AVCC)
    assert cfg == MediaUnit(
        MediaKind.VIDEO, "h264", 1000, 1000, MILLISECONDS, True, AVCC, 5.0, is_config=True
    )
    key = video(tag_parsers, b"\x17\x01\x00\x00\x43nalus")
    assert key is not None and (key.pts, key.dts, key.keyframe, key.payload) == (
        1067,
        1000,
        True,
        b"nalus",
    )
    inter = video(tag_parsers, b"\x27\x01\xff\xff\xdfnal")  # cts -33: SI24
    assert inter is not None and (inter.pts, inter.keyframe) == (967, False)
    assert video(tag_parsers, b"\x17\x02\x00\x00\x00") is None  # end of sequence


def test_command_frames_and_empty_bodies_are_ignored(tag_parsers: Any) -> None:
    assert video(tag_parsers, b"\x57\x00") is None
    assert video(tag_parsers, b"") is None
    assert tag_parsers.parse_audio(b"", 0, 0.0) is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x12\x00", "Sorenson H.263"),
        (b"\x14\x00", "On2 VP6"),
        (b"\x1c\x00\x00\x00\x00", "HEVC with non-standard codec id 12"),
        (b"\x1f\x00", "unknown codec id 15"),
    ],
)
def test_unsupported_legacy_video(tag_parsers: Any, payload: bytes, message: str) -> None:
    with pytest.raises(UnsupportedMediaError, match=message):
        video(tag_parsers, payload)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x17\x01\x00", "shorter than 5"),
        (b"\x17\x03\x00\x00\x00", "invalid AVCPacketType 3"),
        (b"\x07\x01\x00\x00\x00", "invalid video frame type 0"),
        (b"\x67\x01\x00\x00\x00", "invalid video frame type 6"),
    ],
)
def test_malformed_legacy_video(tag_parsers: Any, payload: bytes, message: str) -> None:
    with pytest.raises(FLVFormatError, match=message):
        video(tag_parsers, payload)


def ex(frame_type: int, packet_type: int, fourcc: bytes, body: bytes = b"") -> bytes:
    return bytes((0x80 | frame_type << 4 | packet_type,)) + fourcc + body


@pytest.mark.parametrize(
    ("fourcc", "codec"), [(b"hvc1", "hevc"), (b"av01", "av1"), (b"vp09", "vp9"), (b"avc1", "h264")]
)
def test_enhanced_video(tag_parsers: Any, fourcc: bytes, codec: str) -> None:
    cfg = video(tag_parsers, ex(1, 0, fourcc, b"config"))
    assert cfg is not None and cfg.is_config and (cfg.codec, cfg.payload) == (codec, b"config")
    has_cts = fourcc in (b"hvc1", b"avc1")
    frame = video(tag_parsers, ex(2, 1, fourcc, (b"\x00\x00\x21" if has_cts else b"") + b"frame"))
    assert frame is not None and frame.payload == b"frame" and not frame.keyframe
    assert frame.pts == 1000 + (33 if has_cts else 0)
    x = video(tag_parsers, ex(1, 3, fourcc, b"framex"))
    assert x is not None and (x.pts, x.dts, x.keyframe, x.payload) == (1000, 1000, True, b"framex")
    assert video(tag_parsers, ex(1, 2, fourcc)) is None  # SequenceEnd
    assert video(tag_parsers, ex(1, 4, fourcc, b"\x02\x00\x0acolorInfo")) is None  # Metadata
    assert video(tag_parsers, ex(5, 1, fourcc, b"\x00")) is None  # command frame


def test_enhanced_modex_and_one_track_multitrack(tag_parsers: Any) -> None:
    # ModEx (TimestampOffsetNano, 3 bytes) then CodedFrames; nanoseconds are dropped.
    modex = bytes((0x80 | 1 << 4 | 7, 2)) + b"\x00\x01\x02" + bytes((0 << 4 | 1,)) + b"hvc1"
    unit = video(tag_parsers, modex + b"\x00\x00\x00nal")
    assert unit is not None and (unit.codec, unit.payload, unit.keyframe) == ("hevc", b"nal", True)
    one_track = bytes((0x80 | 1 << 4 | 6, 0 << 4 | 3)) + b"av01"
    unit = video(tag_parsers, one_track + b"\x00obus")
    assert unit is not None and (unit.codec, unit.payload) == ("av1", b"obus")
    assert video(tag_parsers, one_track + b"\x01obus") is None  # track 1 is not carried
    with pytest.raises(UnsupportedMediaError, match="several tracks"):
        video(tag_parsers, bytes((0x80 | 1 << 4 | 6, 1 << 4 | 1)) + b"av01\x00\x00\x00\x05")


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (ex(1, 1, b"vvc1", b"x"), UnsupportedMediaError, "video codec 'vvc1' is not supported"),
        (ex(1, 1, b"vp08"), UnsupportedMediaError, "'vp08'"),
        (ex(1, 1, b"\x00\x01\x02\x03"), UnsupportedMediaError, "FourCC 0x00010203"),
        (ex(1, 5, b"hvc1"), UnsupportedMediaError, "MPEG-2 TS"),
        (ex(1, 9, b"hvc1"), FLVFormatError, "invalid enhanced VideoPacketType 9"),
        (ex(1, 1, b"hvc1", b"\x00"), FLVFormatError, "composition time truncated"),
        (ex(0, 1, b"av01", b"x"), FLVFormatError, "invalid video frame type 0"),
        (b"\x91hvc", FLVFormatError, "FourCC truncated"),
        (b"\x97\xff", FLVFormatError, "ModEx size truncated"),
        (b"\x97\x05\x00", FLVFormatError, "ModEx data truncated"),
    ],
)
def test_enhanced_video_refusals(
    tag_parsers: Any, payload: bytes, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        video(tag_parsers, payload)


def test_aac(tag_parsers: Any) -> None:
    cfg = tag_parsers.parse_audio(b"\xaf\x00\x11\x90", 20, 1.0)
    assert cfg is not None and cfg.is_config and (cfg.codec, cfg.payload) == ("aac", b"\x11\x90")
    raw = tag_parsers.parse_audio(b"\xaf\x01frame", 43, 1.0)
    assert raw == MediaUnit(MediaKind.AUDIO, "aac", 43, 43, MILLISECONDS, True, b"frame", 1.0)
    with pytest.raises(FLVFormatError, match="invalid AACPacketType 2"):
        tag_parsers.parse_audio(b"\xaf\x02", 0, 0.0)
    with pytest.raises(FLVFormatError, match="shorter than 2"):
        tag_parsers.parse_audio(b"\xaf", 0, 0.0)


def test_mp3_and_enhanced_audio(tag_parsers: Any) -> None:
    mp3 = tag_parsers.parse_audio(b"\x2fmp3frame", 0, 0.0)
    assert mp3 is not None and (mp3.codec, mp3.payload, mp3.keyframe) == ("mp3", b"mp3frame", True)
    head = tag_parsers.parse_audio(b"\x90Opus" + b"OpusHead", 0, 0.0)
    assert head is not None and head.is_config and head.codec == "opus"
    frame = tag_parsers.parse_audio(b"\x91Opus" + b"pkt", 0, 0.0)
    assert frame is not None and (frame.codec, frame.payload) == ("opus", b"pkt")
    asc = tag_parsers.parse_audio(b"\x90mp4a\x11\x90", 0, 0.0)
    assert asc is not None and asc.codec == "aac" and asc.is_config
    assert tag_parsers.parse_audio(b"\x92Opus", 0, 0.0) is None
    assert tag_parsers.parse_audio(b"\x94Opus\x00\x02", 0, 0.0) is None  # MultichannelConfig
    assert tag_parsers.parse_audio(b"\x95\x01Opus\x01pkt", 0, 0.0) is None  # one-track, track 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xbf\x00", "audio codec Speex is not supported"),
        (b"\x7f", "G.711 A-law"),
        (b"\x3f", r"Linear PCM \(little endian\)"),
        (b"\x91fLaC", "audio codec 'fLaC' is not supported"),
        (b"\x91ac-3", "'ac-3'"),
    ],
)
def test_unsupported_audio(tag_parsers: Any, payload: bytes, message: str) -> None:
    with pytest.raises(UnsupportedMediaError, match=message):
        tag_parsers.parse_audio(payload, 0, 0.0)


def test_timestamp_unwrapper() -> None:
    u = TimestampUnwrapper()
    assert [u.unwrap(t) for t in (100, 90, 200)] == [100, 90, 200]  # backward jitter followed
    assert u.unwrap(0xFFFFFF00) == -256  # a small step back, not a jump of 49 days
    u = TimestampUnwrapper()
    steps = [0xFFFFFF00, 0xFFFFFFF0, 0x10, 0xFFFFFFFA, 0x1000]
    assert [u.unwrap(t) for t in steps] == [
        0xFFFFFF00,
        0xFFFFFFF0,
        (1 << 32) + 0x10,
        0xFFFFFFFA,  # jitter back across the wrap
        (1 << 32) + 0x1000,
    ]
    for k in range(1, 5):  # keeps extending over several wraps
        assert (
            u.unwrap((0x1000 + k * 0x7FFFFFFF) & 0xFFFFFFFF) == (1 << 32) + 0x1000 + k * 0x7FFFFFFF
        )


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=40), st.booleans())
def test_fuzz_tag_bodies(tag_parsers: Any, payload: bytes, is_video: bool) -> None:
    parse = tag_parsers.parse_video if is_video else tag_parsers.parse_audio
    try:
        unit = parse(payload, 7, 0.0)
    except RTMPProtocolError:
        return
    assert unit is None or (isinstance(unit, MediaUnit) and unit.dts == 7)


def _outcome(parse: Any, payload: bytes, dts: int) -> object:
    try:
        return parse(payload, dts, 0.5)
    except RTMPProtocolError as exc:
        return (type(exc), str(exc))


#: Body starts the twin reads itself (legacy AVC, AAC) and some it hands to the reference.
_HEADS = [b"\x17\x00", b"\x17\x01", b"\x27\x01", b"\x47\x01", b"\x57\x01", b"\x17\x02"]
_HEADS += [b"\x07\x01", b"\x87\x01", b"\xaf\x00", b"\xaf\x01", b"\xa0\x02", b"\x2f", b"\x91"]


@pytest.mark.skipif(c_tags is None, reason="native.flv_tags not built")
@settings(max_examples=3000, deadline=None)
@given(
    head=st.sampled_from([b"", *_HEADS]),
    rest=st.binary(max_size=12),
    is_video=st.booleans(),
    dts=st.one_of(st.integers(-(1 << 40), 1 << 40), st.integers()),
)
def test_twins_agree(head: bytes, rest: bytes, is_video: bool, dts: int) -> None:
    """The Cython twin gives the reference's unit, ``None`` or refusal for any body."""
    name = "parse_video" if is_video else "parse_audio"
    payload = head + rest
    ours = _outcome(getattr(c_tags, name), payload, dts)
    assert ours == _outcome(getattr(py_tags, name), payload, dts)
    assert type(ours) is type(_outcome(getattr(py_tags, name), payload, dts))


@pytest.mark.skipif(c_tags is None, reason="native.flv_tags not built")
@settings(max_examples=500, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(-(1 << 70), 1 << 70))))
def test_unwrapper_twins_agree(raws: list[int]) -> None:
    ours, reference = c_tags.TimestampUnwrapper(), TimestampUnwrapper()
    assert [ours.unwrap(r) for r in raws] == [reference.unwrap(r) for r in raws]


# -- the writers (client role, demo publisher): what they write, the parsers read back ---------


@given(
    frame=st.binary(max_size=64),
    keyframe=st.booleans(),
    cts=st.integers(-(1 << 23), (1 << 23) - 1),
    dts=st.integers(0, 1 << 40),
)
def test_avc_writer_round_trip(
    tag_parsers: Any, frame: bytes, keyframe: bool, cts: int, dts: int
) -> None:
    unit = video(tag_parsers, flv.avc_video_body(frame, keyframe, cts), dts)
    assert unit is not None and not unit.is_config
    assert (unit.payload, unit.keyframe, unit.dts, unit.pts) == (frame, keyframe, dts, dts + cts)


def test_sequence_header_writers_round_trip(tag_parsers: Any) -> None:
    body = flv.avc_sequence_header_body(AVCC)
    assert body == b"\x17\x00\x00\x00\x00" + AVCC  # FLV §E.4.3.1, as ffmpeg writes it
    cfg = video(tag_parsers, body)
    assert cfg is not None and cfg.is_config and cfg.payload == AVCC
    assert flv.aac_sequence_header_body(b"\x11\x90") == b"\xaf\x00\x11\x90"
    assert flv.aac_audio_body(b"raw") == b"\xaf\x01raw"
    aac = tag_parsers.parse_audio(flv.aac_sequence_header_body(b"\x11\x90"), 0, 0.0)
    assert aac is not None and aac.is_config and aac.payload == b"\x11\x90"
    raw = tag_parsers.parse_audio(flv.aac_audio_body(b"raw"), 21, 0.0)
    assert raw is not None and (raw.is_config, raw.payload, raw.dts) == (False, b"raw", 21)


@pytest.mark.parametrize(("fourcc", "codec"), [(b"hvc1", "hevc"), (b"av01", "av1")])
def test_enhanced_writers_round_trip(tag_parsers: Any, fourcc: bytes, codec: str) -> None:
    cfg = video(tag_parsers, flv.ex_video_sequence_start_body(fourcc, b"config"))
    assert cfg is not None and cfg.is_config and (cfg.codec, cfg.payload) == (codec, b"config")
    cts = 33 if fourcc == b"hvc1" else 0
    frame = video(tag_parsers, flv.ex_video_frame_body(fourcc, b"frame", False, cts))
    assert frame is not None and (frame.codec, frame.payload, frame.keyframe) == (
        codec,
        b"frame",
        False,
    )
    assert frame.pts - frame.dts == cts


def test_writers_refuse_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="SI24"):
        flv.avc_video_body(b"", True, 1 << 23)
    with pytest.raises(ValueError, match="no composition time"):
        flv.ex_video_frame_body(b"av01", b"", True, 5)
    with pytest.raises(ValueError, match="'xxxx' is not one we read"):
        flv.ex_video_sequence_start_body(b"xxxx", b"")


def test_native_twin_is_built_unless_disabled() -> None:
    """Under ``make test`` the extension is built: a broken build must fail here, not skip."""
    if os.environ.get("SHOPCAST_NO_EXTENSIONS"):
        assert tags.parse_video is flv.parse_video and tags.parse_audio is flv.parse_audio
        assert not tags.NATIVE
        return
    module = importlib.import_module("native.flv_tags")  # raises if the build is broken
    assert (tags.parse_video, tags.parse_audio) == (module.parse_video, module.parse_audio)
    assert tags.NATIVE and tags.TimestampUnwrapper is module.TimestampUnwrapper
    assert module._fast_unit()  # units built in C: MediaUnit's slots are the ones it fills
