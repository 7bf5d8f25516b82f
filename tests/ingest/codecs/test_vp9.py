"""The vpcC record and the VP9 keyframe header: recorded Debian ffmpeg vectors and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import Vp9Config, Vp9Error, parse_keyframe_header

VECTORS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "vp9_configs.json").read_text()
)
#: ffprobe's pix_fmt → (bit depth, vpcC chromaSubsampling)
FORMATS = {"yuv420p": (8, 1), "yuv420p10le": (10, 1), "yuv444p": (8, 3), "yuv422p": (8, 2)}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_vpcc_round_trip_and_fields_match_ffprobe(name: str) -> None:
    vector = VECTORS[name]
    record = bytes.fromhex(vector["vpcc"])
    config = Vp9Config.parse(record)
    assert config.to_bytes() == record
    assert config.profile == int(vector["profile"].removeprefix("Profile "))
    assert (config.bit_depth, config.chroma_subsampling) == FORMATS[vector["pix_fmt"]]


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_keyframe_header_gives_size_and_ffmpegs_record_but_level(name: str) -> None:
    vector = VECTORS[name]
    head = bytes.fromhex(vector["keyframe_head"])
    header = parse_keyframe_header(head)
    assert (header.width, header.height) == (vector["width"], vector["height"])
    recorded = Vp9Config.parse(bytes.fromhex(vector["vpcc"]))
    assert Vp9Config.from_keyframe(head, recorded.level) == recorded


def test_codec_string() -> None:
    config = Vp9Config.parse(bytes.fromhex(VECTORS["vp9_p2_10bit_360x640"]["vpcc"]))
    assert config.codec_string == "vp09.02.21.10"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"", "shorter than 12 bytes"),
        (b"\x00" + bytes(11), "version 0"),
        (bytes.fromhex("01000000000b820202020001") + b"x", "must be empty"),
        (bytes.fromhex("01000000040b820202020000"), "profile 4 out of range"),
        (bytes.fromhex("01000000000b920202020000"), "bit depth 9"),
        (bytes.fromhex("01000000000b8e0202020000"), "chromaSubsampling 7 is reserved"),
    ],
)
def test_malformed_vpcc_is_refused_with_a_reason(record: bytes, message: str) -> None:
    with pytest.raises(Vp9Error, match=message):
        Vp9Config.parse(record)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "truncated"),
        (b"\x00\x00", "frame_marker"),
        (b"\x88\x00", "shows an existing frame"),
        (b"\x86\x00", "not a keyframe"),
        (b"\x82\x49\x83\x43\x00", "sync code"),
        (b"\x82\x49\x83\x42\x00\x0b", "truncated"),
    ],
)
def test_malformed_keyframe_header_is_refused_with_a_reason(frame: bytes, message: str) -> None:
    with pytest.raises(Vp9Error, match=message):
        parse_keyframe_header(frame)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=24))
def test_arbitrary_bytes_parse_or_raise_vp9_error(tail: bytes) -> None:
    for record in (tail, b"\x01\x00\x00\x00" + tail):
        try:
            config = Vp9Config.parse(record)
        except Vp9Error:
            continue
        assert Vp9Config.parse(config.to_bytes()) == config
    for frame in (tail, b"\x82\x49\x83\x42" + tail, b"\xa2\x49\x83\x42" + tail):
        try:
            header = parse_keyframe_header(frame)
        except Vp9Error:
            continue
        assert 1 <= header.width <= 1 << 16 and 1 <= header.height <= 1 << 16
