"""The av1C record and the AV1 sequence header: recorded Debian ffmpeg vectors and fuzzing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs import Av1Config, Av1Error, iter_obus

VECTORS: dict[str, dict[str, Any]] = json.loads(
    (Path(__file__).parent / "vectors" / "av1_configs.json").read_text()
)
#: ffprobe's pix_fmt → (high_bitdepth, monochrome, subsampling_x, subsampling_y)
FORMATS = {
    "yuv420p": (False, False, True, True),
    "yuv420p10le": (True, False, True, True),
    "yuv444p": (False, False, False, False),
    "gray": (False, True, True, True),
}
PROFILES = {"Main": 0, "High": 1, "Professional": 2}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_av1c_round_trip_and_fields_match_ffprobe(name: str) -> None:
    vector = VECTORS[name]
    record = bytes.fromhex(vector["av1c"])
    config = Av1Config.parse(record)
    assert config.to_bytes() == record
    assert (config.sequence.width, config.sequence.height) == (vector["width"], vector["height"])
    assert config.profile == config.sequence.profile == PROFILES[vector["profile"]]
    fields = (config.high_bitdepth, config.monochrome, config.subsampling_x, config.subsampling_y)
    assert fields == FORMATS[vector["pix_fmt"]]
    assert config.level == config.sequence.level


def test_codec_string() -> None:
    config = Av1Config.parse(bytes.fromhex(VECTORS["aom_main10_360x640"]["av1c"]))
    assert config.codec_string == "av01.0.01M.10"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (b"", "shorter than 4 bytes"),
        (b"\x01\x00\x0c\x00", "not marker 1, version 1"),
        (b"\x81\x00\x0c\x00", "no sequence header OBU"),
        (b"\x81\x00\x0c\x00\x0a\x0b\x00", "runs past the data"),
        (b"\x81\x00\x0c\x00\x08\x00", "without a size field"),
        (b"\x81\x00\x0c\x00\x0a" + b"\xff" * 9, "longer than 8 bytes"),
        (b"\x81\x00\x0c\x00\x0a\x01\x00", "sequence header truncated"),
        (b"\x81\x00\x0c\x00\x0a\x02\xe0\x00", "seq_profile 7 is reserved"),
    ],
)
def test_malformed_av1c_is_refused_with_a_reason(record: bytes, message: str) -> None:
    with pytest.raises(Av1Error, match=message):
        Av1Config.parse(record)


def test_obus_split_with_extension_headers() -> None:
    data = b"\x12\x00" + b"\x0e\x08\x02ab"  # temporal delimiter, then an OBU with an extension
    assert iter_obus(data) == [(2, b""), (1, b"ab")]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_av1_error(tail: bytes) -> None:
    for record in (tail, b"\x81" + tail, b"\x81\x00\x0c\x00\x0a" + tail):
        try:
            config = Av1Config.parse(record)
        except Av1Error:
            continue
        assert Av1Config.parse(config.to_bytes()) == config  # reserved bits are written as 0
        assert config.sequence.width <= 1 << 16 and config.sequence.height <= 1 << 16


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(VECTORS)), st.data())
def test_mutated_vectors_parse_or_raise_av1_error(name: str, data: st.DataObject) -> None:
    record = bytearray.fromhex(VECTORS[name]["av1c"])
    for _ in range(data.draw(st.integers(1, 4))):
        record[data.draw(st.integers(0, len(record) - 1))] = data.draw(st.integers(0, 255))
    record = record[: data.draw(st.integers(0, len(record)))]
    try:
        config = Av1Config.parse(bytes(record))
    except Av1Error:
        return
    assert Av1Config.parse(config.to_bytes()) == config
